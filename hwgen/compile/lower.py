"""Lowering: IR -> a program for the engine and its cycle model (its ROM images: ``roms.py``).

Every IR kind the engine runs becomes a convolution: ``linear`` is a 1x1 conv on a 1x1 map, and the global
``avgpool`` is a conv whose kernel covers the whole map with identity weights (one kept group per output
channel), so the logic is one engine whatever the network (docs/design.md §5).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..contract import mapping
from ..contract.hardware import (DRAM_FIELDS, DRAIN_POST_CYCLES, DRAIN_PRE_CYCLES, HANDOFF_CYCLES, LAYER_END_CYCLES,
                                 LAYER_SETUP_CYCLES, TILE_SETUP_CYCLES, Capacity, partial_width)
from ..contract.encoding import check_pe_kind
from ..contract.ir import Model, acc_bound, input_range, signed_width

RESULT_BUF = -1  # out_buf of the last layer: the result memory, not an activation buffer


class UnsupportedError(ValueError):
    """The IR is valid but uses something the generator does not build (yet)."""


@dataclass(frozen=True, eq=False)
class HwLayer:
    name: str
    kind: str  # the IR kind it came from
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kh: int
    kw: int
    stride: int
    pad: int
    weight: np.ndarray  # int8 [O, C, kh, kw]
    mul: np.ndarray
    bias: np.ndarray
    shift: np.ndarray
    lo: int
    hi: int
    in_signed: bool
    in_buf: int
    out_buf: int  # RESULT_BUF for the last layer
    res_buf: int | None  # buffer of the residual operand, if any
    res_signed: bool
    max_mode: bool  # max pooling: the accumulator keeps the maximum instead of the sum
    acc_bound: int
    kept: np.ndarray  # bool [O, J] at the hardware's lanes (kept in any plane)
    schedule: mapping.Schedule
    plane_kept: tuple[np.ndarray, ...] = ()  # per weight plane, its kept groups (one plane unless tex > 1)
    tex: int = 1  # the IR's residual expansion: 2*tex bits of storage per kept weight (the compression metric)
    pad_top: int | None = None  # a band's (compile/units.py): the rows above its buffer's first (None: pad)
    first_channel: int = 0  # a pass's (compile/units.py): its first output channel in the layer
    row_pitch: int | None = None  # a band's: input rows per channel block in its buffer (None: in_shape's)

    @property
    def n_pix(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    @property
    def n_steps(self) -> int:
        return self.schedule.rows * self.kh * self.kw

    @property
    def pattern(self) -> bool:
        """Fixed identity weights the hardware generates instead of storing: pools and option-A shortcuts."""
        return self.kind in ("maxpool", "avgpool") or mapping.is_identity_shortcut(self)

    def locals(self, pe: int) -> int:
        return -(-self.out_shape[0] // pe)


def _identity(channels: int, kh: int, kw: int) -> np.ndarray:
    weight = np.zeros((channels, channels, kh, kw), np.int8)
    weight[np.arange(channels), np.arange(channels)] = 1
    return weight


def _lower_layer(model: Model, layer, pe: int, lanes: int, bufs: dict[str, int], pe_kind: str) -> HwLayer:
    c, h, w = layer.in_shape
    mul, bias, shift = layer.mul, layer.bias, layer.shift
    stride, pad = layer.stride, layer.padding
    if layer.kind == "conv":
        weight, kh, kw = layer.weight, layer.kernel, layer.kernel
    elif layer.kind == "linear":
        weight, kh, kw, stride, pad = layer.weight[:, :, None, None], 1, 1, 1, 0
    elif layer.kind == "avgpool":  # identity weights over the whole map; mul/shift do the division
        weight, kh, kw, stride, pad = _identity(c, h, w), h, w, 1, 0
    else:  # maxpool: identity weights, max instead of sum, no requantization
        weight, kh, kw = _identity(c, layer.kernel, layer.kernel), layer.kernel, layer.kernel
        mul, bias, shift = np.ones(c, np.int64), np.zeros(c, np.int64), np.zeros(c, np.int64)
    lo_in, hi_in = input_range(model, layer.source)
    if layer.kind == "maxpool" and lo_in < 0:
        raise UnsupportedError(f"layer '{layer.name}': max pooling needs a non-negative (unsigned) input, "
                               f"found the signed output of '{layer.source}'")
    kept = mapping.kept_groups(weight, lanes)
    sched, plane_kept = _schedule(weight, lanes, pe, pe_kind)
    lo, hi = layer.out_range
    res_signed = layer.residual is not None and input_range(model, layer.residual)[0] < 0
    return HwLayer(
        name=layer.name, kind=layer.kind, in_shape=tuple(layer.in_shape), out_shape=tuple(layer.out_shape),
        kh=kh, kw=kw, stride=stride, pad=pad, weight=weight.astype(np.int8), mul=mul, bias=bias, shift=shift,
        lo=lo, hi=hi, in_signed=lo_in < 0, in_buf=bufs[layer.source], out_buf=bufs[layer.name],
        res_buf=None if layer.residual is None else bufs[layer.residual], res_signed=res_signed,
        max_mode=layer.kind == "maxpool", acc_bound=acc_bound(layer, max(abs(lo_in), abs(hi_in))),
        kept=kept, schedule=sched, plane_kept=tuple(plane_kept), tex=layer.tex)


def weight_planes(weight: np.ndarray, pe_kind: str) -> list[np.ndarray]:
    """The weight passes a PE kind runs: ternary PEs run the tex ternary planes of a residual-expansion
    weight one after the other; a mac PE multiplies by the weight itself in one pass."""
    return mapping.ternary_planes(weight) if pe_kind == "ternary" else [np.asarray(weight, np.int8)]


def _schedule(weight: np.ndarray, lanes: int, pe: int, pe_kind: str) -> tuple[mapping.Schedule, list[np.ndarray]]:
    sched, plane_kept = mapping.plane_schedule(weight_planes(weight, pe_kind), lanes, pe)
    if sched.rows == 0:  # an all-pruned layer still runs one idle wave, so the engine needs no special case
        sched = mapping.Schedule(pe, (1,) + sched.waves[1:], np.zeros(1, np.int64), np.full((1, pe), -1),
                                 np.zeros(1, np.int64))
    return sched, plane_kept


def allocate_buffers(model: Model) -> dict[str, int]:
    """Activation buffer of every tensor ("input" and each layer's output), by liveness: a buffer is reused
    once the last layer reading its tensor has run, and a layer never writes a buffer it reads. The last
    layer writes the result memory (RESULT_BUF)."""
    last_use = {}
    for i, l in enumerate(model.layers):
        for t in (l.source, l.residual):
            if t is not None:
                last_use[t] = i
    where, free, count = {"input": 0}, [], 1
    for i, l in enumerate(model.layers):
        if i == len(model.layers) - 1:
            where[l.name] = RESULT_BUF
        elif free:
            where[l.name] = free.pop(free.index(min(free)))
        else:
            where[l.name], count = count, count + 1
        for t in {l.source, l.residual} - {None}:
            if last_use[t] == i:
                free.append(where[t])
    return where


@dataclass(frozen=True, eq=False)
class Program:
    """Everything the RTL is generated from: sizes, widths, descriptors and ROM images. ``cap`` holds the
    sizes of the hardware (the program's own, or a larger capacity it was fitted into); the size fields
    below equal ``cap``'s."""

    name: str
    pe: int
    lanes: int
    tile: int
    layers: tuple[HwLayer, ...]
    input_shape: tuple[int, int, int]  # of the input stream (after the host-side im2col or space-to-depth)
    act_bits: int  # width of one lane in the activation buffers
    out_bits: int  # width of a result value
    out_signed: bool
    acc_bits: int
    bias_bits: int
    shift_bits: int
    buf_depth: int  # words of each activation buffer
    res_depth: int  # words of each result bank
    n_bufs: int
    im2col: tuple[int, int, int] | None  # (kernel, stride, padding) the host applies to the input
    cap: Capacity | None = None
    pe_kind: str = "ternary"  # encoding.PE_KINDS: the PE the array is built of
    band_budget: int = 0  # maps in DRAM: the words a band may take, at most the buffers' (0: all of them)
    space_to_depth: tuple[int, int, int, int] | None = None  # (block, padding, rows, cols) the host applies

    @property
    def max_locals(self) -> int:
        return max(l.locals(self.pe) for l in self.layers)

    @property
    def input_beats(self) -> int:
        c, h, w = self.input_shape
        return mapping.num_blocks(c, self.lanes) * h * w

    @property
    def output_beats(self) -> int:
        c, h, w = self.layers[-1].out_shape
        return c * h * w


def _im2col_stem(layer: HwLayer, lanes: int, pe_kind: str) -> HwLayer | None:
    """The first conv as a 1x1 conv over the host's im2col of the input (channel c*k*k + ky*k + kx), when
    that takes fewer steps: a 3-channel 7x7 stem fills 3 of 16 lanes in 49 steps per wave, but 147 packed
    channels fill 10 words in 10 steps (docs/design.md §5, worked figures)."""
    c, _, _ = layer.in_shape
    k = layer.kh
    if layer.kind != "conv" or k == 1 or mapping.num_blocks(c * k * k, lanes) >= mapping.num_blocks(c, lanes) * k * k:
        return None
    weight = layer.weight.reshape(layer.weight.shape[0], c * k * k, 1, 1)
    sched, plane_kept = _schedule(weight, lanes, layer.schedule.pe, pe_kind)  # an all-pruned stem hung (0 steps)
    _, h, w = layer.out_shape
    return replace(layer, in_shape=(c * k * k, h, w), kh=1, kw=1, stride=1, pad=0, weight=weight,
                   kept=mapping.kept_groups(weight, lanes), schedule=sched, plane_kept=tuple(plane_kept))


def _s2d_stem(layer: HwLayer, lanes: int, pe_kind: str) -> tuple[HwLayer, tuple[int, int, int, int]] | None:
    """A strided first conv as a stride-1 conv over the host's space-to-depth of the padded input (channel
    c*s*s + py*s + px of pixel (y, x) holds input (s*y + py, s*x + px)), with its weights regrouped to
    ceil(k/s) taps a side and zeros where a tap falls past k; and the transform's (block, padding, rows,
    cols). For a 7x7/2 stem over 3 channels: 16 taps of one 12-lane word, so the input stays the image's
    size (a quarter more for the padding lanes), where im2col makes it 12 times larger (docs/dram.md)."""
    c, _, _ = layer.in_shape
    k, s = layer.kh, layer.stride
    if layer.kind != "conv" or s == 1 or layer.kw != k:
        return None
    taps = -(-k // s)
    o, _, ho, wo = (layer.weight.shape[0],) + layer.out_shape
    weight = np.zeros((o, c * s * s, taps, taps), layer.weight.dtype)
    for py in range(s):
        for px in range(s):
            part = layer.weight[:, :, py::s, px::s]
            weight[:, py * s + px::s * s, :part.shape[2], :part.shape[3]] = part
    sched, plane_kept = _schedule(weight, lanes, layer.schedule.pe, pe_kind)
    rows, cols = ho + taps - 1, wo + taps - 1
    stem = replace(layer, in_shape=(c * s * s, rows, cols), kh=taps, kw=taps, stride=1, pad=0, weight=weight,
                   kept=mapping.kept_groups(weight, lanes), schedule=sched, plane_kept=tuple(plane_kept))
    return stem, (s, layer.pad, rows, cols)


# How the host reshapes the input for the first conv: im2col (a 1x1 conv over every tap), space-to-depth
# (a stride-1 conv over s x s blocks), or not at all.
STEMS = ("im2col", "space_to_depth", "raw")


def lower(model: Model, pe: int, lanes: int, tile: int = 16, stem: str = "im2col",
          capacity: Capacity | None = None, pe_kind: str = "ternary", band_budget: int = 0) -> Program:
    """The program of ``model``; with ``capacity``, fitted into those hardware sizes (UnsupportedError if it
    does not fit) and run at ``tile`` even when the maps are smaller. ``pe_kind`` (encoding.PE_KINDS)
    chooses the PE; the schedule, memories and controller are the same for both. ``stem`` (``STEMS``): the
    first conv's input transform, where it applies (it never does when another layer reads the input)."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {', '.join(STEMS)}, found {stem!r}")
    mapping.check_pe_lanes(pe, lanes)
    check_pe_kind(pe_kind)
    for l in model.layers:
        if l.precision != "ternary":
            raise UnsupportedError(f"layer '{l.name}': precision must be ternary, found {l.precision} (a model "
                                   "trained with --float-first-last); retrain without it to build hardware")
        if l.residual is not None and l.residual == l.source:
            raise UnsupportedError(f"layer '{l.name}': a residual equal to the layer's own input is not supported "
                                   "(the drain reads the residual while the next tile reads the input)")
    if model.layers[-1].residual is not None and pe < lanes:  # found by tests/test_properties.py
        raise UnsupportedError(f"layer '{model.layers[-1].name}': a residual on the last layer needs pe == lanes "
                               f"({lanes}), found pe {pe} (the result memory holds one channel per PE and word, "
                               "the residual's buffer lanes / pe)")
    bufs = allocate_buffers(model)
    layers = tuple(_lower_layer(model, l, pe, lanes, bufs, pe_kind) for l in model.layers)
    # the input buffer holds the im2col'd stream, so no other layer may read the input (found by
    # tests/test_properties.py: a residual from the input read the packed taps)
    reads_input = any("input" in (l.source, l.residual) for l in model.layers[1:])
    im2col = s2d = None
    if stem == "im2col" and not reads_input and (first := _im2col_stem(layers[0], lanes, pe_kind)) is not None:
        im2col = (layers[0].kh, layers[0].stride, layers[0].pad)
        layers = (first,) + layers[1:]
    if stem == "space_to_depth" and not reads_input and (found := _s2d_stem(layers[0], lanes, pe_kind)) is not None:
        first, s2d = found
        layers = (first,) + layers[1:]
    max_pix = max(l.n_pix for l in layers)
    if capacity is None:
        tile = min(tile, 1 << (max_pix - 1).bit_length())
    final = model.layers[-1]
    inner_bits = [l.out_bits for l in model.layers[:-1]]
    act_bits = max([model.input.bits] + inner_bits)
    # acc_bound holds for the values the ROMs store (the IR's, for either kind); the second term lets an
    # entry hold any one PE sum its kind can produce (PEArray checks it)
    worst = max(l.acc_bound for l in layers)
    acc_bits = max(signed_width(worst), partial_width(lanes, act_bits, pe_kind))
    bias_bits = max(signed_width(int(np.abs(l.bias).max())) for l in layers)
    shift_bits = max(1, max(int(l.shift.max()) for l in layers).bit_length())
    tensors = [layers[0].in_shape] + [l.out_shape for l in model.layers[:-1]]
    buf_depth = max(mapping.num_blocks(c, lanes) * h * w for c, h, w in tensors)
    res_depth = layers[-1].locals(pe) * layers[-1].n_pix
    n_bufs = max(bufs.values()) + 1
    prog = Program(model.name, pe, lanes, tile, layers, layers[0].in_shape, act_bits, final.out_bits,
                   final.out_signed, acc_bits, bias_bits, shift_bits, buf_depth, res_depth, n_bufs, im2col,
                   pe_kind=pe_kind, space_to_depth=s2d)
    need = own_capacity(prog)
    if capacity is None:
        return replace(prog, cap=need)
    _check_fits(capacity, need, prog)
    c = capacity
    if c.acc_bits < partial_width(lanes, c.act_bits, pe_kind):
        raise UnsupportedError(f"capacity acc_bits must be at least {partial_width(lanes, c.act_bits, pe_kind)} "
                               f"for {lanes} lanes of {c.act_bits} bits ({pe_kind} PEs), found {c.acc_bits}")
    if band_budget and not 0 < band_budget <= c.buf_depth:
        raise UnsupportedError(f"a band budget must be within the band buffers' {c.buf_depth} words (maps in DRAM), "
                               f"found {band_budget}")
    return replace(prog, act_bits=c.act_bits, out_bits=c.out_bits, acc_bits=c.acc_bits, bias_bits=c.bias_bits,
                   shift_bits=c.shift_bits, buf_depth=c.buf_depth, res_depth=c.res_depth, n_bufs=c.n_bufs, cap=c,
                   band_budget=band_budget)


def _check_fits(capacity: Capacity, need: Capacity, prog: Program) -> None:
    skip = set(DRAM_FIELDS)
    if capacity.weight_cache:  # streamed weights: the cache holds one unit at a time (compile/units.py checks)
        skip |= {"steps", "pe_steps", "layers"}
    if capacity.band_words:  # maps in DRAM: the buffers hold bands of them
        skip |= {"buf_depth", "n_bufs"}
    for name, have in vars(capacity).items():
        if name not in skip and getattr(need, name) > have:
            raise UnsupportedError(f"capacity {name} must be at least {getattr(need, name)} for this network, "
                                   f"found {have}")


def own_capacity(prog: Program) -> Capacity:
    """The smallest hardware sizes that run ``prog``."""
    return Capacity(
        layers=len(prog.layers), steps=max(1, sum(l.n_steps for l in prog.layers)),
        rq_words=max(1, sum(l.locals(prog.pe) for l in prog.layers)), locals=prog.max_locals,
        dim=max(d for l in prog.layers for d in l.in_shape[1:] + l.out_shape[1:]), buf_depth=prog.buf_depth,
        res_depth=prog.res_depth, n_bufs=prog.n_bufs, act_bits=prog.act_bits, out_bits=prog.out_bits,
        acc_bits=prog.acc_bits, bias_bits=prog.bias_bits, shift_bits=prog.shift_bits,
        reach=max(max(l.pad, l.kh - 1 - l.pad, l.kw - 1 - l.pad) for l in prog.layers),
        stride=max(l.stride for l in prog.layers),
        pe_steps=max(1, sum(l.n_steps for l in prog.layers if not l.pattern)),
        taps=max([1] + [l.kh * l.kw for l in prog.layers if l.pattern]))


# ---------------------------------------------------------------- cycle model

def tiles(prog: Program, layer: HwLayer) -> list[int]:
    """Pixels in each tile of a layer."""
    full, rest = divmod(layer.n_pix, prog.tile)
    return [prog.tile] * full + ([rest] if rest else [])


def layer_cycles(prog: Program, layer: HwLayer, steps: int | None = None, locals_: int | None = None) -> int:
    """The controller's two machines (rtl/controller.py): tile i+1 computes while tile i drains; a hand-off
    waits for the drain machine to be free, and the layer ends when its last drain is done. ``steps`` and
    ``locals_`` override the layer's compute steps and output channels per PE (for what-if figures)."""
    steps = layer.n_steps if steps is None else steps
    locals_ = layer.locals(prog.pe) if locals_ is None else locals_
    now, drain_free, drain_idle = LAYER_SETUP_CYCLES, 0, 0
    for n in tiles(prog, layer):
        now = max(now + TILE_SETUP_CYCLES + steps * n, drain_free)  # compute, then wait to hand off
        drain_free = now + HANDOFF_CYCLES + DRAIN_PRE_CYCLES + locals_ * n
        drain_idle = drain_free + DRAIN_POST_CYCLES
        now += HANDOFF_CYCLES
    return max(now, drain_idle) + LAYER_END_CYCLES


def real_lanes(layer: HwLayer, lanes: int) -> np.ndarray:
    """Per input block, the lanes that carry a real (not padded) channel."""
    return np.array([e - s for s, e in mapping.block_bounds(layer.in_shape[0], lanes)], np.int64)


def useful_lane_slots(prog: Program, layer: HwLayer) -> int:
    """Lane-slots that carry a real input channel of a kept group (zeros inside a kept group count as used;
    padded lanes, idle waves, drain and flush cycles do not): docs/design.md §5."""
    real = real_lanes(layer, prog.lanes)[None, :]
    return sum(int((k * real).sum()) for k in layer.plane_kept) * layer.kh * layer.kw * layer.n_pix


def utilization(prog: Program, layers=None) -> float:
    layers = prog.layers if layers is None else layers
    slots = prog.pe * prog.lanes * sum(layer_cycles(prog, l) for l in layers)
    return sum(useful_lane_slots(prog, l) for l in layers) / slots


def predicted_cycles(prog: Program) -> int:
    """Busy cycles of the engine for one image (the ``cycles`` port of rtl/top.py counts the same)."""
    return sum(layer_cycles(prog, l) for l in prog.layers)
