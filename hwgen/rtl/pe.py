"""The processing element: add, subtract or skip each lane. No multiplier anywhere in here."""
from __future__ import annotations

from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..encoding import CODE


def partial_width(lanes: int, act_bits: int) -> int:
    """Signed width of the sum of ``lanes`` values in [-2^act_bits, 2^act_bits]."""
    return act_bits + 2 + (lanes - 1).bit_length()


class TernaryPE(wiring.Component):
    """Combinational ternary dot product of one activation word with one weight word.

    Ports: ``codes`` (2 bits per lane, encoding.CODE), ``acts`` (``act_bits`` per lane),
    ``act_signed`` (sign-extend lanes), ``sum`` (signed). Latency 0: a balanced adder tree.
    """

    def __init__(self, lanes: int, act_bits: int):
        self.lanes, self.act_bits = lanes, act_bits
        super().__init__({
            "codes": In(unsigned(2 * lanes)),
            "acts": In(unsigned(act_bits * lanes)),
            "act_signed": In(1),
            "sum": Out(signed(partial_width(lanes, act_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        b = self.act_bits
        terms = []
        for l in range(self.lanes):
            raw = self.acts[l * b:(l + 1) * b]
            x = Mux(self.act_signed, raw.as_signed(), raw.as_unsigned())  # signed(b + 1) either way
            code = self.codes[2 * l:2 * l + 2]
            terms.append(Mux(code == CODE[1], x, Mux(code == CODE[-1], -x, 0)))
        while len(terms) > 1:  # balanced tree keeps the depth at log2(lanes)
            terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        m.d.comb += self.sum.eq(terms[0])
        return m
