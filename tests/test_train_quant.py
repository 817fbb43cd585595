"""Unit tests of the training building blocks: quantizers, WPC, balanced pruning (CPU, seconds)."""
import numpy as np
import pytest
import torch

from hwgen.contract.mapping import schedule
from train.models import GridAvgPool
from train.prune import Pruner, balanced_masks, expand_mask, per_pe_kept
from train.quant import ActQuant, TernaryConv2d, ternarize, ternarize_ste, threshold_and_scale
from train.wpc import WPCConfig, group_norms, layer_penalty, wpc_penalty


# ------------------------------------------------------------------------------------------ ternary

def test_ternary_values_and_scale():
    w = torch.tensor([1.0, -0.5, 0.04, -0.05, 0.06, 0.0, -2.0, 0.3])
    # Δ = 0.05 * 2 = 0.1; survivors |w| >= 0.1: 1, -0.5, -2, 0.3 -> α = 3.8 / 4
    thr, alpha = threshold_and_scale(w)
    assert float(thr) == pytest.approx(0.1)
    t, a = ternarize(w)
    assert t.dtype == torch.int8
    assert t.tolist() == [1, -1, 0, 0, 0, 0, -1, 1]
    assert a == pytest.approx(3.8 / 4)
    assert torch.equal(ternarize_ste(w), a * t.float())


def test_ternary_threshold_is_inclusive():
    w = torch.tensor([20.0, 1.0, -1.0, 0.999])  # Δ = 0.05 * 20 = 1 (exact after float32 rounding)
    t, _ = ternarize(w)
    assert t.tolist() == [1, 1, -1, 0]


def test_ternary_all_zero_layer_has_no_survivors():
    t, a = ternarize(torch.zeros(4, 3))
    assert not t.any() and a == 0.0


def test_ternary_ste_gradient_is_identity_inside_unit_interval():
    w = torch.tensor([0.5, -0.99, 1.0, -1.5, 0.01, 3.0], requires_grad=True)
    g = torch.arange(1.0, 7.0)
    ternarize_ste(w).backward(g)
    assert w.grad.tolist() == [1.0, 2.0, 0.0, 0.0, 5.0, 0.0]


def test_ternary_conv_uses_ternarized_weight():
    conv = TernaryConv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 5, 5)
    t, a = ternarize(conv.weight)
    ref = torch.nn.functional.conv2d(x, a * t.float(), padding=1)
    assert torch.allclose(conv(x), ref)


# ------------------------------------------------------------------------------------------ activations

def test_actquant_calibrates_in_training_and_freezes_in_eval():
    q = ActQuant(8)
    with pytest.raises(RuntimeError, match="no training batch"):
        q.scale
    q.train()
    q(torch.full((4,), 2.55))
    assert q.scale == pytest.approx(0.01)  # first batch: the max itself
    q(torch.full((4,), 5.1))
    assert float(q.running_max) == pytest.approx(0.9 * 2.55 + 0.1 * 5.1)
    q.eval()
    before = float(q.running_max)
    q(torch.full((4,), 100.0))
    assert float(q.running_max) == before


def test_actquant_rounds_half_up_and_clamps():
    q = ActQuant(8)
    q.train()
    q(torch.tensor([2.55]))  # scale 0.01 (the float32 step, checked through q.scale below)
    q.eval()
    s = q.scale
    x = torch.tensor([0.0, 2.5, 3.5, 7.49, 300.0, 1000.0]) * s
    y = q(x) / s
    assert torch.allclose(y, torch.tensor([0.0, 3.0, 4.0, 7.0, 255.0, 255.0]))


