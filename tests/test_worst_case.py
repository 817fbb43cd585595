"""Worst case: inputs and weights that drive every accumulator to its proven bound, at the proven width.
And debugging: ``hwgen sim --waves`` writes an FST waveform of the same network."""
import numpy as np
import pytest

from hwgen.contract import ir
from hwgen.build.generate import BuildConfig, build
from hwgen.cli import main
from hwgen.contract.ir import InputSpec, Layer, Model
from hwgen.compile.lower import UnsupportedError, lower, own_capacity
from hwgen.contract.reference import run
from hwgen.sim.stream import simulate, waves_file

PE, LANES = 4, 16


def worst_net() -> Model:
    """conv 3x3 (+1 weights, unsigned max input) -> 1x1 conv (-1 weights, clamps to the signed minimum)
    -> 1x1 conv (+1 weights on that minimum). No padding, no pruning: every accumulator of every pixel
    sits exactly at +bound, -bound or -bound of its layer."""
    def conv(name, src, c, o, k, sign, h, bits, signed, relu):
        return Layer(name=name, kind="conv", source=src, in_shape=(c, h, h), out_shape=(o, h - k + 1, h - k + 1),
                     out_bits=bits, out_signed=signed, relu=relu, kernel=k, weight=np.full((o, c, k, k), sign, np.int8),
                     mask=np.ones((o, -(-c // LANES)), bool), mul=np.ones(o, np.int64), bias=np.zeros(o, np.int64),
                     shift=np.zeros(o, np.int64))
    layers = (conv("up", "input", 20, 8, 3, 1, 5, 8, False, True),      # acc = 180 * 255
              conv("down", "up", 8, 6, 1, -1, 3, 8, True, False),      # acc = -8 * 255 -> clamps to -128
              conv("out", "down", 6, 5, 1, 1, 3, 32, True, False))     # acc = 6 * -128
    return ir.validate(Model("worst", LANES, InputSpec((20, 5, 5), 8, False, 1.0), layers))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    model = worst_net()
    out = tmp_path_factory.mktemp("worst") / "worst"
    return model, out, build(model, BuildConfig(PE, LANES), out)


def test_accumulators_reach_their_bound_without_overflow(built):
    model, out, man = built
    bounds = [l["acc_bound"] for l in man["layers"]]
    assert bounds == [180 * 255, 8 * 255, 6 * 128]
    assert man["acc_bits"] == (180 * 255).bit_length() + 1  # the proven width: one bit less cannot hold it
    images = np.full((2, 20, 5, 5), 255)
    outs = run(model, images)
    assert (outs["up"] == 255).all() and (outs["down"] == -128).all() and (outs["out"] == -6 * 128).all()
    result = simulate(model, out, images, snapshots=True)
    assert result["mismatches"] == 0 and result["first_difference"] is None, result
    assert result["cycles_per_image"] == man["predicted_cycles"]


def test_a_width_below_the_bound_is_refused(built):
    model = built[0]
    need = own_capacity(lower(model, PE, LANES))
    small = need.__class__(**{**vars(need), "acc_bits": need.acc_bits - 1})
    with pytest.raises(UnsupportedError, match=f"capacity acc_bits must be at least {need.acc_bits} for this "
                                               f"network, found {need.acc_bits - 1}"):
        lower(model, PE, LANES, capacity=small)


def test_sim_waves_writes_an_fst(tmp_path, capsys):
    model = worst_net()
    ir.save(model, tmp_path / "worst.ir")
    np.save(tmp_path / "images.npy", np.full((1, 20, 5, 5), 255))
    code = main(["sim", "--ir", str(tmp_path / "worst.ir"), "--inputs", str(tmp_path / "images.npy"), "--images", "1",
                 "--pe", str(PE), "--waves", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr()
    name = waves_file()
    data = (tmp_path / "out" / name).read_bytes()
    if name.endswith(".fst"):
        assert len(data) > 1000 and data[0] == 0  # an FST file opens with its header block (type 0)
    else:  # no lz4.h here: Verilator's VCD writer
        assert b"$var" in data and b"layer_done" in data and b"#" in data
