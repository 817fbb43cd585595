"""Pipeline registers for values that travel alongside a datapath."""
from __future__ import annotations

from amaranth import Module, Signal, Value


def delayed(m: Module, value, cycles: int, name: str):
    """``value`` as it was ``cycles`` clock cycles ago (``cycles`` registers in the ``sync`` domain)."""
    if cycles < 0:
        raise ValueError(f"a delay must be >= 0 cycles, not {cycles}")
    for i in range(cycles):
        reg = Signal(Value.cast(value).shape(), name=f"{name}_d{i + 1}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def delayed_tapped(m: Module, value, cycles: int, name: str):
    """(``value`` ``cycles - 1`` cycles ago, ``cycles`` ago): a delay line tapped a cycle before its end, for
    a consumer that registers its own copy of what it derives from the line."""
    early = delayed(m, value, cycles - 1, name)
    return early, delayed(m, early, 1, f"{name}_last")
