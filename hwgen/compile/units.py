"""The descriptors the hardware runs, and the DMA programs that feed them when the weights stream from DRAM
(docs/dram.md).

- A **unit** is one descriptor: a whole layer, or a slice of one. With streamed weights
  (``Capacity.weight_cache``), a layer with more steps than half the weight cache runs in *passes* over
  slices of ``lanes`` output channels. With feature maps in DRAM (``Capacity.band_words``), every layer
  runs in *bands* of output rows. A band's input rows (with the kernel's halo), and its residual rows, are
  loaded into on-chip band buffers, and its output is written back, so that band b + 1 loads while band b
  computes. Passes run inside a band.
- The **read program**: per unit, its step words into its half of the weight cache, then for a band's first
  unit the band's input and residual rows, one command per channel block. The **write program**: per band,
  its output rows, one command per block. Every command says what it waits for: ``wait_u`` units ended,
  and ``wait_w`` write commands completed. Each descriptor says which read and write commands must be
  complete before it starts (``wait_r``, ``wait_w``). That covers the buffers' reuse and every
  read-after-write through DRAM, and needs nothing but three counters in the hardware.
- The **DRAM map**: the weights' image from address 0, then the input, then each layer's output map, each
  in the on-chip word layout (channel block, row, column), one word on ``word_beats`` beats.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from ..contract import mapping
from ..contract.hardware import widths
from ..contract.dram_layout import entry_beats, step_beats
from .lower import RESULT_BUF, HwLayer, Program, UnsupportedError, _schedule

# the band buffers: input rows, residual rows and output rows, two of each (band b uses b % 2)
IN_BUFS, RES_BUFS, OUT_BUFS = (0, 1), (2, 3), (4, 5)
BAND_BUFFERS = 6


@dataclass(frozen=True)
class Band:
    number: int  # bands counted over the whole program: its buffers are those of number % 2
    oy0: int  # output rows [oy0, oy1)
    oy1: int
    r0: int  # input rows [r0, r1) in its input buffer
    r1: int
    pitch: int  # rows of each channel block in the input buffer: the tallest band's of the layer, so that the
    # schedule entries (offsets) of every band but the first are the same, and its step words are reused


@dataclass(frozen=True)
class Unit:
    """``layer`` is what the descriptor runs: ``prog.layers[index]``, or its slice of output channels from
    local channel ``first_local`` (a pass) and of output rows (``band``)."""
    layer: HwLayer
    index: int
    first_local: int
    last: bool  # the layer's last unit
    band: Band | None = None
    band_last: bool = True  # the band's last pass


@dataclass(frozen=True)
class ReadCommand:
    addr: int  # DRAM byte address
    beats: int
    to_cache: bool  # step words into the weight cache, or map words into buffer ``buf``
    buf: int
    waddr: int  # first cache or buffer word written
    entry_only: bool  # step words of a fixed-pattern layer: its schedule entries alone
    wait_u: int
    wait_w: int
    unit: int


@dataclass(frozen=True)
class WriteCommand:
    addr: int
    words: int
    buf: int
    raddr: int  # first buffer word read
    after: int  # it starts once this many units have ended


def word_beats(prog: Program) -> int:
    """DRAM beats of one map word (``lanes`` activations)."""
    return -(-prog.lanes * prog.act_bits // prog.cap.dram_data_bits)


# ---------------------------------------------------------------- units

@functools.lru_cache(maxsize=8)  # a Program compares by identity; every image and figure of a build asks
def units(prog: Program) -> tuple[Unit, ...]:
    """Every descriptor in order: per layer, its bands (maps in DRAM), in each its passes (streamed weights)."""
    cache = prog.cap.weight_cache if prog.cap else 0
    out, band_number = [], 0
    for i, l in enumerate(prog.layers):
        parts = _passes(prog, l, cache) if cache else [(l, 0)]
        bands = _bands(prog, l) if prog.cap and prog.cap.band_words else [None]
        pitch = max(rows[3] - rows[2] for rows in bands) if bands[0] else 0
        for b, rows in enumerate(bands):
            band = None if rows is None else Band(band_number, *rows, pitch)
            band_number += rows is not None
            for k, (part, first_local) in enumerate(parts):
                out.append(Unit(part if band is None else _row_slice(part, band, b), i, first_local,
                                b == len(bands) - 1 and k == len(parts) - 1, band, k == len(parts) - 1))
    if prog.cap and prog.cap.weight_cache and len(out) > prog.cap.layers:
        raise UnsupportedError(f"capacity layers must be at least {len(out)} (descriptors: one per pass and band) "
                               f"for this network, found {prog.cap.layers}")
    return tuple(out)


def _passes(prog: Program, l: HwLayer, cache: int) -> list[tuple[HwLayer, int]]:
    """``l`` as slices of ``lanes`` output channels, each as wide as fits half the cache (a slice's steps
    grow with its channels) and the accumulators (``Capacity.acc_locals``), with the first local channel of
    each."""
    widest = prog.cap.accumulator_locals * prog.pe
    if l.n_steps <= cache and l.out_shape[0] <= widest:
        return [(l, 0)]
    channels, c0, out = l.out_shape[0], 0, []
    while c0 < channels:
        fit, c1 = None, c0 + prog.lanes
        while c1 - prog.lanes < channels and min(c1, channels) - c0 <= widest:
            part = _channel_slice(prog, l, c0, min(c1, channels), len(out))
            if part.n_steps > cache:
                break
            fit, c1 = part, c1 + prog.lanes
        if fit is None:
            steps = _channel_slice(prog, l, c0, min(c0 + prog.lanes, channels), len(out)).n_steps
            raise UnsupportedError(f"layer '{l.name}': {prog.lanes} of its output channels take {steps} steps, "
                                   f"more than half the weight cache ({cache} steps)")
        out.append((fit, c0 // prog.pe))
        c0 += fit.out_shape[0]
    return out


def _channel_slice(prog: Program, l: HwLayer, c0: int, c1: int, k: int) -> HwLayer:
    """Output channels [c0, c1) of ``l`` as a layer of their own (pass ``k``), scheduled alone. A fixed-pattern
    layer's slice is one too: c0 is a multiple of ``lanes``, so its generated weights start on lane 0."""
    weight = l.weight[c0:c1]
    sched, plane_kept = _slice_schedule(l, c0, c1, prog.lanes, prog.pe, prog.pe_kind)
    return replace(l, name=f"{l.name}.pass{k}", out_shape=(c1 - c0,) + l.out_shape[1:], weight=weight, first_channel=c0,
                   mul=l.mul[c0:c1], bias=l.bias[c0:c1], shift=l.shift[c0:c1], kept=l.kept[c0:c1],
                   schedule=sched, plane_kept=tuple(plane_kept))


