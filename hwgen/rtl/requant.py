"""Requantization in the drain path: y = clamp(((acc * mul + bias) >> shift) + res, lo, hi).

This is the only multiplier of the design: one per PE, used once per output value (docs/design.md §4).
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..contract.encoding import REQUANT_MUL_BITS
from .delay import delayed

REQUANT_LATENCY = 6  # cycles from ``acc`` to ``y``
REQUANT_RES_STAGE = 4  # ``res`` is sampled this many cycles after its ``acc``


class Requant(wiring.Component):
    """Ports: ``acc``, ``mul``, ``bias``, ``shift`` in (one value per cycle); ``res`` (the residual operand,
    0 when there is none) in, ``REQUANT_RES_STAGE`` cycles after its ``acc``; ``lo``, ``hi`` in (constant
    over a layer); ``y`` out, registered, ``REQUANT_LATENCY`` cycles after its ``acc``.

    One operation per stage, each ending in a register, so the unit is never the design's critical path:
    inputs; product (a DSP block on FPGAs); + bias; >> shift; + res; clamp."""

    def __init__(self, acc_bits: int, bias_bits: int, shift_bits: int, out_bits: int, res_bits: int = 9):
        self.acc_bits, self.bias_bits, self.out_bits = acc_bits, bias_bits, out_bits
        super().__init__({
            "acc": In(signed(acc_bits)),
            "mul": In(signed(REQUANT_MUL_BITS)),
            "bias": In(signed(bias_bits)),
            "shift": In(unsigned(shift_bits)),
            "lo": In(signed(out_bits + 1)),
            "hi": In(signed(out_bits + 1)),
            "res": In(signed(res_bits)),
            "y": Out(signed(out_bits + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        acc, mul = delayed(m, self.acc, 1, "acc"), delayed(m, self.mul, 1, "mul")
        prod = Signal(signed(self.acc_bits + REQUANT_MUL_BITS))
        total = Signal(signed(max(len(prod), self.bias_bits) + 1))
        shifted = Signal.like(total)
        m.d.sync += [prod.eq(acc * mul),
                     total.eq(prod + delayed(m, self.bias, 2, "bias")),
                     shifted.eq(total >> delayed(m, self.shift, 3, "shift"))]
        scaled = Signal(signed(len(total) + 1))
        lo, hi = delayed(m, self.lo, 1, "lo"), delayed(m, self.hi, 1, "hi")
        m.d.sync += scaled.eq(shifted + self.res)
        m.d.sync += self.y.eq(Mux(scaled < lo, lo, Mux(scaled > hi, hi, scaled)))
        return m
