"""Unit tests of the PE, the requant unit and the controller in amaranth.sim, against plain integer models
and the cycle model, and of the ROM words as the RTL reads them."""
import random

import pytest
from amaranth import Module, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hwgen.contract.hardware import (DESC_IMAGE, DRAIN_PRE_CYCLES, SCHED_IMAGE, TILE_SETUP_CYCLES, Capacity, Hardware,
                                     addr_width, descriptor_layout, hardware, net_layout, packer, pe_word_layout,
                                     requant_layout, schedule_layout, widths)
from hwgen.contract.encoding import CODE, pack_lanes, requant_constants
from hwgen.compile.lower import lower, predicted_cycles, tiles
from hwgen.compile.roms import descriptor_words, schedule_rom
from hwgen.fpga.netlist import cell_counts, multipliers
from hwgen.frontends.synthetic import chain_model
from hwgen.rtl import controller
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


class _ModelROM(wiring.Component):
    """``extmem.ImageROM`` in Amaranth, for the simulator (which cannot run the Verilog ``hwgen_rom``): the
    same ports and read latency, holding ``words``."""

    def __init__(self, width: int, depth: int, words: list[int], read_latency: int):
        self.words, self.read_latency = words, read_latency
        super().__init__({"addr": In(addr_width(depth)), "data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        depth = 1 << len(self.addr)  # every address the port can name reads a word
        m.submodules.mem = mem = Memory(shape=len(self.data), depth=depth,
                                        init=self.words + [0] * (depth - len(self.words)))
        read = mem.read_port()
        m.d.comb += read.addr.eq(self.addr)
        if self.read_latency == 1:
            m.d.comb += self.data.eq(read.data)
        else:
            m.d.sync += self.data.eq(read.data)
        return m


@pytest.mark.parametrize("tile", [2, 16])
def test_controller_runs_in_the_cycles_the_model_predicts(tile, monkeypatch):
    """The controller alone is busy from ``start`` to ``done`` for ``lower.predicted_cycles``: its FSM
    states are what LAYER_SETUP_CYCLES, TILE_SETUP_CYCLES, HANDOFF_CYCLES and LAYER_END_CYCLES count."""
    model = chain_model("cycles", (1, 4, 4), [(8, 3, 1, 1), (8, 1, 1, 0)], 4, lanes=4, pe=2, density=0.5, seed=1)
    prog = lower(model, pe=2, lanes=4, tile=tile)
    # at tile 2 a tile's drain outlasts the next tile's compute, so hand-offs wait; at 16 a layer is one tile
    drain_bound = any(DRAIN_PRE_CYCLES + l.locals(prog.pe) * n > TILE_SETUP_CYCLES + l.n_steps * n
                      for l in prog.layers for n in tiles(prog, l)[1:])
    assert drain_bound == (tile == 2)
    images = {DESC_IMAGE: descriptor_words(prog), SCHED_IMAGE: schedule_rom(prog, widths(prog))}
    monkeypatch.setattr(controller, "ImageROM", lambda width, depth, image, read_latency=1:
                        _ModelROM(width, depth, images[image], read_latency))
    dut = controller.Controller(prog)
    busy = []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(2 * predicted_cycles(prog) + 100):
            busy.append(ctx.get(dut.busy))
            if ctx.get(dut.done):
                return
            await ctx.tick()
        raise AssertionError(f"no done within {len(busy)} cycles, predicted {predicted_cycles(prog)}")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sum(busy) == predicted_cycles(prog)