@functools.lru_cache(maxsize=4096)  # a layer compares by identity; the planner tries many cache sizes
def _slice_schedule(l: HwLayer, c0: int, c1: int, lanes: int, pe: int, pe_kind: str):
    return _schedule(l.weight[c0:c1], lanes, pe, pe_kind)


def input_rows(l: HwLayer, oy0: int, oy1: int) -> tuple[int, int]:
    """The input rows [r0, r1) output rows [oy0, oy1) of ``l`` read (its halo), within the map."""
    return max(0, oy0 * l.stride - l.pad), min(l.in_shape[1], (oy1 - 1) * l.stride - l.pad + l.kh)


def _bands(prog: Program, l: HwLayer) -> list[tuple[int, int, int, int]]:
    """Output rows of ``l`` in bands as tall as its band buffers hold: (oy0, oy1, r0, r1) each. The last
    layer's output goes to the result memory, which holds it whole."""
    budget = prog.band_budget or 1 << 62
    depth, out_depth = min(budget, prog.cap.band_words), min(budget, prog.cap.out_band_words or prog.cap.band_words)
    lanes = prog.lanes
    c_in, _, w_in = l.in_shape
    c_out, h_out, w_out = l.out_shape

    def in_words(oy0, oy1):
        r0, r1 = input_rows(l, oy0, oy1)
        return mapping.num_blocks(c_in, lanes) * (r1 - r0) * w_in

    def out_words(rows):
        return mapping.num_blocks(c_out, lanes) * rows * w_out
    out, oy0 = [], 0
    while oy0 < h_out:
        oy1 = oy0
        while oy1 < h_out and in_words(oy0, oy1 + 1) <= depth and (l.out_buf == RESULT_BUF or
                                                                     out_words(oy1 + 1 - oy0) <= out_depth):
            oy1 += 1
        if oy1 == oy0:
            raise UnsupportedError(f"layer '{l.name}': one output row takes {in_words(oy0, oy0 + 1)} input and "
                                   f"{out_words(1)} output words, more than a band buffer ({depth} input, "
                                   f"{out_depth} output words)")
        out.append((oy0, oy1) + input_rows(l, oy0, oy1))
        oy0 = oy1
    return out


