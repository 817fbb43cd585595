"""Quantizers: ternary weights (He, Gong, Fan, WACV 2019) and integer activations, with straight-through
gradients, plus the ternary Conv2d / Linear layers built on them (docs/design.md §2). Threshold rules: Δ = δ·max|W|
(the paper, δ = 0.05 by default) or Δ = 0.7·mean|W|; residual expansion (tex = 2, 4) sums tex ternary branches
of one latent weight under one shared scale α (see :func:`threshold_and_scale`).

Activation values on the forward path are always ``q * scale`` with ``q`` an integer, rounded half up, so
the exported integer network (``hwgen.contract.reference``) computes the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hwgen.contract.encoding import average_constants

from .distributed import global_max

DEFAULT_DELTA = 0.05
MEAN_FACTOR = 0.7  # the mean rule's Δ = 0.7 · mean|W|
THRESHOLD_RULES = ("max", "mean")
TEX_VALUES = (1, 2, 4)


def check_ternary_options(delta: float, rule: str, tex: int) -> None:
    """Raise ValueError naming the option, what was expected and what was found."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, not {rule!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), not {delta}")
    if tex not in TEX_VALUES:
        raise ValueError(f"tex must be one of {', '.join(map(str, TEX_VALUES))}, not {tex!r}")


def base_threshold(a: torch.Tensor, delta: float = DEFAULT_DELTA, rule: str = "max") -> torch.Tensor:
    """Δ_1 from |W|: delta·max|W| (the paper's rule) or 0.7·mean|W| (the mean rule; delta unused)."""
    if rule == "max":
        return delta * a.max()
    if rule == "mean":
        return MEAN_FACTOR * a.mean()
    raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, not {rule!r}")


def expanded_levels(w: torch.Tensor, thr: torch.Tensor, tex: int = 1) -> torch.Tensor:
    """Σ_i sign(W)·[|W| >= i·Δ_1] for i = 1..tex: integers in [-tex, tex] as a float tensor (zeros never
    survive, even when Δ_1 = 0). tex = 1 is plain ternary."""
    a = w.abs()
    nonzero = a > 0
    count = ((a >= thr) & nonzero).to(w.dtype)
    for i in range(2, tex + 1):
        count = count + ((a >= i * thr) & nonzero).to(w.dtype)
    return torch.sign(w) * count


def threshold_and_scale(w: torch.Tensor, delta: float = DEFAULT_DELTA, rule: str = "max",
                        tex: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Δ_1 and α, both detached 0-d tensors.

    tex = 1: α = mean |w| over |w| >= Δ (the paper). Residual expansion (tex > 1): branch i ternarizes the
    same W at Δ_i = i·Δ_1 (δ_i = 0.05·i under the max rule) and the branches are summed, with ONE α shared by
    all of them, the least-squares scale α = Σ|w|·|L| / Σ L² for the summed levels L. That is equal level
    spacing, a documented simplification of the paper's per-branch α: it makes Ŵ = α·L with L an integer
    in [-tex, tex], so the export holds L and one scale per layer and stays exact. For tex = 1 it is the
    paper's α."""
    with torch.no_grad():
        a = w.detach().abs()
        thr = base_threshold(a, delta, rule)
        lv = expanded_levels(a, thr, tex)  # |L|: a is non-negative
        alpha = (a * lv).sum() / (lv * lv).sum().clamp(min=1)
    return thr, alpha


def ternary_levels(w: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """sign(W) * [|W| >= Δ] as a float tensor of -1, 0, +1 (zeros never survive, even when Δ = 0)."""
    return expanded_levels(w, thr, 1)


class _TernarizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, delta, rule, tex):
        thr, alpha = threshold_and_scale(w, delta, rule, tex)
        ctx.save_for_backward(w)
        return alpha * expanded_levels(w, thr, tex)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        # Identity straight-through estimator, cut where the latent weight left [-1, 1].
        return grad * (w.abs() < 1).to(grad.dtype), None, None, None


def ternarize_ste(w: torch.Tensor, delta: float = DEFAULT_DELTA, rule: str = "max", tex: int = 1) -> torch.Tensor:
    """Forward α·L (L the summed ternary levels, see :func:`threshold_and_scale`); backward identity where
    |W| < 1, zero elsewhere."""
    return _TernarizeSTE.apply(w, delta, rule, tex)


def ternarize(w: torch.Tensor, delta: float = DEFAULT_DELTA, rule: str = "max",
              tex: int = 1) -> tuple[torch.Tensor, float]:
    """The integer levels (int8 in [-tex, tex]) and α, so that α * L is what the forward pass uses."""
    thr, alpha = threshold_and_scale(w, delta, rule, tex)
    return expanded_levels(w.detach(), thr, tex).to(torch.int8), float(alpha)


# ------------------------------------------------------------------------------------------ activations

def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 0.5): the rounding of the integer requantization (torch.round is half to even)."""
    return torch.floor(x + 0.5)


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, lo, hi):
        q = round_half_up(x / scale)
        ctx.save_for_backward((q >= lo) & (q <= hi))
        return q.clamp(lo, hi) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        # Straight through inside the representable range, zero where the value was clipped.
        return grad * inside.to(grad.dtype), None, None, None


class ActQuant(nn.Module):
    """Integer activation fake-quantizer: y = clamp(round_half_up(x / s), lo, hi) * s.

    Unsigned (after ReLU): [0, 2^bits - 1]; signed: [-2^(bits-1), 2^(bits-1) - 1]. The scale s comes from
    an exponential moving average of the batch's largest |x| while training and is frozen in eval mode.
    """

    def __init__(self, bits: int = 8, signed: bool = False, momentum: float = 0.1):
        super().__init__()
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"activation bits must be an integer in 2..16, not {bits!r}")
        self.bits, self.signed, self.momentum = bits, signed, momentum
        self.lo, self.hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    @property
    def scale(self) -> float:
        """The step between integer levels; what the exporter folds into the requantization."""
        if not bool(self.calibrated):
            raise RuntimeError("ActQuant has seen no training batch, so it has no scale yet")
        return float(self.running_max.clamp(min=1e-8)) / self.hi

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """In training mode, fold the batch's largest |x| into the running maximum (nothing in eval)."""
        if not self.training:
            return
        m = global_max(x.detach().abs().max())  # over every rank's rows when data-parallel
        if bool(self.calibrated):
            self.running_max.mul_(1 - self.momentum).add_(self.momentum * m)
        else:
            self.running_max.copy_(m)
            self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.observe(x)
        return _FakeQuantSTE.apply(x, self.scale, self.lo, self.hi)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


