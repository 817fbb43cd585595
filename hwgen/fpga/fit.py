"""Fit checks against a part, and the figures of a finished run parsed from the tools' own reports.

Before synthesis: every memory of the elaborated design (the ``$readmemh`` ROMs, the lane RAMs, the
accumulator banks) is costed in block RAMs of the part, and the logic is estimated from the PE array's
size. After synthesis, before place and route: Yosys' cell counts against the part. A design that cannot
fit stops with a :class:`FitError` that says by how much.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Fragment, Instance, Shape

from ..compile.lower import Program
from ..rtl.extmem import RAM_MODULE, ROM_MODULE
from .family import Family
from .targets import Part

# LUT4 of the logic, fitted by hand on three ECP5 runs (docs/synthesis.md; within 13% of nextpnr's logic
# cells for a 2x4 PE tiny net, digits and ResNet-20 at 16x16): per lane-bit of the PE array, per PE and
# accumulator bit (accumulate, requant, drain muxes), and a fixed part (controller, streams, UART).
LUT_PER_LANE_BIT, LUT_PER_PE_ACC_BIT, LUT_FIXED = 4.5, 12, 2500


class FitError(ValueError):
    pass


@dataclass(frozen=True)
class Mem:
    name: str
    width: int
    depth: int
    lanes: int = 1  # write-enable lanes (each lane padded to the block RAM's byte)
    async_read: bool = False  # read without a clock: only distributed RAM can do that


class _MemoryFinder:
    """The platform the design is elaborated with here: a ``lib.memory.Memory`` hands itself to the
    platform's ``get_memory`` (Amaranth 0.5's hook for vendor memories), which notes it and stands an
    empty fragment in its place, so that the memory's shape and ports are read through public names."""

    def __init__(self):
        self.found = {}  # the standing-in fragment -> the memory

    def get_memory(self, memory):
        frag = Fragment()
        self.found[frag] = memory
        return frag


def memories(design) -> list[Mem]:
    """Every memory of the elaborated design."""
    finder = _MemoryFinder()
    found, stack = [], [(Fragment.get(design, finder), "top")]
    while stack:
        frag, path = stack.pop()
        if isinstance(frag, Instance) and frag.type == ROM_MODULE:
            p = frag.parameters  # a banked ROM is stored as its banks side by side (hardware.rom_layout)
            banked = p["BANKS"] > 1
            found.append(Mem(path, p["WIDTH"] * p["BANKS"], 1 << p["ROW_BITS"] if banked else p["DEPTH"]))
        elif isinstance(frag, Instance) and frag.type == RAM_MODULE:
            p = frag.parameters
            found.append(Mem(path, p["LANES"] * p["LANE_WIDTH"], p["DEPTH"], p["LANES"]))
        elif frag in finder.found:
            mem = finder.found[frag]
            found.append(Mem(path, Shape.cast(mem.shape).width, mem.depth,
                             async_read=any(port.domain == "comb" for port in mem.read_ports)))
        stack.extend((sub, f"{path}.{name}") for sub, name, _ in frag.subfragments)
    return sorted(found, key=lambda m: m.name)


