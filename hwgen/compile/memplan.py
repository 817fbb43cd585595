"""The memory planner (docs/dram.md): for an on-chip budget, the design of fewest predicted cycles among

- everything on chip (weight ROMs and whole-map buffers: the design of networks that fit);
- the weights streamed from DRAM into a weight cache, the maps on chip (``--weights dram``);
- the weights streamed and the maps through DRAM in bands (``--maps dram``),

for every power-of-two half of the weight cache, with the band buffers as large as the rest of the budget
allows (the residual and output ones as deep as the input ones, or half as deep). Each candidate is
lowered, and its cycles are the exact prediction (``lower.predicted_cycles``, or ``dram.stream_cycles``
against the deterministic memory) that simulation checks. Its cost is a function of the memories the RTL
instantiates (``onchip_memories``): their bits by default, or a part's block RAMs (``hwgen.fpga.fit``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..contract.hardware import (DESC_ROM_READ, PE_ROM_READ, SCHED_ROM_READ, descriptor_layout, hardware, net_layout,
                                 pe_rom_width, rom_layout, rq_width, schedule_layout, widths)
from ..contract.dram_layout import AXI_OUTSTANDING, read_command_layout, write_command_layout
from ..contract.ir import Model
from .dram import stream_capacity, stream_cycles
from .lower import Program, UnsupportedError, lower, predicted_cycles


@dataclass(frozen=True)
class Memory:
    """One memory as the RTL instantiates it (rtl/extmem.py): a ROM stored as its banks side by side."""
    kind: str
    width: int
    depth: int
    lanes: int = 1  # write-enable lanes


def onchip_memories(prog: Program) -> list[Memory]:
    """Every block-RAM-able memory of ``prog``'s design (the accumulator banks, read without a clock, are
    distributed RAM and left out); tests check the list against the elaborated design's."""
    cap, wd = prog.cap, widths(prog)
    word = prog.lanes * cap.act_bits

    def rom(kind, width, depth, latency=1):
        banks, row_bits = rom_layout(depth, latency)
        return Memory(kind, width * banks, 1 << row_bits if banks > 1 else depth)
    requant = ([rom("requant ROM", prog.pe * rq_width(prog), cap.rq_words)] if cap.weight_cache else
               [rom("requant ROM", rq_width(prog), cap.rq_words)] * prog.pe)
    mems = requant + [
        Memory("result memory", prog.pe * cap.out_bits, cap.res_depth, prog.pe),
        rom("descriptor ROM", descriptor_layout(prog, wd).size, cap.layers, DESC_ROM_READ),
        rom("net ROM", net_layout(prog).size, 1)]
    if cap.weight_cache:
        mems += [Memory("weight cache", schedule_layout(wd).size, cap.steps),
                 Memory("weight cache", prog.pe * pe_rom_width(prog, wd), cap.pe_steps),
                 rom("DMA programs", read_command_layout(prog, wd).size, max(1, cap.read_commands))]
        if cap.band_words:
            mems.append(rom("DMA programs", write_command_layout(prog, wd).size, max(1, cap.write_commands)))
        # the masters' FIFOs of what they issued (rtl/axi.py; a buffered FIFO of n holds n - 1 in memory)
        mems.append(Memory("DMA programs", 1, AXI_OUTSTANDING - 1))
        if cap.band_words:
            mems.append(Memory("DMA programs", 8, AXI_OUTSTANDING - 1))
    else:
        mems += [rom("weight ROM", schedule_layout(wd).size, cap.steps, SCHED_ROM_READ)]
        mems += [rom("weight ROM", pe_rom_width(prog, wd), cap.pe_steps, PE_ROM_READ)] * prog.pe
    kind = "band buffers" if cap.band_words else "activation buffers"
    mems += [Memory(kind, word, depth, prog.lanes) for depth in hardware(prog).band_depths()]
    return mems


def onchip_bits(prog: Program) -> dict[str, int]:
    """Bits of the memories of ``onchip_memories``, by kind."""
    bits = {}
    for m in onchip_memories(prog):
        bits[m.kind] = bits.get(m.kind, 0) + m.width * m.depth
    return bits


def total_bits(mems: list[Memory]) -> int:
    return sum(m.width * m.depth for m in mems)


@dataclass(frozen=True)
class Candidate:
    weights: str  # "rom" | "dram"
    maps: str  # "chip" | "dram"
    weight_cache: int  # steps per half (0: weights in ROM)
    band_words: int  # words per input band buffer (0: maps on chip)
    out_band_words: int  # per residual and output band buffer
    onchip_bits: dict[str, int]
    cost: int | None  # in the budget's unit; None: not lowered
    cycles: int | None  # None: it does not fit the budget, or cannot run this network
    why: str = ""
    prog: Program | None = field(default=None, repr=False, compare=False)  # the lowering, when there was one
    stem: str = "im2col"  # lower.STEMS: asked of the lowering (which uses none where it does not apply)

    @property
    def total_bits(self) -> int:
        return sum(self.onchip_bits.values())


@dataclass(frozen=True)
class MemoryPlan:
    budget: int
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    compute_cycles: int  # everything on chip, whatever the budget


class PlanError(ValueError):
    pass


Cost = Callable[[list[Memory]], int]


