"""Verilator through cocotb: every output value equal to the reference, simulated cycles == predicted."""

from hwgen.build.generate import BuildConfig, build
from hwgen.sim.stream import random_images, simulate


def _check(model, pe, tmp_path, images):
    out = tmp_path / f"{model.name}_pe{pe}"
    man = build(model, BuildConfig(pe=pe), out)
    result = simulate(model, out, images)
    assert result["mismatches"] == 0, result["mismatch_detail"]
    assert result["outputs_checked"] == len(images) * man["output_beats"]
    assert result["cycles_per_image"] == man["predicted_cycles"]
    return man


def test_balanced_network_at_4_pes(small_model, tmp_path):
    man = _check(small_model, 4, tmp_path, random_images(small_model, 4, seed=3))
    assert man["idle_slots"] == 0


def test_unbalanced_pruning_and_residual_expansion_at_16_pes(tmp_path):
    """Paper-style (unbalanced) pruning leaves PEs idle in some waves, and a residual-expansion layer
    (tex = 2: five weight levels) runs as two ternary passes into one accumulator; results stay exact and
    the cycle model counts both."""
    from hwgen.frontends.synthetic import NetBuilder

    net = NetBuilder("unbal", (3, 6, 6), pe=16, density=0.4, balanced=False, seed=5)
    net.conv(24, 3, dense=True)
    net.conv(40, 3, 2, tex=2)
    net.conv(20, 1, 1, 0)
    net.avgpool()
    net.linear(7)
    model = net.finish()
    assert model.layers[1].tex == 2 and abs(model.layers[1].weight).max() == 2
    man = _check(model, 16, tmp_path, random_images(model, 3, seed=4))
    assert man["idle_slots"] > 0
    from hwgen.contract import mapping
    one_pass = mapping.schedule(mapping.kept_groups(model.layers[1].weight, 16), 16).rows * 9
    assert one_pass < man["layers"][1]["steps"] < 2 * one_pass + 9  # the second plane has fewer groups


def test_resnet20_with_stalled_streams(tmp_path):
    """Residual blocks with option-A shortcuts; random input gaps and output backpressure lose nothing."""
    from hwgen.frontends.synthetic import resnet_cifar

    model = resnet_cifar(20, density=0.765, seed=2)
    out = tmp_path / "r20"
    man = build(model, BuildConfig(pe=16), out)
    result = simulate(model, out, random_images(model, 3, seed=6), stall=0.3, seed=1)
    assert result["mismatches"] == 0 and not result["stream_problems"], result
    assert result["cycles_per_image"] == man["predicted_cycles"]


def test_resnet18_at_32x32(tmp_path):
    """7x7/2 stem (host im2col), 3x3/2 max pool, 1x1 downsample shortcuts, 1000 classes."""
    from hwgen.frontends.synthetic import resnet18

    model = resnet18(32, density=0.765, seed=3)
    man = _check(model, 16, tmp_path, random_images(model, 2, seed=7))
    assert man["im2col"] == [7, 2, 3]
