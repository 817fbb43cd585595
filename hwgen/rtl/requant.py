"""Requantization in the drain path: y = clamp(((acc * mul + bias) >> shift) + res, lo, hi).

This is the only multiplier of the design: one per PE, used once per output value (DESIGN.md §4).
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..encoding import REQUANT_MUL_BITS


class Requant(wiring.Component):
    """Ports: ``acc``, ``mul``, ``bias``, ``shift``, ``lo``, ``hi`` in; ``res`` (the residual operand, 0 when
    there is none) in; ``y`` out. Latency 1: the product is registered, then bias, arithmetic shift, the
    residual add and the clamp are combinational on the registered value; ``res`` is sampled one cycle
    after ``acc``, in the same cycle as ``y``."""

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
        prod = Signal(signed(self.acc_bits + REQUANT_MUL_BITS))
        bias = Signal.like(self.bias)
        shift = Signal.like(self.shift)
        lo, hi = Signal.like(self.lo), Signal.like(self.hi)
        m.d.sync += [prod.eq(self.acc * self.mul), bias.eq(self.bias), shift.eq(self.shift),
                     lo.eq(self.lo), hi.eq(self.hi)]
        total = Signal(signed(max(len(prod), self.bias_bits) + 1))
        scaled = Signal(signed(len(total) + 1))
        m.d.comb += [total.eq(prod + bias), scaled.eq((total >> shift) + self.res)]
        m.d.comb += self.y.eq(Mux(scaled < lo, lo, Mux(scaled > hi, hi, scaled)))
        return m
