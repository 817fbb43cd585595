"""Unit tests of the PE and the requant unit in amaranth.sim, against plain integer models, and of the ROM
words as the RTL reads them."""
import random

import pytest
from amaranth import Module, Shape, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from hwgen.contract.hardware import (Hardware, descriptor_layout, hardware, net_layout, packer, pe_word_layout,
                            requant_layout, schedule_layout, widths)
from hwgen.contract.encoding import CODE, pack_lanes, requant_constants
from hwgen.compile.lower import Capacity
from hwgen.fpga.netlist import cell_counts, multipliers
from hwgen.rtl.array import PEArray
from hwgen.rtl.pe import TernaryPE
from hwgen.rtl.requant import REQUANT_LATENCY, REQUANT_RES_STAGE, Requant
from pe_cases import check_pe_dot_products, stream_cases


def test_pe_adds_subtracts_or_skips_each_lane():
    lanes, bits = 8, 8
    dut = TernaryPE(lanes, bits)

    def set_inputs(ctx, signed, acts, weights):  # the operands as the array forms them: x, -x per lane
        ctx.set(dut.operands, pack_lanes([v for a in acts for v in (a, -a)], bits + 1))
        ctx.set(dut.codes, pack_lanes([CODE[x] for x in weights], 2))

    check_pe_dot_products(dut, lanes, bits, 1, lambda rng: rng.choice((-1, 0, 1)), -1, set_inputs)


def test_requant_matches_integer_formula():
    """One value per cycle through the pipeline, the residual operand at its own stage, every result
    compared with the integer formula REQUANT_LATENCY cycles after its accumulator went in."""
    dut = Requant(acc_bits=20, bias_bits=48, shift_bits=6, out_bits=8)
    rng = random.Random(2)
    cases = []
    for _ in range(300):
        mul, bias, shift = requant_constants(rng.uniform(1e-4, 0.5) * rng.choice((1, -1)), rng.uniform(-50, 50))
        acc = rng.randrange(-(1 << 19), 1 << 19)
        res = rng.choice((0, rng.randrange(-256, 256)))
        cases.append((acc, mul, bias, shift, res, ((acc * mul + bias) >> shift) + res))
    for lo, hi in ((0, 255), (-128, 127)):  # constant over a layer, so over a run of cases
        run_requant(dut, cases, lo, hi)


def run_requant(dut, cases, lo, hi):
    def drive(ctx, i):
        ctx.set(dut.lo, lo)
        ctx.set(dut.hi, hi)
        if i < len(cases):
            for port, value in zip((dut.acc, dut.mul, dut.bias, dut.shift), cases[i]):
                ctx.set(port, value)
        j = i - REQUANT_RES_STAGE  # the residual of case j goes in at its own stage
        ctx.set(dut.res, cases[j][4] if 0 <= j < len(cases) else 0)

    def check(ctx, k):
        assert ctx.get(dut.y) == min(max(cases[k][5], lo), hi), cases[k]

    stream_cases(dut, len(cases), REQUANT_LATENCY, drive, check)


def test_pe_array_has_no_multiplier_cells():
    array = cell_counts(PEArray(pe=16, lanes=16, act_bits=8, acc_bits=24, locals_=4, tile=16))
    assert multipliers(array) == 0, array
    assert array["$add"] >= 16 * 16  # the adder trees and accumulators are there
    # the check can fail: the drain-path requant unit does hold its one multiplier
    assert multipliers(cell_counts(Requant(20, 48, 6, 8))) == 1


def test_logic_does_not_grow_with_depth():
    """ResNet-20 and ResNet-32 at the same N and L: the same cells (ROM contents are image files), and
    the only multipliers are the N requant units of the drain path."""
    from hwgen.compile.lower import lower
    from hwgen.rtl.top import Top
    from hwgen.frontends.synthetic import resnet_cifar

    tops = [cell_counts(Top(lower(resnet_cifar(d, 8, pe=4, density=0.5, calib_images=1), 4, 16)))
            for d in (20, 32)]
    assert tops[0] == tops[1]
    assert multipliers(tops[0]) == 4


