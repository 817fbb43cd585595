"""``hwgen.build.report``: which layers the pruning figures cover (option-A shortcuts told by what they are, not by
their names) and the compression figure with residual expansion; the pruning bench uses the same selection."""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hwgen.frontends import synthetic
from hwgen.contract.ir import Layer
from hwgen.compile.lower import lower, real_lanes
from hwgen.build.report import compression
from hwgen.contract.mapping import is_identity_shortcut, prunable
from hwgen.frontends.synthetic import NetBuilder
from train.export import export, logit_scale
from train.resnet import digits_resnet

BENCH = Path(__file__).resolve().parent.parent / "bench" / "pruning_speedup.py"


@pytest.fixture(scope="module")
def resnet20():
    return synthetic.resnet_cifar(20, pe=16, lanes=16, density=0.5, calib_images=1)


def test_exported_option_a_shortcuts_are_identities():
    """The exporter names them ``<block>_short``."""
    torch.manual_seed(0)
    model = digits_resnet()
    with torch.no_grad():
        model.train()
        model(torch.rand(4, *model.in_shape))
    model.eval()
    x = torch.randint(0, 16, (2, *model.in_shape)).float() * model.input_scale
    irm = export(model, 16, {}, logit_scale(model, x))
    shortcuts = [l.name for l in irm.layers if is_identity_shortcut(l)]
    assert shortcuts == [l.name for l in irm.layers if l.name.endswith("_short")] and shortcuts


def test_synthetic_option_a_shortcuts_are_identities(resnet20):
    """The synthetic networks name them ``short<N>``, which a filter on ``_short`` missed."""
    shortcuts = [l.name for l in resnet20.layers if is_identity_shortcut(l)]
    assert len(shortcuts) == 2 and all(re.fullmatch(r"short\d+", n) for n in shortcuts), shortcuts
    lowered = lower(resnet20, 16, 16)
    assert [l.name for l in lowered.layers if is_identity_shortcut(l)] == shortcuts


def test_real_1x1_convs_are_not_shortcuts():
    """ResNet-18's downsample convs are 1x1 convs with learned weights; an identity weight with a real
    requantization is not a pass-through either."""
    model = synthetic.resnet18(input_size=32, classes=10, pe=16, lanes=16, density=0.5, calib_images=1)
    downs = [l for l in model.layers if l.kind == "conv" and l.kernel == 1]
    assert len(downs) == 3 and not any(is_identity_shortcut(l) for l in downs)
    short = next(l for l in synthetic.resnet_cifar(8, pe=16, calib_images=1).layers if is_identity_shortcut(l))
    scaled = Layer(**{**short.__dict__, "mul": short.mul * 2})
    assert not is_identity_shortcut(scaled)


def test_prunable_layers_leave_out_stem_classifier_and_shortcuts(resnet20):
    prog = lower(resnet20, 16, 16)
    names = [l.name for l in prunable(prog.layers)]
    convs = [l.name for l in resnet20.layers if l.kind == "conv" and not l.name.startswith("short")]
    assert names == convs[1:] and len(names) == 18
    assert [l.name for l in prunable(resnet20.layers)] == names
    comp = compression(prog)
    assert comp["prunable_groups"] == sum(prog.layers[i].kept.size for i, l in enumerate(prog.layers)
                                          if l.name in names)


def _expansion_net(tex: tuple[int, int]):
    net = NetBuilder("tex", (3, 8, 8), pe=4, lanes=16, density=0.5, seed=3, calib_images=1)
    net.conv(16, 3, dense=True)
    net.conv(32, 3, tex=tex[0])
    net.conv(32, 3, 2, tex=tex[1])
    net.avgpool()
    net.linear(5)
    return lower(net.finish(), 4, 16)


def test_compression_counts_residual_expansion():
    """A layer with t_ex ternary planes stores 2·t_ex bits a weight: 16 / (t_ex · kept fraction)."""
    prog = _expansion_net((2, 2))
    layers = prunable(prog.layers)
    assert [int(np.abs(l.weight).max()) for l in layers] == [2, 2]
    kept = sum(int(l.kept.sum()) for l in layers)
    total = sum(l.kept.size for l in layers)
    kept_weights = sum(int((l.kept * real_lanes(l, 16)).sum()) * 9 for l in layers)
    comp = compression(prog)
    assert 0 < kept < total
    assert comp["compression"] == round(8 * total / kept, 3)
    assert comp["parameter_compression"] == round(8 * sum(l.weight.size for l in layers) / kept_weights, 3)

    mixed = _expansion_net((1, 2))
    a, b = prunable(mixed.layers)
    expected = 16 * (a.kept.size + b.kept.size) / (int(a.kept.sum()) + 2 * int(b.kept.sum()))
    assert compression(mixed)["compression"] == round(expected, 3)


def test_pruning_bench_leaves_out_synthetic_shortcuts(resnet20):
    spec = importlib.util.spec_from_file_location("pruning_speedup", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    names = [resnet20.layers[i].name for i in bench.prunable(resnet20)]
    assert names == [l.name for l in prunable(resnet20.layers)] and not any(n.startswith("short") for n in names)


def test_unbalanced_pruning_leaves_shortcuts_pass_throughs(resnet20):
    """The paper-style variant re-prunes the prunable layers only: an option-A shortcut stays the identity."""
    unbalanced = synthetic.with_unbalanced_pruning(resnet20, 16)
    shortcuts = [l.name for l in resnet20.layers if is_identity_shortcut(l)]
    assert len(shortcuts) == 2 and [l.name for l in unbalanced.layers if is_identity_shortcut(l)] == shortcuts
    changed = [a.name for a, b in zip(resnet20.layers, unbalanced.layers) if not np.array_equal(a.mask, b.mask)]
    assert changed and set(changed) <= {l.name for l in prunable(resnet20.layers)}