def bram_blocks(mem: Mem, family: Family) -> int:
    if mem.depth <= family.lutram_max_depth or mem.async_read:  # distributed RAM, or logic without it
        return 0
    lane, byte = mem.width // mem.lanes, family.bram_byte
    width = mem.lanes * -(-lane // byte) * byte if mem.lanes > 1 else mem.width
    return min(-(-width // w) * -(-mem.depth // d) for w, d in family.bram_shapes)


def estimate(prog: Program, mems: list[Mem], part: Part) -> dict:
    """Block RAMs, memory bits and LUT4 the design needs, before synthesis."""
    logic = (LUT_PER_LANE_BIT * prog.pe * prog.lanes * (prog.act_bits + 2)
             + LUT_PER_PE_ACC_BIT * prog.pe * prog.acc_bits + LUT_FIXED)
    lutram_bits = sum(m.width * m.depth for m in mems if bram_blocks(m, part.family) == 0)
    return {"bram": sum(bram_blocks(m, part.family) for m in mems),
            "memory_bits": sum(m.width * m.depth for m in mems),
            "lutram_bits": lutram_bits, "lut4": int(logic + lutram_bits / 16)}  # a 16x1 RAM per LUT4


def check_estimate(est: dict, part: Part) -> None:
    """Stop before synthesis when the memories alone cannot fit, or the logic estimate exceeds the part
    by more than the estimate's own error (25%)."""
    if est["bram"] > part.bram:
        raise FitError(f"the design needs about {est['bram']} block RAMs ({est['memory_bits']:,} memory bits), "
                       f"{part.name} has {part.bram}: {est['bram'] - part.bram} too many "
                       f"({est['bram'] / part.bram:.0%} of the part)")
    if est["lut4"] > 1.25 * part.lut:
        raise FitError(f"the design needs about {est['lut4']:,} LUT4, {part.name} has {part.lut:,}: "
                       f"{est['lut4'] - part.lut:,} too many ({est['lut4'] / part.lut:.0%} of the part)")


def yosys_counts(stat_file: Path, family: Family) -> dict:
    cells = json.loads(Path(stat_file).read_text())["design"]["num_cells_by_type"]
    count = lambda names: sum(cells.get(c, 0) for c in names)
    return {"cells": cells, "lut": sum(cells.get(c, 0) * k for c, k in family.lut_cells.items()),
            "ff": count(family.ff_cells), "bram": count(family.bram_cells), "dsp": count(family.dsp_cells)}


def check_synthesized(counts: dict, part: Part) -> None:
    over = [(what, counts[key], cap) for what, key, cap in
            (("LUT4", "lut", part.lut), ("flip-flops", "ff", part.ff), ("block RAMs", "bram", part.bram),
             ("DSPs", "dsp", part.dsp)) if counts[key] > cap]
    if over:
        raise FitError("after synthesis the design does not fit " + part.name + ": " + "; ".join(
            f"{n:,} {what} for {cap:,} ({n - cap:,} too many, {n / max(cap, 1):.0%})" for what, n, cap in over))


def dsp_by_unit(netlist: Path, top: str, dsp_cells: tuple[str, ...]) -> dict[str, int]:
    """Multiplier cells of the synthesized netlist by the accelerator unit they came from: Yosys' flatten
    keeps the hierarchy in each cell's name (``top.array.pe3...``)."""
    cells = json.loads(Path(netlist).read_text())["modules"][top]["cells"]
    units: dict[str, int] = {}
    for name, cell in cells.items():
        if cell["type"] in dsp_cells:
            path = cell.get("attributes", {}).get("hdlname", "") or name
            m = re.search(r"\b(array|requant\d*|ctrl|rx|tx)\b", path.replace("\\", " ").replace(".", " "))
            unit = re.sub(r"\d+$", "", m.group(1)) if m else "other"
            units[unit] = units.get(unit, 0) + 1
    return units


def nextpnr_figures(report_file: Path, family: Family) -> dict:
    rep = json.loads(Path(report_file).read_text())
    util = rep["utilization"]
    used = {k: util.get(bel, {}).get("used", 0) for k, bel in family.bels.items()}
    avail = {k: util.get(bel, {}).get("available", 0) for k, bel in family.bels.items()}
    clocks = {name: {"fmax_mhz": round(c["achieved"], 2), "constraint_mhz": round(c["constraint"], 2),
                     "passed": c["achieved"] >= c["constraint"]} for name, c in rep.get("fmax", {}).items()}
    return {"used": used, "available": avail, "clocks": clocks,
            "critical_path": critical_path(rep.get("critical_paths", []))}


def critical_path(paths: list) -> dict | None:
    """The longest clocked path: its ends, its delay split into logic and routing, and its cells."""
    clocked = [p for p in paths if p.get("from", "").startswith("posedge") and p.get("path")]
    if not clocked:
        return None
    path = max(clocked, key=lambda p: sum(s["delay"] for s in p["path"]))
    steps = path["path"]
    delay = lambda kind: round(sum(s["delay"] for s in steps if s["type"] == kind), 3)
    cells = [s["to"]["cell"] for s in steps if s["type"] == "logic"]
    return {"clock": path["from"], "delay_ns": round(sum(s["delay"] for s in steps), 3),
            "logic_ns": delay("logic"), "routing_ns": delay("routing"), "from": steps[0]["from"]["cell"],
            "to": steps[-1]["to"]["cell"], "logic_levels": len(cells), "cells": cells}