CAP = Capacity(layers=5, steps=700, rq_words=40, locals=6, dim=14, buf_depth=900, res_depth=300, n_bufs=3,
               act_bits=8, out_bits=16, acc_bits=24, bias_bits=30, shift_bits=6, reach=3, stride=2)


def _layouts(pe_kind: str) -> dict[str, data.StructLayout]:
    hw = Hardware(pe=4, lanes=8, tile=16, pe_kind=pe_kind, cap=CAP)
    wd = widths(hw)
    return {"schedule": schedule_layout(wd), "pe word": pe_word_layout(hw, wd), "requant": requant_layout(hw),
            "descriptor": descriptor_layout(hw, wd), "net": net_layout(hw)}


def _leaves(layout, view, rng):
    """(value drawn at the limits or inside the field's range, the view's expression of that field) for
    every plain field, and the values as ``packer`` takes them."""
    if isinstance(layout, data.StructLayout):
        pairs, values = [], {}
        for name, field in layout:
            sub_pairs, values[name] = _leaves(field.shape, view[name], rng)
            pairs += sub_pairs
        return pairs, values
    if isinstance(layout, data.ArrayLayout):
        pairs, values = [], []
        for i in range(layout.length):
            sub_pairs, value = _leaves(layout.elem_shape, view[i], rng)
            pairs, values = pairs + sub_pairs, values + [value]
        return pairs, values
    shape = Shape.cast(layout)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    value = rng.choice((lo, hi, rng.randint(lo, hi)))
    return [(value, view)], value


@pytest.mark.parametrize("pe_kind", ["ternary", "mac"])
def test_rtl_reads_back_every_field_roms_packs(pe_kind):
    """Each ROM word layout of the contract, packed by ``packer`` (as roms.py fills the images) and read
    through a ``data.View`` of the word in simulation (as rtl/ slices the ROM data): every field comes
    back, at its limits and in between."""
    rng = random.Random(5)
    for name, layout in _layouts(pe_kind).items():
        word = Signal(layout.size, name="word")
        view = data.View(layout, word)
        for _ in range(20):
            pairs, values = _leaves(layout, view, rng)
            sim = Simulator(Module())

            async def bench(ctx):
                ctx.set(word, packer(layout)(values))
                assert [ctx.get(field) for _, field in pairs] == [v for v, _ in pairs], (name, values)

            sim.add_testbench(bench)
            sim.run()


def test_a_value_its_field_cannot_hold_is_refused():
    layouts = _layouts("ternary")
    pe_word, rq = packer(layouts["pe word"]), packer(layouts["requant"])
    lo_bits = Shape.cast(layouts["pe word"]["lo"].shape).width
    with pytest.raises(OverflowError, match=f"field lo: {1 << lo_bits} does not fit unsigned\\({lo_bits}\\)"):
        pe_word({"weights": [0] * 8, "lo": 1 << lo_bits})
    with pytest.raises(OverflowError, match=r"field weights\[3\]: 4 does not fit unsigned\(2\)"):
        pe_word({"weights": [0, 0, 0, 4, 0, 0, 0, 0], "lo": 0})
    with pytest.raises(ValueError, match="field weights: expected 8 elements, found 7"):
        pe_word({"weights": [0] * 7, "lo": 0})
    with pytest.raises(OverflowError, match=r"field mul: -131073 does not fit signed\(18\)"):
        rq({"mul": -(1 << 17) - 1, "bias": 0, "shift": 0})
    with pytest.raises(OverflowError, match=r"field shift: -1 does not fit unsigned\(6\)"):
        rq({"mul": 0, "bias": 0, "shift": -1})
    with pytest.raises(TypeError, match="field bias: expected an integer, found 0.5"):
        rq({"mul": 0, "bias": 0.5, "shift": 0})
    with pytest.raises(ValueError, match="expected the fields mul, bias, shift, found mul, shift"):
        rq({"mul": 0, "shift": 0})


def test_hardware_of_something_else_is_refused():
    with pytest.raises(TypeError, match="expected a Hardware or a lowered program with a capacity, found dict"):
        hardware({"pe": 4})
