"""The DRAM side of a build whose weights stream (docs/dram.md): its hardware sizes, the DRAM image and the
DMA programs as ROM words, and its cycles.

- ``stream_capacity``: the sizes for a given half of the weight cache (``Capacity.weight_cache``; a layer
  with more steps runs in passes) and, with the feature maps in DRAM, band buffers of ``band_words`` words.
- ``dram_image``: every unit's step words (``compile/units.py``) from address 0, each step on whole beats;
  a fixed-pattern layer's steps hold the schedule entry alone (its weights are generated).
- ``read_words`` and ``write_words``: the DMA programs (``contract.dram_layout``).
- ``stream_cycles``: busy cycles of one image against a memory of fixed latency and full bandwidth (the
  simulation's deterministic DRAM), unit by unit and command by command, from the constants of
  ``contract.dram_layout`` and the engines' states (rtl/dma.py, rtl/controller.py). Simulation checks it exactly.
"""
from __future__ import annotations

from dataclasses import replace

from ..contract.hardware import LAYER_SETUP_CYCLES, Capacity, packer, pe_rom_width, widths
from ..contract.dram_layout import (FETCH_ISSUE_CYCLES, FETCH_LAND_CYCLES, FETCH_SETUP_CYCLES, WEIGHT_WAIT_CYCLES,
                                    WRITE_DONE_CYCLES, WRITE_FIRST_BEAT_CYCLES, entry_beats, read_command_layout,
                                    step_beats, step_word_layout, write_command_layout)
from .lower import Program, UnsupportedError, layer_cycles
from .roms import pe_roms, schedule_rom
from .units import BAND_BUFFERS, dma_programs, units, word_beats

# The deterministic DRAM of the simulation: a burst's first beat comes this many cycles after its address is
# taken, then one beat per cycle; a burst's write response this many cycles after its last beat. 16 is
# about what a 16-bit SDR SDRAM controller takes at 50-100 MHz.
MODEL_LATENCY = 16
# A burst's data never waits for its address while the outstanding bursts' data last (the masters keep four
# in flight, three of up to 256 beats ahead of it): the model holds up to this latency.
MAX_MODEL_LATENCY = 256


# With the weights streamed, output channels per PE of one pass: the accumulators then hold at most 8 x tile
# entries (128 at tile 16), in distributed RAM. Unbounded, ResNet-18's classifier (1,000
# channels, 63 per PE) made them 1,008 deep: 12,135 TRELLIS_DPR16X4, over a quarter of the LFE5U-85F's logic.
STREAM_ACC_LOCALS = 8


