"""``--pe-kind mac``: the int8 multiply-accumulate baseline in the same array, schedule, memories and
controller as the ternary PEs; the ternary build stays what it was."""
import dataclasses
import gc

import numpy as np
import pytest

from hwgen import cli
from hwgen.contract import mapping
from hwgen.build.generate import BuildConfig, generate
from hwgen.contract.encoding import CODE, WEIGHT_BITS, lane_weights, pack_lanes, unpack_lanes
from hwgen.compile.lower import lower, own_capacity, predicted_cycles
from hwgen.contract.hardware import Capacity, widths
from hwgen.compile.roms import pattern_slots, pe_roms
from hwgen.fpga.netlist import cell_counts, multipliers
from hwgen.rtl.array import PEArray
from hwgen.rtl.pe import MacPE, partial_width
from hwgen.frontends.synthetic import NetBuilder
from pe_cases import check_pe_dot_products


def _tex2_net():
    """A residual-expansion layer (tex = 2: weights in [-2, 2]) between ternary ones."""
    net = NetBuilder("tex2", (3, 6, 6), pe=4, density=0.5, seed=5)
    net.conv(16, 3, dense=True)
    net.conv(24, 3, 2, tex=2)
    net.avgpool()
    net.linear(5)
    model = net.finish()
    assert np.abs(model.layers[1].weight).max() == 2
    return model


def test_mac_pe_multiplies_each_lane():
    lanes, bits = 4, 8
    dut = MacPE(lanes, bits)
    def set_inputs(ctx, signed, acts, weights):
        ctx.set(dut.act_signed, signed)
        ctx.set(dut.acts, pack_lanes(acts, bits))
        ctx.set(dut.weights, pack_lanes(weights, WEIGHT_BITS["mac"]))

    check_pe_dot_products(dut, lanes, bits, 3, lambda rng: rng.randrange(-128, 128), -128, set_inputs)


def test_mac_array_has_multipliers_and_ternary_none():
    """The point of the baseline: one multiplier per lane and PE, where the ternary array has none."""
    counts = {kind: cell_counts(PEArray(pe=4, lanes=8, act_bits=8, acc_bits=partial_width(8, 8, kind),
                                        locals_=2, tile=4, pe_kind=kind)) for kind in ("ternary", "mac")}
    assert multipliers(counts["ternary"]) == 0
    assert counts["mac"]["$mul"] == multipliers(counts["mac"]) == 4 * 8
    assert counts["mac"]["$add"] == counts["ternary"]["$add"]  # the same adder trees and accumulators


@pytest.mark.filterwarnings("ignore:.*created but never used")  # the refused arrays are never elaborated
def test_constructor_and_encoding_checks():
    with pytest.raises(ValueError, match="pe_kind must be one of ternary, mac, not 'int4'"):
        PEArray(pe=2, lanes=4, act_bits=8, acc_bits=32, locals_=1, tile=1, pe_kind="int4")
    with pytest.raises(ValueError, match=f"acc_bits must be >= {partial_width(4, 8, 'mac')}, not 14"):
        PEArray(pe=2, lanes=4, act_bits=8, acc_bits=14, locals_=1, tile=1, pe_kind="mac")
    with pytest.raises(ValueError, match=r"mac weights must fit 8 signed bits, found values in \[-3, 128\]"):
        lane_weights(np.array([-3, 128]), "mac")
    assert lane_weights(np.array([-128, -1, 0, 1, 127]), "mac").tolist() == [0x80, 0xFF, 0, 1, 0x7F]
    gc.collect()  # the refused arrays warn when collected: here, under this test's filter


