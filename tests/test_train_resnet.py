"""Residual ternary models: the digits ResNet trained briefly exports an IR that agrees with the float model
layer by layer, within a bound that follows from float32 arithmetic; ResNet-20 and ResNet-18 construct, run and export valid IRs; full-precision layers are
refused at export."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from hwgen.contract import ir, reference
from hwgen.compile.lower import UnsupportedError, lower
from train import data
from train.agreement import compare
from train.export import export, logit_scale
from train.models import digits_cnn
from train.pipeline import TrainConfig, train_model
from train.resnet import RESNETS, TernaryResNet, digits_resnet


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    t = train_model(TrainConfig(model="digits_resnet", pe=16, epochs=4, quiet=True))
    irm = export(t.model, 16, t.masks, logit_scale(t.model, data.to_float(t.split.train_x)))
    return t, irm


def _check_residual_structure(irm: ir.Model) -> None:
    names = [l.name for l in irm.layers]
    assert len(set(names)) == len(names)
    adds = [l for l in irm.layers if l.residual is not None]
    assert adds and all(l.name.endswith("_conv2") and l.relu and not l.out_signed for l in adds)
    for l in adds:
        short = irm.layer(l.residual) if l.residual != "input" else None
        if short is not None and l.residual.endswith("_short"):  # option A: exact pass-through
            assert (short.mul == 1).all() and (short.bias == 0).all() and (short.shift == 0).all()
            assert set(np.unique(short.weight)) <= {0, 1}


def test_digits_resnet_integer_matches_float(trained):
    """Layer by layer, each fed the integer network's input: the float model's integers equal the IR's
    wherever float32 arithmetic cannot reach a rounding boundary, and differ by at most one where it can
    (train.agreement: the bound follows from the ops, so it holds on any CPU, thread count or kernel)."""
    t, irm = trained
    _check_residual_structure(irm)
    assert [l.name for l in irm.layers] == ["stem", "s1b1_conv1", "s1b1_conv2", "s2b1_short", "s2b1_conv1",
                                            "s2b1_conv2", "avgpool", "fc"]
    assert irm.layer("s1b1_conv2").residual == "stem" and irm.layer("s2b1_conv2").residual == "s2b1_short"
    checks = compare(t.model, irm, t.split.test_x)
    assert [c.name for c in checks] == [l.name for l in irm.layers]
    for c in checks:
        assert c.violations == 0, (c.name, c.first)
        assert c.values > 0 and c.max_bound < 0.25, c  # far from rounding anything by itself
    # pools and the option-A pass-through are exact: no value is allowed to differ there
    assert all(c.max_bound == 0 and c.differ == 0 for c in checks if c.name in ("s2b1_short", "avgpool"))


@pytest.mark.parametrize("layer,field,delta", [("s1b1_conv1", "bias", 0.3), ("s2b1_conv2", "mul", 0.003),
                                               ("s2b1_short", "shift", 1)])
def test_agreement_check_catches_a_wrong_constant(trained, layer, field, delta):
    """A requant constant off by a third of a step (bias), 0.3% (mul) or a factor 2 (shift) is reported."""
    t, irm = trained
    old = irm.layer(layer)
    value = getattr(old, field).copy()
    if field == "bias":
        value = value + np.int64(delta * 2.0 ** old.shift.max())
    elif field == "mul":
        value = np.round(value * (1 + delta)).astype(np.int64)
    else:
        value = value + delta
    bad = replace(irm, layers=tuple(replace(l, **{field: value}) if l.name == layer else l for l in irm.layers))
    checks = {c.name: c for c in compare(t.model, bad, t.split.test_x)}
    assert checks[layer].violations > 0 and layer in checks[layer].name


def test_digits_resnet_ir_round_trips(trained, tmp_path):
    _, irm = trained
    ir.save(irm, tmp_path / "m.ir")
    back = ir.load(tmp_path / "m.ir")
    assert [(l.name, l.residual) for l in back.layers] == [(l.name, l.residual) for l in irm.layers]


def _calibrated(model: TernaryResNet, seed: int = 0) -> TernaryResNet:
    """One training-mode pass sets BatchNorm statistics and activation scales; then eval."""
    torch.manual_seed(seed)
    with torch.no_grad():
        model.train()
        model(torch.rand(4, *model.in_shape))
    return model.eval()


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_resnets_construct_run_and_export(name):
    model = _calibrated(RESNETS[name](input_size=32, classes=10))
    x_int = torch.randint(0, 256, (2, *model.in_shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x_int.float() * model.input_scale)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    irm = ir.validate(export(model, 16, {}, logit_scale(model, x_int.float() * model.input_scale)))
    _check_residual_structure(irm)
    convs = [l for l in irm.layers if l.kind == "conv"]
    if name == "resnet20":
        assert len([l for l in convs if not l.name.endswith("_short")]) == 19
        assert len([l for l in convs if l.name.endswith("_short")]) == 2
    else:
        pool = irm.layer("maxpool")
        assert (pool.kernel, pool.stride, pool.padding) == (3, 2, 1)
        assert (pool.out_bits, pool.out_signed) == (irm.layer("stem").out_bits, irm.layer("stem").out_signed)
        downs = [l for l in convs if l.name.endswith("_down")]
        assert len(downs) == 3 and all(l.out_signed and not l.relu and l.out_bits == 9 for l in downs)
        assert len(convs) == 20
    outs = reference.run(irm, x_int.numpy())
    assert tuple(outs["fc"].shape) == (2, 10, 1, 1)


@pytest.mark.parametrize("make,first", [
    (lambda: digits_resnet(float_first_last=True), "stem"),
    (lambda: digits_cnn(float_first_last=True), "conv1"),
])
def test_float_first_last_exports_float_layers_that_hwgen_refuses(make, first, tmp_path):
    torch.manual_seed(0)
    model = make()
    x = torch.randint(0, 17, (64, 1, 8, 8))
    with torch.no_grad():
        model.train()
        model(x * model.input_scale)
        model.eval()
    irm = export(model, 16, {}, logit_scale(model, x * model.input_scale))
    floats = [l.name for l in irm.layers if l.precision == "float"]
    assert floats == [first, "fc"]
    ir.save(irm, tmp_path / "f.ir")
    back = ir.load(tmp_path / "f.ir")
    assert back.layer(first).weight.dtype == np.float32 and back.layer("fc").offset.dtype == np.float32
    # the float64 evaluation of the first layer lands on the float model's activation grid
    rec = {}
    if isinstance(model, TernaryResNet):
        with torch.no_grad():
            model(x * model.input_scale, record=rec)
        want, scale = rec["stem"]
    else:
        with torch.no_grad():
            want, scale = model.blocks[0](x * model.input_scale), model.blocks[0].act.scale
    got = reference.run(back, x.numpy())[first]
    same = (got == torch.round(want / scale).to(torch.int64)).double().mean()
    assert same > 0.999, same
    with pytest.raises(UnsupportedError, match=f"layer '{first}': precision must be ternary, found float"):
        lower(back, 16, 16)


def test_cli_trains_digits_resnet(tmp_path):
    from train.cli import main
    out = tmp_path / "run"
    assert main(["--model", "digits_resnet", "--pe", "16", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.ir", "test_images.npy",
                                                     "test_labels.npy", "train_log.jsonl"]
    irm = ir.load(out / "model.ir")
    assert irm.name == "digits_resnet" and irm.layer("s2b1_conv2").residual == "s2b1_short"