# ------------------------------------------------------------------------------------------ layers

class _Ternary:
    """The quantizer settings a ternary layer carries: ``delta``, ``rule`` ("max" | "mean") and ``tex``."""
    delta: float
    rule: str = "max"
    tex: int = 1

    def ternary(self) -> tuple[torch.Tensor, float]:
        """The integer levels (int8) and α the export holds."""
        return ternarize(self.weight, self.delta, self.rule, self.tex)

    def quantized_weight(self) -> torch.Tensor:
        return ternarize_ste(self.weight, self.delta, self.rule, self.tex)


class TernaryConv2d(_Ternary, nn.Conv2d):
    """Conv2d whose forward uses the ternarized latent weight (no bias: BatchNorm follows)."""

    def __init__(self, *args, delta: float = DEFAULT_DELTA, rule: str = "max", tex: int = 1, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        check_ternary_options(delta, rule, tex)
        self.delta, self.rule, self.tex = delta, rule, tex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.quantized_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class TernaryLinear(_Ternary, nn.Linear):
    """Linear layer with ternarized weights and a float bias."""

    def __init__(self, *args, delta: float = DEFAULT_DELTA, rule: str = "max", tex: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        check_ternary_options(delta, rule, tex)
        self.delta, self.rule, self.tex = delta, rule, tex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


def configure_ternary(model: nn.Module, delta: float = DEFAULT_DELTA, rule: str = "max", tex: int = 1) -> int:
    """Set the quantizer options on every ternary layer of ``model`` (the model builders take no such
    options); returns how many layers were set."""
    check_ternary_options(delta, rule, tex)
    n = 0
    for m in model.modules():
        if isinstance(m, _Ternary):
            m.delta, m.rule, m.tex = delta, rule, tex
            n += 1
    return n


def fake_quant(x: torch.Tensor, scale: float, lo: int, hi: int) -> torch.Tensor:
    """clamp(round_half_up(x / scale), lo, hi) * scale with the straight-through gradient of ActQuant, for a
    tensor quantized onto another quantizer's grid (a shortcut on its block's output scale)."""
    return _FakeQuantSTE.apply(x, scale, lo, hi)


class GridAvgPool(nn.Module):
    """Global average pool whose output stays on the input's activation grid (scale s of ``act``):
    y = ((sum(q) * mul + bias) >> shift) * s with the integers of ``hwgen.contract.encoding.average_constants``, the very
    function the IR's avgpool layer computes (round half up of the mean wherever 18-bit constants allow it).
    The integers ``q`` are recovered exactly from x = q*s and summed in int64, so no float rounding enters.
    Gradient: that of the plain mean (straight through the rounding)."""

    def __init__(self, act: ActQuant):
        super().__init__()
        self.act = [act]  # a list, so the quantizer is not registered twice in the module tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        with torch.no_grad():
            act = self.act[0]
            s = act.scale
            mul, bias, shift = average_constants(x.shape[2] * x.shape[3], act.lo, act.hi)
            q_sum = round_half_up(x / s).to(torch.int64).sum(dim=(2, 3), keepdim=True)
            q = ((q_sum * mul + bias) >> shift).clamp(act.lo, act.hi)
            exact = q.to(x.dtype) * s
        return mean + (exact - mean).detach()