def test_actquant_ste_gradient_zero_where_clipped():
    q = ActQuant(4)
    q.train()
    q(torch.tensor([15.0]))  # scale 1, range 0..15
    q.eval()
    x = torch.tensor([3.2, 14.9, 15.6, 40.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_actquant_signed_range_and_bad_bits():
    q = ActQuant(4, signed=True)
    q.train()
    y = q(torch.tensor([-7.0, 7.0, -100.0]))  # max |x| = 100 -> scale 100 / 7
    assert (q.lo, q.hi) == (-8, 7)
    assert float((y / q.scale).min()) >= -8
    with pytest.raises(ValueError, match="2..16, not 1"):
        ActQuant(1)


def test_grid_avgpool_matches_integer_round_half_up():
    act = ActQuant(8)
    act.train()
    act(torch.tensor([255.0]))  # scale 1
    act.eval()
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 256, (3, 5, 4, 4), generator=gen).double()
    q[0, 0] = 0
    q[0, 0, 0, :2] = 1  # sum 2 -> mean 0.125 -> 0;   sum 8 -> mean 0.5 -> 1 (half up)
    q[0, 1] = 0
    q[0, 1, 0, :] = 2
    y = GridAvgPool(act)(q.float() * act.scale) / act.scale
    expect = torch.floor(q.sum((2, 3), keepdim=True) / 16 + 0.5)
    assert torch.equal(y.double(), expect)
    assert y[0, 0].item() == 0 and y[0, 1].item() == 1


# ------------------------------------------------------------------------------------------ WPC

def test_group_norms_follow_mapping_groups():
    w = torch.zeros(2, 20, 3, 3)
    w[0, 0] = 1.0  # group (0, 0): 9 ones
    w[1, 17, 1, 1] = 2.0  # group (1, 1): one 2
    n = group_norms(w, 16, eps=0.0)
    assert n.shape == (2, 2)
    assert n.tolist() == [[3.0, 0.0], [0.0, 2.0]]


def test_wpc_groups_above_tau_get_zero_gradient():
    gen = torch.Generator().manual_seed(1)
    w = (torch.rand(8, 32, 3, 3, generator=gen) * torch.rand(8, 1, 1, 1, generator=gen) * 2).requires_grad_()
    cfg = WPCConfig(lam=1e-2, ratio=0.7, lanes=16)
    wpc_penalty([w], cfg).backward()
    n = group_norms(w.detach(), 16)
    tau = 0.7 * n.mean()
    gnorm = group_norms(w.grad, 16, eps=0.0)
    above, below = n > tau, n < tau
    assert above.any() and below.any()
    assert (gnorm[above] == 0).all()
    assert (gnorm[below] > 0).all()
    # Below tau the gradient is lam * W_g / n_g: its norm is lam (up to eps).
    assert torch.allclose(gnorm[below], torch.full_like(gnorm[below], 1e-2), rtol=1e-4)


def test_wpc_value_and_zero_group_is_finite():
    w = torch.zeros(2, 16, 1, 1)
    w[0, :, 0, 0] = 1.0  # norm 4, the other group is 0
    w.requires_grad_()
    cfg = WPCConfig(lam=0.5, ratio=1.0, lanes=16, eps=1e-8)
    p = layer_penalty(w, cfg)
    assert float(p.detach()) == pytest.approx(2.0 + 1e-4, rel=1e-4)  # min(4, tau=2) + min(1e-4, 2)
    wpc_penalty([w], cfg).backward()
    assert torch.isfinite(w.grad).all()
    assert float(wpc_penalty([w], WPCConfig(lam=0.0))) == 0.0


def test_wpc_config_rejects_bad_values():
    with pytest.raises(ValueError, match="lambda must be >= 0, not -1"):
        WPCConfig(lam=-1)


# ------------------------------------------------------------------------------------------ pruning

@pytest.mark.parametrize("pe,out,cin", [(16, 32, 16), (4, 32, 32), (16, 64, 32), (8, 24, 48)])
def test_balanced_masks_equal_per_pe_per_block(pe, out, cin):
    conv = TernaryConv2d(cin, out, 3)
    masks = balanced_masks({"c": conv}, pe, 16, 0.4)
    m = masks["c"]
    assert m.shape == (out, -(-cin // 16))
    counts = per_pe_kept(m, pe)
    assert all(len(set(block)) == 1 for block in counts)
    assert m.mean() <= 0.5
    # The hardware schedule of a balanced mask has no idle slot.
    assert schedule(m, pe).idle_slots == 0


def test_balanced_masks_keep_strongest_groups():
    conv = TernaryConv2d(16, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 3.0, 2.0, 4.0]).view(4, 1, 1, 1).expand(4, 16, 1, 1))
    m = balanced_masks({"c": conv}, 2, 16, 0.5)["c"]  # PE 0 owns channels 0, 2; PE 1 owns 1, 3
    assert m[:, 0].tolist() == [False, False, True, True]


def test_pruner_zeroes_weights_and_gradients():
    torch.manual_seed(0)
    conv = TernaryConv2d(32, 8, 3, padding=1)
    masks = balanced_masks({"c": conv}, 4, 16, 0.5)
    pruner = Pruner({"c": conv}, masks, 16)
    full = expand_mask(masks["c"], conv.weight.shape, 16).bool()
    assert not conv.weight[~full].any()
    opt = torch.optim.Adam(conv.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        conv(torch.randn(2, 32, 4, 4)).square().mean().backward()
        assert not conv.weight.grad[~full].any()
        opt.step()
        pruner.enforce()
    assert not conv.weight[~full].any()
    t, _ = ternarize(conv.weight)
    from hwgen.contract.mapping import kept_groups
    assert not (kept_groups(t.numpy(), 16) & ~masks["c"]).any()


def test_expand_mask_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"mask shape must be \[8, 2\].*found \[8, 1\]"):
        expand_mask(np.ones((8, 1), bool), torch.Size([8, 32, 3, 3]), 16)