def _row_slice(l: HwLayer, band: Band, b: int) -> HwLayer:
    """``l`` on its band: output rows [oy0, oy1) from input rows [r0, r1) in its buffers. The kernel's
    first row sits ``oy0 * stride - pad - r0`` rows into the buffer (below zero: the map's own padding)."""
    c_in, _, w_in = l.in_shape
    c_out, _, w_out = l.out_shape
    return replace(l, name=f"{l.name}.band{b}", in_shape=(c_in, band.r1 - band.r0, w_in),
                   out_shape=(c_out, band.oy1 - band.oy0, w_out), pad_top=l.pad - (band.oy0 * l.stride - band.r0),
                   row_pitch=band.pitch,
                   in_buf=IN_BUFS[band.number % 2], out_buf=l.out_buf if l.out_buf == RESULT_BUF
                   else OUT_BUFS[band.number % 2], res_buf=None if l.res_buf is None else RES_BUFS[band.number % 2])


# ---------------------------------------------------------------- the DRAM map and the DMA programs

@dataclass(frozen=True)
class DramMap:
    weights: tuple[int, ...]  # each unit's step words: byte address (their beats follow one another)
    maps: dict  # map name ("input" or a layer's) -> byte address
    end: int  # bytes used


def unit_beats(prog: Program) -> list[int]:
    """DRAM beats of each unit's step words."""
    wd = widths(prog)
    full, entry = step_beats(prog, wd), entry_beats(prog, wd)
    return [u.layer.n_steps * (entry if u.layer.pattern else full) for u in units(prog)]


