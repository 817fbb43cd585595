"""The memory planner (docs/dram.md): for an on-chip budget, the design of fewest predicted cycles among

- everything on chip (weight ROMs and whole-map buffers: the design of networks that fit);
- the weights streamed from DRAM into a weight cache, the maps on chip (``--weights dram``);
- the weights streamed and the maps through DRAM in bands (``--maps dram``),

for every power-of-two half of the weight cache, with the band buffers as large as the rest of the budget
allows. Each candidate is lowered and its cycles are the exact prediction (``lower.predicted_cycles``, or
``dram.stream_cycles`` against the deterministic memory) that simulation checks; its on-chip bits are
those of the memories the RTL instantiates.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..contract.hardware import (pe_rom_width, read_command_layout, rq_width, schedule_layout, step_word_layout,
                                 widths, write_command_layout, descriptor_layout)
from ..contract.ir import Model
from .dram import stream_capacity, stream_cycles
from .lower import Program, UnsupportedError, lower, predicted_cycles
from .units import BAND_BUFFERS


@dataclass(frozen=True)
class Candidate:
    weights: str  # "rom" | "dram"
    maps: str  # "chip" | "dram"
    weight_cache: int  # steps per half (0: weights in ROM)
    band_words: int  # words per band buffer (0: maps on chip)
    onchip_bits: dict[str, int]
    cycles: int | None  # None: it does not fit the budget, or cannot run this network
    why: str = ""

    @property
    def total_bits(self) -> int:
        return sum(self.onchip_bits.values())


@dataclass(frozen=True)
class MemoryPlan:
    budget_bits: int
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    compute_cycles: int  # everything on chip, whatever the budget


class PlanError(ValueError):
    pass


def onchip_bits(prog: Program) -> dict[str, int]:
    """Bits of every memory the RTL instantiates for ``prog`` (block RAM or distributed)."""
    cap, wd = prog.cap, widths(prog)
    word = prog.lanes * cap.act_bits
    bits = {"requant ROM": prog.pe * rq_width(prog) * cap.rq_words,
            "result memory": cap.res_depth * prog.pe * cap.out_bits,
            "descriptor ROM": cap.layers * descriptor_layout(prog, wd).size}
    if cap.weight_cache:
        bits["weight cache"] = 2 * cap.weight_cache * step_word_layout(prog, wd).size
        bits["DMA programs"] = (cap.read_commands * read_command_layout(prog, wd).size
                                + (cap.write_commands * write_command_layout(prog, wd).size if cap.band_words else 0))
    else:
        bits["weight ROM"] = cap.steps * schedule_layout(wd).size + cap.pe_steps * prog.pe * pe_rom_width(prog, wd)
    if cap.band_words:
        bits["band buffers"] = BAND_BUFFERS * cap.band_words * word
    else:
        bits["activation buffers"] = cap.n_bufs * cap.buf_depth * word
    return bits


def plan(model: Model, pe: int, lanes: int, tile: int, budget_bits: int, pe_kind: str = "ternary",
         progress=lambda message: None, stem_im2col: bool = True) -> MemoryPlan:
    """The candidate of fewest predicted cycles within ``budget_bits`` (PlanError if none fits).
    ``stem_im2col``: as ``lower``'s (False: for the figure of a stem over the raw image)."""
    own = lower(model, pe, lanes, tile, pe_kind=pe_kind, stem_im2col=stem_im2col)
    compute = predicted_cycles(own)
    word = lanes * own.act_bits
    candidates = [_candidate(own, "rom", "chip", 0, 0, budget_bits, lambda p: predicted_cycles(p))]
    largest = max(l.n_steps for l in own.layers)
    half = 64
    while half < 2 * largest:
        cache = min(half, largest)
        for maps in ("chip", "dram"):
            try:
                base = stream_capacity(own, cache)  # no bands: what is left for them follows from its bits
            except UnsupportedError as e:
                candidates.append(Candidate("dram", maps, cache, 0, {}, None, str(e)))
                break
            words = 0
            if maps == "dram":
                trial = lower(model, pe, lanes, tile, stem_im2col, capacity=base, pe_kind=pe_kind)
                fixed = {k: v for k, v in onchip_bits(trial).items() if k != "activation buffers"}
                words = (budget_bits - sum(fixed.values())) // (BAND_BUFFERS * word)
                if words < 1:
                    candidates.append(Candidate("dram", maps, cache, 0, fixed, None, "no room left for bands"))
                    continue
            progress(f"weight cache {cache} steps per half, maps "
                     f"{f'in DRAM, bands of {words} words' if words else 'on chip'}")
            found = _candidate(own, "dram", maps, cache, words, budget_bits, stream_cycles, model)
            for _ in range(8):  # smaller bands mean more of them, so longer DMA programs: shrink until it fits
                if not (words and found.cycles is None and found.onchip_bits):
                    break
                words -= -(-(found.total_bits - budget_bits) // (BAND_BUFFERS * word))
                if words < 1:
                    break
                found = _candidate(own, "dram", maps, cache, words, budget_bits, stream_cycles, model)
            candidates.append(found)
        half *= 2
    fitting = [c for c in candidates if c.cycles is not None]
    if not fitting:
        raise PlanError(f"no memory plan fits {budget_bits:,} bits on chip: "
                        + "; ".join(f"{c.weights}/{c.maps} cache {c.weight_cache}: {c.why}" for c in candidates[:4]))
    chosen = min(fitting, key=lambda c: (c.cycles, c.total_bits))
    return MemoryPlan(budget_bits, chosen, tuple(candidates), compute)


def _candidate(own: Program, weights: str, maps: str, cache: int, words: int, budget: int, cycles,
               model: Model | None = None) -> Candidate:
    try:
        if weights == "rom":
            prog = own
        else:
            cap = stream_capacity(own, cache, words)
            prog = lower(model, own.pe, own.lanes, own.tile, own.im2col is not None, capacity=cap,
                         pe_kind=own.pe_kind)
        bits = onchip_bits(prog)
    except UnsupportedError as e:
        return Candidate(weights, maps, cache, words, {}, None, str(e))
    if sum(bits.values()) > budget:
        return Candidate(weights, maps, cache, words, bits, None, f"needs {sum(bits.values()):,} bits")
    return Candidate(weights, maps, cache, words, bits, sum(cycles(prog)) if weights == "dram" else cycles(prog))
