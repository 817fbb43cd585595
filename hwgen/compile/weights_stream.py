"""Weights from DRAM (docs/dram.md): a program whose step words stream from external memory into a
double-buffered weight cache instead of living in the schedule and PE ROMs (``Capacity.weight_cache``).

- ``stream_capacity``: the hardware sizes of that design for a given half of the cache; a layer with more
  steps than a half runs in passes over slices of its output channels (``lower.passes``).
- ``dram_image`` and ``fetch_words``: the DRAM image of every layer's step words, one after the other from
  address 0, each step on whole beats (a fixed-pattern layer's steps hold the schedule entry alone: its
  weights are generated), and the fetch unit's word per layer saying where they are.
- ``stream_cycles``: busy cycles of one image against a memory of fixed latency and full bandwidth (the
  simulation's deterministic DRAM): rtl/weight_fetch.py's fetch machine and the controller's wait for a
  layer's half, step by step from the constants of ``contract.hardware``. Simulation checks it exactly.
"""
from __future__ import annotations

from dataclasses import replace

from ..contract.hardware import (FETCH_ISSUE_CYCLES, FETCH_LAND_CYCLES, FETCH_SETUP_CYCLES, LAYER_SETUP_CYCLES,
                                 WEIGHT_WAIT_CYCLES, Capacity, entry_beats, fetch_layout, packer, pe_rom_width,
                                 step_beats, step_word_layout, widths)
from .lower import Program, UnsupportedError, layer_cycles, passes
from .roms import pe_roms, schedule_rom

# The deterministic DRAM of the simulation: a burst's first beat comes this many cycles after its address is
# taken, then one beat per cycle. 16 is about what a 16-bit SDR SDRAM controller takes at 50-100 MHz.
MODEL_LATENCY = 16
# A burst's data never waits for its address while the outstanding bursts' data last (the reader keeps four
# in flight, three of up to 256 beats ahead of it): the model holds up to this latency.
MAX_MODEL_LATENCY = 256


def stream_capacity(prog: Program, weight_cache: int | None = None) -> Capacity:
    """``prog``'s hardware sizes with the weights streamed through a cache of ``weight_cache`` step words per
    half (default: the largest layer's steps, so no layer runs in passes). A layer larger than a half runs in
    passes (``lower.passes``), each a descriptor of its own."""
    half = max(l.n_steps for l in prog.layers) if weight_cache is None else weight_cache
    if half < 1:
        raise UnsupportedError(f"a weight cache must hold at least one step per half, found {half}")
    cap = replace(prog.cap, weight_cache=half, steps=2 * half, pe_steps=2 * half)
    return replace(cap, layers=len(passes(replace(prog, cap=cap))))


def layer_beats(prog: Program) -> list[int]:
    """DRAM beats of each descriptor's (layer's or pass's) step words."""
    wd = widths(prog)
    full, entry = step_beats(prog, wd), entry_beats(prog, wd)
    return [u.layer.n_steps * (entry if u.layer.pattern else full) for u in passes(prog)]


def dram_image(prog: Program) -> list[int]:
    """The beats of every layer's step words, from DRAM address 0 (``contract.step_word_layout``)."""
    wd = widths(prog)
    width = prog.cap.dram_data_bits
    layout = step_word_layout(prog, wd)
    pe_at, pe_bits = layout["pe"].offset, pe_rom_width(prog, wd)
    assert layout["entry"].offset == 0 and layout.size == pe_at + prog.pe * pe_bits
    units = [u.layer for u in passes(prog)]
    entries, pe_words = iter(schedule_rom(prog, wd, units)), [iter(words) for words in pe_roms(prog, wd, units)]
    full, entry_only = step_beats(prog, wd), entry_beats(prog, wd)
    beats, mask = [], (1 << width) - 1
    for l in units:
        for _ in range(l.n_steps):
            e = next(entries)
            # the words come packed (roms); a pattern layer's PE words are generated, its steps carry the entry
            bits = e if l.pattern else e | sum(next(w) << (pe_at + p * pe_bits) for p, w in enumerate(pe_words))
            beats += [(bits >> (b * width)) & mask for b in range(entry_only if l.pattern else full)]
    return beats


def fetch_words(prog: Program) -> list[int]:
    """One ``contract.fetch_layout`` word per layer: byte address, beats, entries only, last."""
    pack = packer(fetch_layout(prog, widths(prog)))
    beat_bytes = prog.cap.dram_data_bits // 8
    words, at, units = [], 0, passes(prog)
    for k, (u, beats) in enumerate(zip(units, layer_beats(prog))):
        words.append(pack({"addr": at * beat_bytes, "beats": beats, "entry_only": int(u.layer.pattern),
                           "last": int(k == len(units) - 1)}))
        at += beats
    return words


def stream_cycles(prog: Program, latency: int = MODEL_LATENCY) -> list[int]:
    """Busy cycles of each descriptor (layer or pass, ``lower.passes``) against the deterministic DRAM of
    ``latency`` (the ``cycles`` port counts their sum). Cycle 0 is the one in which both machines see
    ``start``."""
    if not 1 <= latency <= MAX_MODEL_LATENCY:
        raise ValueError(f"the memory model holds for a latency of 1 to {MAX_MODEL_LATENCY} cycles, "
                         f"found {latency}")
    start = [1]  # cycle of each layer's first descriptor state
    read, ready = 1, []  # the fetch machine reads the fetch word of the next layer; each layer's half is ready
    for k, (u, beats) in enumerate(zip(passes(prog), layer_beats(prog))):
        free = start[k - 1] if k >= 2 else 0  # the half was released as layer k - 2 ended
        issue = max(read + FETCH_SETUP_CYCLES, free)
        last_beat = issue + FETCH_ISSUE_CYCLES + latency + beats - 1
        ready.append(last_beat + FETCH_LAND_CYCLES)
        read = ready[-1]
        wait_ends = max(start[k] + LAYER_SETUP_CYCLES, ready[k])  # the cycle that sees the half ready
        start.append(wait_ends + WEIGHT_WAIT_CYCLES + layer_cycles(prog, u.layer) - LAYER_SETUP_CYCLES)
    return [b - a for a, b in zip(start, start[1:])]
