"""The training options at paper fidelity: threshold rules, residual expansion (tex), WPC rank mode, paper-style
unbalanced selection, activation bits and the per-layer report (CPU, short runs)."""
import os

import numpy as np
import pytest
import torch

from hwgen.contract import ir
from train import data
from train.agreement import compare
from train.cli import main
from train.export import export, logit_scale
from train.pipeline import TrainConfig, _prune_report, run, train_model
from train.prune import group_scores, paper_mask, per_pe_kept, select_masks
from train.models import digits_cnn
from train.quant import TernaryConv2d, configure_ternary, ternarize, ternarize_ste, threshold_and_scale
from train.wpc import WPCConfig, clip, group_norms, layer_penalty, rank_k


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ thresholds

def test_threshold_rules():
    w = torch.tensor([1.0, -0.5, 0.04, -0.15, 0.0, 2.0])
    thr, _ = threshold_and_scale(w, delta=0.1)
    assert float(thr) == pytest.approx(0.2)  # 0.1 * max|W|
    thr, alpha = threshold_and_scale(w, rule="mean")
    assert float(thr) == pytest.approx(0.7 * 3.69 / 6)  # 0.7 * mean|W| = 0.4305
    t, a = ternarize(w, rule="mean")
    assert t.tolist() == [1, -1, 0, 0, 0, 1] and a == pytest.approx(3.5 / 3)
    with pytest.raises(ValueError, match="threshold rule must be one of max, mean, not 'median'"):
        ternarize(w, rule="median")
    with pytest.raises(ValueError, match="tex must be one of 1, 2, 4, not 3"):
        TernaryConv2d(2, 2, 1, tex=3)


@pytest.mark.parametrize("tex", [1, 2, 4])
def test_tex_levels_and_shared_scale(tex):
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3) * 0.1
    t, alpha = ternarize(w, tex=tex)
    levels = set(np.unique(t.numpy()).tolist())
    assert levels == set(range(-tex, tex + 1))  # 2 tex + 1 levels, all used on a Gaussian layer
    thr = 0.05 * float(w.abs().max())
    # branch i keeps |w| >= i * Δ_1: the summed level counts the thresholds passed
    expect = torch.sign(w) * sum((w.abs() >= i * thr).float() for i in range(1, tex + 1))
    assert torch.equal(t.float(), expect)
    assert torch.equal(ternarize_ste(w, tex=tex), alpha * t.float())  # one α for every branch
    # α is the least-squares scale of the levels (for tex = 1: the mean of the surviving |w|)
    lv = t.abs().double()
    assert alpha == pytest.approx(float((w.abs().double() * lv).sum() / (lv * lv).sum()), rel=1e-5)


def test_configure_ternary_sets_every_layer():
    model = digits_cnn()
    assert configure_ternary(model, delta=0.03, rule="max", tex=2) == 5
    assert all(m.tex == 2 and m.delta == 0.03 for m in model.weight_layers().values())


@pytest.fixture(scope="module")
def tex2():
    t = train_model(TrainConfig(pe=4, epochs=4, tex=2, quiet=True))
    return t, export(t.model, 16, t.masks, logit_scale(t.model, data.to_float(t.split.train_x)))


def test_tex2_export_matches_float_model(tex2):
    t, irm = tex2
    for l in irm.layers:
        if l.weight is not None:
            assert l.tex == 2 and np.abs(l.weight).max() == 2, l.name
    ir.validate(irm)
    for check in compare(t.model, irm, t.split.test_x):  # every layer within its float32 bound (train.agreement)
        assert check.violations == 0 and check.values > 0, (check.name, check.first)
    r = _prune_report(t.masks, 4, t.model, 16, tex=2)
    assert r["compression"] == pytest.approx(8 / (r["kept_groups"] / r["groups"]))  # 16 / tex / density


# ------------------------------------------------------------------------------------------ WPC

def test_rank_k():
    assert rank_k(64, 0.7) == 11 * 4
    assert rank_k(32, 0.5) == 8 * 2
    assert rank_k(15, 0.7) == 0
    assert rank_k(16, 1.0) == 16
    with pytest.raises(ValueError, match=r"in \(0, 1\] in rank mode, not 1.5"):
        WPCConfig(mode="rank", ratio=1.5)


@pytest.mark.parametrize("mode", ["mean", "rank"])
def test_wpc_clip_gradients(mode):
    torch.manual_seed(1)
    # 32 output channels x 2 blocks = 64 groups of varied size (scaled per channel)
    w = (torch.randn(32, 32, 3, 3) * torch.linspace(0.01, 1.0, 32).view(-1, 1, 1, 1)).requires_grad_()
    cfg = WPCConfig(lam=1.0, ratio=0.7, lanes=16, mode=mode)
    n = group_norms(w.detach(), 16)
    tau = clip(n, cfg)
    if mode == "mean":
        assert float(tau) == pytest.approx(0.7 * float(n.mean()))
    else:
        assert float(tau) == float(n.flatten().sort().values[11 * 4 - 1])  # the 44th smallest
        assert int((n <= tau).sum()) == 44
    layer_penalty(w, cfg).backward()
    g = w.grad.view(32, 2, 16, 9)
    wv = w.detach().view(32, 2, 16, 9)
    below, above = n <= tau, n > tau
    assert below.any() and above.any()
    assert (g[above] == 0).all()  # clipped: no shrinking of the strong groups
    # group lasso: d n_g / d W_g = W_g / n_g (ε inside the sqrt)
    expect = wv / n.view(32, 2, 1, 1)
    assert torch.allclose(g[below], expect[below], atol=1e-6)


