"""The processing elements: ``TernaryPE`` adds, subtracts or skips each lane (no multiplier); ``MacPE`` is
the int8 multiply-accumulate baseline it is compared with (docs/architecture.md, "The mac baseline")."""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..contract.hardware import partial_width
from ..contract.encoding import CODE, WEIGHT_BITS


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


def lane_value(acts, lane: int, act_bits: int, act_signed):
    """Lane ``lane`` of an activation word as signed(act_bits + 1), sign- or zero-extended."""
    raw = acts[lane * act_bits:(lane + 1) * act_bits]
    return Mux(act_signed, raw.as_signed(), raw.as_unsigned())


def ternary_operands(acts, act_signed, lanes: int, act_bits: int):
    """What a ternary PE is sent: each lane's value and its negation, ``signed(act_bits + 1)`` each
    (``operand_bits``). Negating once for the whole array leaves each PE a 3-way select per bit, where
    negating in every PE costs an adder per lane and PE (a 16-lane PE: 446 against 763 logic cells)."""
    fields = []
    for l in range(lanes):
        x = lane_value(acts, l, act_bits, act_signed)
        fields += [x, (-x)[:act_bits + 1]]  # -x fits: -(2^b - 1) <= -x <= 2^(b-1)
    return Cat(*fields)


def operand_bits(lanes: int, act_bits: int) -> int:
    return 2 * (act_bits + 1) * lanes


class TernaryPE(wiring.Component):
    """Ternary dot product of one activation word with one weight word.

    Ports: ``operands`` (``ternary_operands``: each lane's value and its negation), ``codes`` (2 bits per
    lane, encoding.CODE), ``sum`` (signed). Latency ``PE_LATENCY``: per lane a select of +x, -x or 0, a
    balanced adder tree with a register after its first level.
    """

    def __init__(self, lanes: int, act_bits: int):
        self.lanes, self.act_bits = lanes, act_bits
        super().__init__({
            "operands": In(unsigned(operand_bits(lanes, act_bits))),
            "codes": In(unsigned(2 * lanes)),
            "sum": Out(signed(partial_width(lanes, act_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.act_bits + 1
        terms = []
        for l in range(self.lanes):
            x, neg = (self.operands[(2 * l + i) * w:(2 * l + i + 1) * w].as_signed() for i in range(2))
            code = self.codes[2 * l:2 * l + 2]
            terms.append(Mux(code == CODE[1], x, Mux(code == CODE[-1], neg, 0)))
        # split after the first level: Yosys maps a 16-lane PE to 446 logic cells so, 593 split after the
        # selects (docs/synthesis.md)
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
            terms.append(self.weights[l * w:(l + 1) * w].as_signed() * lane_value(self.acts, l, b, self.act_signed))
        m.d.comb += self.sum.eq(pipelined_tree(m, terms, 0))
        return m
