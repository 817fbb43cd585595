"""Unit tests of the PE and the requant unit in amaranth.sim, against plain integer models."""
import random

from hwgen.encoding import CODE, pack_lanes, requant_constants
from hwgen.netlist import cell_counts, multipliers
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
    from hwgen.lower import lower
    from hwgen.rtl.top import Top
    from hwgen.synthetic import resnet_cifar

    tops = [cell_counts(Top(lower(resnet_cifar(d, 8, pe=4, density=0.5, calib_images=1), 4, 16)))
            for d in (20, 32)]
    assert tops[0] == tops[1]
    assert multipliers(tops[0]) == 4