def test_wpc_rank_mode_small_layer_has_no_penalty_gradient():
    w = torch.randn(8, 16, 3, 3, requires_grad=True)  # 8 groups < 16: k = 0
    pen = layer_penalty(w, WPCConfig(mode="rank"))
    pen.backward()
    assert float(pen.detach()) == 0 and (w.grad == 0).all()


# ------------------------------------------------------------------------------------------ selection

def _layers(o, c, seed):
    torch.manual_seed(seed)
    conv = TernaryConv2d(c, o, 3, padding=1)
    with torch.no_grad():  # channel strength varies, so the strongest groups crowd onto a few PEs
        conv.weight.mul_(torch.rand(o).view(-1, 1, 1, 1) ** 3)
    return {"conv": conv}


@pytest.mark.parametrize("pe, o, c", [(4, 32, 48), (16, 64, 32), (8, 24, 16)])
def test_selection_balanced_versus_paper(pe, o, c):
    layers = _layers(o, c, seed=o + c)
    bal = select_masks(layers, pe, 16, 0.4, "balanced")["conv"]
    pap = select_masks(layers, pe, 16, 0.4, "paper")["conv"]
    assert all(len(set(block)) == 1 for block in per_pe_kept(bal, pe))
    assert pap.sum() == bal.sum()
    assert any(len(set(block)) > 1 for block in per_pe_kept(pap, pe))  # unequal per PE somewhere
    # paper keeps the globally strongest groups: none dropped beats one kept
    s = group_scores(layers["conv"].weight, 16)
    assert s[pap].min() >= s[~pap].max()
    with pytest.raises(ValueError, match="selection must be one of balanced, paper, not 'random'"):
        select_masks(layers, pe, 16, 0.4, "random")


def test_paper_mask_ties_are_deterministic():
    m = paper_mask(np.ones((8, 2)), 4, 0.5)
    assert m.sum() == 8 and m[:4].all() and not m[4:].any()


# ------------------------------------------------------------------------------------------ end to end

def test_options_end_to_end_and_report():
    """mean threshold, rank WPC, paper selection and 6-bit activations in one short run."""
    cfg = TrainConfig(pe=4, epochs=3, threshold="mean", wpc_mode="rank", selection="paper", act_bits=6,
                      quiet=True)
    r = run(cfg)
    irm, m = r.ir, r.metrics
    for l in irm.layers:
        if l.kind in ("conv", "avgpool"):
            assert l.out_bits == 6, l.name
    assert irm.meta["act_bits"] == 6 and irm.meta["selection"] == "paper" and irm.meta["threshold"] == "mean"
    assert abs(m["int_accuracy"] - m["float_accuracy"]) <= 0.01
    assert set(m["layers"]) == {"conv1", "conv2", "conv3", "conv4", "fc"}
    for name, r in m["layers"].items():
        layer = irm.layer(name)
        assert r["groups"] == layer.mask.size and r["kept"] == layer.mask.sum()
        assert r["density"] == pytest.approx(r["kept"] / r["groups"])
        assert r["compression"] == pytest.approx(16 / r["density"])
        assert r["weights"] == layer.weight.size
        assert r["compression_weighted"] == pytest.approx(16 * r["weights"] / r["kept_weights"])
        assert r["pruned"] == (name in ("conv2", "conv3", "conv4"))
    kept = sum(m["layers"][n]["kept"] for n in ("conv2", "conv3", "conv4"))
    assert m["kept_groups"] == kept
    weights = sum(r["weights"] for r in m["layers"].values())
    kept_weights = sum(r["kept_weights"] for r in m["layers"].values())
    assert m["compression_weighted"] == pytest.approx(16 * weights / kept_weights)


@pytest.mark.parametrize("args, message", [
    (["--act-bits", "1"], "act-bits must be an integer in 2..16, not 1"),
    (["--delta", "0"], "delta must be in (0, 1), not 0.0"),
    (["--wpc", "rank", "--wpc-ratio", "2"], "in (0, 1] in rank mode, not 2.0"),
])
def test_cli_rejects_bad_options(tmp_path, capsys, args, message):
    assert main(["--model", "digits", "--pe", "4", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["--tex", "3"], "argument --tex: invalid choice: 3"),
    (["--threshold", "median"], "argument --threshold: invalid choice: 'median'"),
    (["--selection", "greedy"], "argument --selection: invalid choice: 'greedy'"),
    (["--wpc", "l1"], "argument --wpc/--wpc-mode: invalid choice: 'l1'"),
])
def test_cli_malformed_options_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "digits", "--pe", "4", "--out", str(tmp_path / "o"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
