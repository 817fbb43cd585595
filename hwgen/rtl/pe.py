"""The processing elements: ``TernaryPE`` adds, subtracts or skips each lane (no multiplier); ``MacPE`` is
the int8 multiply-accumulate baseline it is compared with (docs/architecture.md, "The mac baseline")."""
from __future__ import annotations

from amaranth import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..encoding import CODE, WEIGHT_BITS, check_pe_kind


def partial_width(lanes: int, act_bits: int, pe_kind: str = "ternary") -> int:
    """Signed width of one PE's sum for any weights of its kind: ``lanes`` products of an activation in
    [-2^act_bits, 2^act_bits] and a weight of magnitude at most 1 (ternary) or 2^7 (mac, int8)."""
    check_pe_kind(pe_kind)
    weight_log2 = 0 if pe_kind == "ternary" else WEIGHT_BITS[pe_kind] - 1
    return act_bits + 2 + weight_log2 + (lanes - 1).bit_length()


PE_LATENCY = 1  # cycles from a PE's inputs to its ``sum``: one register splits the adder tree


def pipelined_tree(m: Module, terms: list, register_after: int):
    """The sum of ``terms`` as a balanced adder tree (depth log2 of their number), with one register after
    ``register_after`` of its levels (0: right after the terms; at most the tree's depth)."""
    level = 0
    while True:
        if level == register_after:
            regs = [Signal(Value.cast(t).shape(), name=f"tree{level}_{i}") for i, t in enumerate(terms)]
            m.d.sync += [r.eq(t) for r, t in zip(regs, terms)]
            terms = regs
        if len(terms) == 1:
            return terms[0]
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        level += 1


def tree_levels(lanes: int) -> int:
    return (lanes - 1).bit_length()


class TernaryPE(wiring.Component):
    """Ternary dot product of one activation word with one weight word.

    Ports: ``codes`` (2 bits per lane, encoding.CODE), ``acts`` (``act_bits`` per lane),
    ``act_signed`` (sign-extend lanes), ``sum`` (signed). Latency ``PE_LATENCY``: a balanced adder tree with a
    register after its first level.
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
        # after the first level: each lane pair's select-and-add is one small LUT function; Yosys maps a
        # 16-lane PE to 509 LUT4 split there, 732 split halfway, 590 unsplit (docs/synthesis.md)
        m.d.comb += self.sum.eq(pipelined_tree(m, terms, min(1, tree_levels(self.lanes))))
        return m


class MacPE(wiring.Component):
    """int8 dot product of one activation word with one weight word: the multiply-accumulate
    baseline that ``TernaryPE`` is compared with. One multiplier per lane.

    Ports: ``weights`` (8 bits per lane, two's complement, encoding.WEIGHT_BITS["mac"]), ``acts``
    (``act_bits`` per lane), ``act_signed`` (sign-extend lanes), ``sum`` (signed,
    ``partial_width(lanes, act_bits, "mac")``). Latency ``PE_LATENCY``: the products are registered, then
    summed by the same balanced adder tree as TernaryPE's.
    """

    def __init__(self, lanes: int, act_bits: int):
        if lanes < 1 or act_bits < 1:
            raise ValueError(f"lanes and act_bits must be positive, not {lanes} and {act_bits}")
        self.lanes, self.act_bits = lanes, act_bits
        self.weight_bits = WEIGHT_BITS["mac"]
        super().__init__({
            "weights": In(unsigned(self.weight_bits * lanes)),
            "acts": In(unsigned(act_bits * lanes)),
            "act_signed": In(1),
            "sum": Out(signed(partial_width(lanes, act_bits, "mac"))),
        })

    def elaborate(self, platform):
        m = Module()
        b, w = self.act_bits, self.weight_bits
        terms = []
        for l in range(self.lanes):
            raw = self.acts[l * b:(l + 1) * b]
            x = Mux(self.act_signed, raw.as_signed(), raw.as_unsigned())  # signed(b + 1) either way
            terms.append(self.weights[l * w:(l + 1) * w].as_signed() * x)
        m.d.comb += self.sum.eq(pipelined_tree(m, terms, 0))
        return m