def stream_capacity(prog: Program, weight_cache: int | None = None, band_words: int = 0,
                    out_band_words: int = 0) -> Capacity:
    """``prog``'s hardware sizes with the weights streamed through a cache of ``weight_cache`` step words per
    half (default: the largest layer's steps, so no layer runs in passes) and, with ``band_words``, the maps
    through DRAM in bands: two input band buffers of that many words, and four residual and output ones of
    ``out_band_words`` (default: as many)."""
    half = max(l.n_steps for l in prog.layers) if weight_cache is None else weight_cache
    if half < 1:
        raise UnsupportedError(f"a weight cache must hold at least one step per half, found {half}")
    out_words = out_band_words or band_words
    # wide layers run in passes of at most STREAM_ACC_LOCALS locals, as many as one pass of lanes needs
    acc_locals = max(STREAM_ACC_LOCALS, -(-prog.lanes // prog.pe))
    cap = replace(prog.cap, weight_cache=half, steps=2 * half, pe_steps=2 * half, band_words=band_words,
                  out_band_words=out_words if out_words != band_words else 0,
                  layers=1 << 20, read_commands=1 << 20, write_commands=1 << 20,
                  acc_locals=acc_locals if acc_locals < prog.cap.locals else 0)
    if band_words:
        cap = replace(cap, n_bufs=BAND_BUFFERS, buf_depth=max(band_words, out_words))
    trial = replace(prog, cap=cap)
    dma = dma_programs(trial)
    return replace(cap, layers=len(units(trial)), read_commands=len(dma.reads), write_commands=len(dma.writes))


def dram_image(prog: Program) -> list[int]:
    """The beats of every unit's step words, from DRAM address 0 (``contract.dram_layout.step_word_layout``)."""
    wd = widths(prog)
    width = prog.cap.dram_data_bits
    layout = step_word_layout(prog, wd)
    pe_at, pe_bits = layout["pe"].offset, pe_rom_width(prog, wd)
    assert layout["entry"].offset == 0 and layout.size == pe_at + prog.pe * pe_bits
    layers = [u.layer for u in units(prog)]
    entries, pe_words = iter(schedule_rom(prog, wd, layers)), [iter(w) for w in pe_roms(prog, wd, layers)]
    full, entry_only = step_beats(prog, wd), entry_beats(prog, wd)
    beats, mask = [], (1 << width) - 1
    for l in layers:
        for _ in range(l.n_steps):
            e = next(entries)
            # the words come packed (roms); a pattern layer's PE words are generated, its steps carry the entry
            bits = e if l.pattern else e | sum(next(w) << (pe_at + p * pe_bits) for p, w in enumerate(pe_words))
            beats += [(bits >> (b * width)) & mask for b in range(entry_only if l.pattern else full)]
    return beats


def read_words(prog: Program) -> list[int]:
    pack = packer(read_command_layout(prog, widths(prog)))
    reads = dma_programs(prog).reads
    return [pack({"addr": r.addr, "beats": r.beats, "to_cache": int(r.to_cache), "buf": r.buf, "waddr": r.waddr,
                  "entry_only": int(r.entry_only), "wait_u": r.wait_u, "wait_w": r.wait_w,
                  "end": int(i == len(reads) - 1)}) for i, r in enumerate(reads)]


def write_words(prog: Program) -> list[int]:
    pack = packer(write_command_layout(prog, widths(prog)))
    writes = dma_programs(prog).writes
    return [pack({"addr": w.addr, "words": w.words, "buf": w.buf, "raddr": w.raddr, "after": w.after,
                  "end": int(i == len(writes) - 1)}) for i, w in enumerate(writes)] or [0]


def stream_cycles(prog: Program, latency: int = MODEL_LATENCY) -> list[int]:
    """Busy cycles of each unit (``units.units``) against the deterministic DRAM of ``latency`` (the
    ``cycles`` port counts their sum). Cycle 0 is the one in which every machine sees ``start``.

    Three sequences advance in turn, each element when what it waits for is known: the units (unit k starts
    at ``start[k]``), the read commands (complete from ``read_done[i]`` on) and the write commands (complete
    from ``write_done[i]`` on). ``units_done >= n`` holds from ``start[n]``."""
    if not 1 <= latency <= MAX_MODEL_LATENCY:
        raise ValueError(f"the memory model holds for a latency of 1 to {MAX_MODEL_LATENCY} cycles, "
                         f"found {latency}")
    us, dma = units(prog), dma_programs(prog)
    per_word = word_beats(prog)
    start, read_done, write_done = [1], [], []
    next_read, next_write = 1, 1  # cycles the engines read their next command word
    at = lambda times, n: 0 if n == 0 else (times[n - 1] if n <= len(times) else None)  # noqa: E731
    units_from = lambda n: 0 if n == 0 else (start[n] if n < len(start) else None)  # noqa: E731
    while len(start) <= len(us) or len(read_done) < len(dma.reads) or len(write_done) < len(dma.writes):
        progressed = False
        if len(read_done) < len(dma.reads):
            r = dma.reads[len(read_done)]
            ready = [next_read + FETCH_SETUP_CYCLES, units_from(r.wait_u), at(write_done, r.wait_w)]
            if None not in ready:
                last_beat = max(ready) + FETCH_ISSUE_CYCLES + latency + r.beats - 1
                read_done.append(last_beat + FETCH_LAND_CYCLES)
                next_read = read_done[-1]
                progressed = True
        if len(write_done) < len(dma.writes):
            w = dma.writes[len(write_done)]
            ready = [next_write + FETCH_SETUP_CYCLES, units_from(w.after)]
            if None not in ready:
                last_beat = max(ready) + WRITE_FIRST_BEAT_CYCLES + w.words * per_word - 1
                write_done.append(last_beat + latency + WRITE_DONE_CYCLES)
                next_write = write_done[-1]
                progressed = True
        k = len(start) - 1
        if k < len(us):
            ready = [start[k] + LAYER_SETUP_CYCLES, at(read_done, dma.wait_r[k]), at(write_done, dma.wait_w[k])]
            if None not in ready:
                start.append(max(ready) + WEIGHT_WAIT_CYCLES + layer_cycles(prog, us[k].layer) - LAYER_SETUP_CYCLES)
                progressed = True
        if not progressed:
            raise AssertionError("the DMA programs wait on each other: no unit or command can go on")
    return [b - a for a, b in zip(start, start[1:])]