def _rom_weights(prog) -> list[np.ndarray]:
    """Per layer, the weights the PE ROMs hold, put back at [O, C, kh, kw] by the schedule (planes summed)."""
    wd, L, bits = widths(prog), prog.lanes, WEIGHT_BITS[prog.pe_kind]
    decode = {CODE[v]: v for v in (-1, 0, 1)}
    roms, step, out = pe_roms(prog, wd), 0, []
    for l in prog.layers:
        got = np.zeros((l.out_shape[0], mapping.num_blocks(l.in_shape[0], L) * L, l.kh, l.kw), np.int64)
        if l.pattern:  # no ROM words: the hardware makes +1 from input channel o to each output channel o it fills
            for o in pattern_slots(l, prog.pe).ravel():
                if o >= 0:
                    got[o, o] += 1
            out.append(got[:, :l.in_shape[0]])
            continue
        for r, j in enumerate(l.schedule.block):
            for p in range(prog.pe):
                o = int(l.schedule.slots[r, p])
                for k in range(l.kh * l.kw):
                    word = roms[p][step + r * l.kh * l.kw + k]
                    if o < 0:
                        assert word == 0
                        continue
                    assert word >> (bits * L) == o // prog.pe  # the local output channel
                    lanes = unpack_lanes(word, bits, L, signed=prog.pe_kind == "mac")
                    if prog.pe_kind == "ternary":
                        lanes = [decode[v] for v in lanes]
                    got[o, j * L:(j + 1) * L, k // l.kw, k % l.kw] += lanes
        assert not got[:, l.in_shape[0]:].any()  # padded lanes hold zero weights
        out.append(got[:, :l.in_shape[0]])
        step += l.n_steps
    return out


def test_mac_roms_hold_the_same_weights_in_the_same_schedule(small_model):
    """Only the PE ROM images differ between the kinds (8 bits a lane instead of 2); schedule, descriptors,
    requant constants and cycles are the ternary build's."""
    files = {kind: generate(small_model, BuildConfig(pe=4, pe_kind=kind)) for kind in ("ternary", "mac")}
    differ = {name for name in files["ternary"] if files["ternary"][name] != files["mac"][name]}
    assert {n for n in differ if n.endswith(".hex")} == {f"pe{p}.hex" for p in range(4)}
    progs = {kind: lower(small_model, 4, 16, pe_kind=kind) for kind in ("ternary", "mac")}
    assert predicted_cycles(progs["mac"]) == predicted_cycles(progs["ternary"])
    for prog in progs.values():
        for l, got in zip(prog.layers, _rom_weights(prog)):
            assert np.array_equal(got, l.weight), l.name


def test_mac_runs_residual_expansion_in_one_pass():
    """tex = 2: the mac ROM holds the summed level (+-2) once, where the ternary PEs run two planes."""
    model = _tex2_net()
    progs = {kind: lower(model, 4, 16, pe_kind=kind) for kind in ("ternary", "mac")}
    t, m = (progs[k].layers[1] for k in ("ternary", "mac"))
    assert len(t.plane_kept) == 2 and len(m.plane_kept) == 1 and m.n_steps < t.n_steps
    others = [i for i in range(len(model.layers)) if i != 1]
    assert [progs["mac"].layers[i].n_steps for i in others] == [progs["ternary"].layers[i].n_steps for i in others]
    assert np.array_equal(_rom_weights(progs["mac"])[1], model.layers[1].weight)


def test_ternary_is_the_default_and_unchanged(tmp_path):
    """`--pe-kind ternary` writes the same bytes as no option; `--pe-kind mac` is recorded in the manifest."""
    import json

    common = ["build", "--model", "digits", "--pe", "4"]
    for name, extra in (("default", []), ("ternary", ["--pe-kind", "ternary"]), ("mac", ["--pe-kind", "mac"])):
        assert cli.main(common + extra + ["--out", str(tmp_path / name)]) == 0
    default, ternary = ({p.name: p.read_bytes() for p in (tmp_path / n).iterdir()} for n in ("default", "ternary"))
    assert default == ternary
    assert json.loads(default["manifest.json"])["pe_kind"] == "ternary"
    mac = json.loads((tmp_path / "mac" / "manifest.json").read_text())
    assert mac["pe_kind"] == "mac" and mac["rom_bits"] > json.loads(default["manifest.json"])["rom_bits"]


def test_mac_in_verilator_is_bit_exact(small_model, tmp_path):
    """One compiled mac model runs two networks: the ternary-weight one (same cycles as the ternary PEs)
    and one with a tex = 2 layer (weights +-2 in the ROM, one pass: fewer cycles)."""
    from hwgen.build.generate import build, build_images
    from hwgen.sim.stream import compile_model, random_images, simulate

    models = [small_model, _tex2_net()]
    caps = [own_capacity(lower(m, 4, 16, pe_kind="mac")) for m in models]
    cap = Capacity(**{f.name: max(getattr(c, f.name) for c in caps) for f in dataclasses.fields(Capacity)})
    cfg = BuildConfig(pe=4, capacity=cap, pe_kind="mac")
    outs = [tmp_path / m.name for m in models]
    mans = [build(models[0], cfg, outs[0]), build_images(models[1], cfg, outs[1])]
    compiled = compile_model(outs[0])
    for model, out, man in zip(models, outs, mans):
        result = simulate(model, out, random_images(model, 2, seed=8), compiled=compiled)
        assert result["mismatches"] == 0, (model.name, result["mismatch_detail"], result["first_difference"])
        assert result["outputs_checked"] == 2 * man["output_beats"]
        assert result["cycles_per_image"] == man["predicted_cycles"]
    ternary = [predicted_cycles(lower(m, 4, 16, capacity=cap)) for m in models]
    assert mans[0]["predicted_cycles"] == ternary[0]
    assert mans[1]["predicted_cycles"] < ternary[1]


def test_synthesized_design_follows_the_pe_kind(small_model):
    """What `hwgen synth` elaborates (the UART link around the top, lowered with the build's PE kind) has
    the mac PEs' multipliers only when asked: N x L more than the ternary design's requant multipliers."""
    from hwgen.rtl.uart import UARTLink
    from hwgen.fpga.flow import synthesized_program

    counts = {}
    for kind in ("ternary", "mac"):
        prog = synthesized_program(small_model, BuildConfig(4, 16, pe_kind=kind))
        assert prog.pe_kind == kind
        counts[kind] = multipliers(cell_counts(UARTLink(prog, 10_000_000, 1_000_000)))
    assert counts["mac"] - counts["ternary"] == 4 * 16