@functools.lru_cache(maxsize=8)
def weight_words(prog: Program) -> int:
    """Map words of the host's weights frame: the weights' DRAM image (``compile.dram.dram_image``) in whole
    map words, the last one padded with zeros. The padding lands where the input goes, which each image's
    input overwrites."""
    return -(-sum(unit_beats(prog)) // word_beats(prog))


def dram_map(prog: Program) -> DramMap:
    beat_bytes = prog.cap.dram_data_bits // 8
    weights, at = [], 0
    for beats in unit_beats(prog):
        weights.append(at)
        at += beats * beat_bytes
    maps = {}
    if prog.cap.band_words:
        word_bytes = word_beats(prog) * beat_bytes
        for name, shape in [("input", prog.input_shape)] + [(l.name, l.out_shape) for l in prog.layers[:-1]]:
            maps[name] = at
            at += _map_word(shape, mapping.num_blocks(shape[0], prog.lanes), 0) * word_bytes
    if at > 1 << prog.cap.dram_addr_bits:
        raise UnsupportedError(f"the DRAM image and maps take {at:,} bytes, more than the "
                               f"{prog.cap.dram_addr_bits}-bit address space ({1 << prog.cap.dram_addr_bits:,})")
    return DramMap(tuple(weights), maps, at)


@dataclass(frozen=True)
class Programs:
    reads: tuple[ReadCommand, ...]
    writes: tuple[WriteCommand, ...]
    wait_r: tuple[int, ...]  # per unit: read commands complete before it starts
    wait_w: tuple[int, ...]  # per unit: write commands complete before it starts


@functools.lru_cache(maxsize=8)
def dma_programs(prog: Program) -> Programs:
    us, beats, where = units(prog), unit_beats(prog), dram_map(prog)
    cache, beat_bytes = prog.cap.weight_cache, prog.cap.dram_data_bits // 8
    per_word = word_beats(prog)
    word_bytes = per_word * beat_bytes
    sources = _map_names(prog)
    reads, writes, wait_r, wait_w = [], [], [], []
    band_last_unit = {}  # band number -> its last unit
    band_writes = {}  # band number -> write commands through its last
    rows_written = {}  # layer name -> [(oy1, write commands through that band)]
    holds = [None, None]  # what each half of the weight cache holds: the same step words are not read again
    for k, u in enumerate(us):
        words = (u.index, u.first_local, u.layer.pad_top, u.layer.row_pitch)
        if holds[k % 2] != words:
            reads.append(ReadCommand(where.weights[k], beats[k], True, 0, (k % 2) * cache, u.layer.pattern,
                                     max(0, k - 1), 0, k))
            holds[k % 2] = words
        band = u.band
        first_of_band = band is not None and (k == 0 or us[k - 1].band != band)
        if first_of_band:
            free = band_last_unit.get(band.number - 2, -1) + 1  # the band before last used these buffers
            full = prog.layers[u.index]
            src, res = sources[u.index]
            # (the input's blocks lie ``pitch`` rows apart in its buffer, the residual's as the output's)
            loads = [(src, (band.r0, band.r1), band.pitch, u.layer.in_buf, full.in_shape)]
            if res is not None:
                loads.append((res, (band.oy0, band.oy1), band.oy1 - band.oy0, u.layer.res_buf, full.out_shape))
            for name, (r0, r1), pitch, buf, shape in loads:
                done = 0 if name == "input" else next(n for oy1, n in rows_written[name] if oy1 >= r1)
                w = shape[2]
                for j in range(mapping.num_blocks(shape[0], prog.lanes)):
                    reads.append(ReadCommand(where.maps[name] + _map_word(shape, j, r0) * word_bytes,
                                             (r1 - r0) * w * per_word, False, buf, j * pitch * w, False, free, done, k))
        wait_r.append(len(reads))
        wait_w.append(band_writes.get(band.number - 2, 0) if band is not None else 0)
        if band is not None and u.band_last:
            band_last_unit[band.number] = k
            full = prog.layers[u.index]
            if full.out_buf != RESULT_BUF:
                c, _, w = full.out_shape
                n_rows = band.oy1 - band.oy0
                for j in range(mapping.num_blocks(c, prog.lanes)):
                    writes.append(WriteCommand(where.maps[full.name] + _map_word(full.out_shape, j, band.oy0)
                                               * word_bytes, n_rows * w, u.layer.out_buf, j * n_rows * w, k + 1))
                rows_written.setdefault(full.name, []).append((band.oy1, len(writes)))
            band_writes[band.number] = len(writes)
    for what, have, need in (("read_commands", prog.cap.read_commands, len(reads)),
                             ("write_commands", prog.cap.write_commands, len(writes))):
        if need > have:
            raise UnsupportedError(f"capacity {what} must be at least {need} for this network, found {have}")
    return Programs(tuple(reads), tuple(writes), tuple(wait_r), tuple(wait_w))


def _map_word(shape: tuple[int, int, int], block: int, row: int) -> int:
    """The word of a map in DRAM (of ``shape``, in the on-chip layout: channel block, row, column) where
    ``row`` of ``block`` starts; ``block`` = the map's blocks gives its size in words."""
    _, h, w = shape
    return (block * h + row) * w


def _map_names(prog: Program) -> list[tuple[str, str | None]]:
    """Each layer's input and residual maps by name: "input" or the producing layer's name (the buffers of
    the on-chip allocation say which map each layer reads)."""
    holder, out = {0: "input"}, []
    for l in prog.layers:
        out.append((holder[l.in_buf], None if l.res_buf is None else holder[l.res_buf]))
        if l.out_buf != RESULT_BUF:
            holder[l.out_buf] = l.name
    return out