def plan(model: Model, pe: int, lanes: int, tile: int, budget: int, pe_kind: str = "ternary",
         progress=lambda message: None, stem: str = "im2col", cost: Cost = total_bits,
         unit: str = "bits", maps_with_weights: bool = False) -> MemoryPlan:
    """The candidate of fewest predicted cycles whose memories ``cost`` at most ``budget`` (PlanError if
    none does). ``stem``: as ``lower``'s ("raw": for the figure of a stem over the raw image); with the maps
    in DRAM, the space-to-depth stem is a candidate too, as its input costs a twelfth of im2col's traffic.
    ``maps_with_weights``: weights in DRAM only with the maps there too, as on a board, whose host loads
    the weights through the maps' write port."""
    owns = {stem: lower(model, pe, lanes, tile, stem, pe_kind=pe_kind)}
    if stem != "space_to_depth" and (s2d := lower(model, pe, lanes, tile, "space_to_depth", pe_kind=pe_kind)).space_to_depth:
        owns["space_to_depth"] = s2d
    own = owns[stem]
    candidates = [_evaluate(own, "rom", "chip", 0, 0, 0, budget, cost, unit, lambda: own, stem)]
    largest = max(l.n_steps for o in owns.values() for l in o.layers)
    half = 64
    while half < 2 * largest:
        cache = min(half, largest)
        half *= 2
        for st, own_st in owns.items():
            lowering = lambda cap, st=st: lower(model, pe, lanes, tile, st, capacity=cap, pe_kind=pe_kind)  # noqa: E731
            try:
                base = lowering(stream_capacity(own_st, cache))
            except UnsupportedError as e:
                candidates.append(Candidate("dram", "chip", cache, 0, 0, {}, None, None, str(e), stem=st))
                continue
            if st == stem:
                progress(f"weight cache {cache} steps per half, maps on chip")
                candidates.append(_evaluate(own, "dram", "chip", cache, 0, 0, budget, cost, unit, lambda: base, st))
            candidates += _band_candidates(own_st, st, base, cache, lowering, budget, cost, unit, lanes, progress)
    fitting = [c for c in candidates if c.cycles is not None and not (maps_with_weights and c.weights == "dram"
                                                                       and c.maps == "chip")]
    if not fitting:
        raise PlanError(f"no memory plan fits {budget:,} {unit} on chip: "
                        + "; ".join(f"{c.weights}/{c.maps} cache {c.weight_cache}: {c.why}" for c in candidates[:4]))
    chosen = min(fitting, key=lambda c: (c.cycles, c.cost))
    return MemoryPlan(budget, chosen, tuple(candidates), predicted_cycles(own))


def _band_candidates(own, stem, base, cache, lowering, budget, cost, unit, lanes, progress) -> list[Candidate]:
    """The maps-in-DRAM candidates of a weight cache: the band buffers as large as the budget leaves."""
    found_all = []
    fixed = [m for m in onchip_memories(base) if m.kind != "activation buffers"]
    for ratio in (1, 2):  # residual and output band buffers as deep as the input ones, or half
        words = _largest_bands(fixed, budget, cost, lanes * own.act_bits, lanes, ratio)
        found = None
        for _ in range(8):  # longer DMA programs with smaller bands: shrink until the whole design fits
            if words < 1:
                break
            progress(f"weight cache {cache} steps per half, maps in DRAM ({stem} stem): bands of {words} and "
                     f"{max(1, words // ratio)} words")
            found = _evaluate(own, "dram", "dram", cache, words, max(1, words // ratio), budget, cost, unit,
                              lambda: lowering(stream_capacity(own, cache, words, max(1, words // ratio))), stem)
            if found.cycles is not None or found.cost is None or found.cost <= budget:
                break
            words = _largest_bands([m for m in onchip_memories(found.prog) if "buffers" not in m.kind], budget,
                                   cost, lanes * own.act_bits, lanes, ratio, below=words)
        found_all.append(found or Candidate("dram", "dram", cache, 0, 0, {}, None, None, "no room left for bands",
                                            stem=stem))
    return found_all


def _largest_bands(fixed: list[Memory], budget: int, cost: Cost, word: int, lanes: int, ratio: int,
                   below: int | None = None) -> int:
    """The most words of an input band buffer (the others 1/ratio of it) with which the six fit next to
    ``fixed`` (binary search: the cost grows with the words); 0 if not one."""
    bands = lambda n: [Memory("band buffers", word, n, lanes)] * 2 + [  # noqa: E731
        Memory("band buffers", word, max(1, n // ratio), lanes)] * 4
    lo, hi = 0, (below - 1) if below else 1 << 24
    if cost(fixed + bands(1)) > budget:
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(fixed + bands(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _evaluate(own, weights, maps, cache, words, out_words, budget, cost, unit, lowered, stem) -> Candidate:
    try:
        prog = lowered()
        mems = onchip_memories(prog)
    except UnsupportedError as e:
        return Candidate(weights, maps, cache, words, out_words, {}, None, None, str(e), stem=stem)
    bits, spent = onchip_bits(prog), cost(mems)
    if spent > budget:
        return Candidate(weights, maps, cache, words, out_words, bits, spent, None, f"needs {spent:,} {unit}", prog,
                         stem)
    cycles = sum(stream_cycles(prog)) if weights == "dram" else predicted_cycles(prog)
    return Candidate(weights, maps, cache, words, out_words, bits, spent, cycles, "", prog, stem)
