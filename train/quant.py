"""Quantizers: ternary weights (He, Gong, Fan, WACV 2019) and integer activations, with straight-through
gradients, plus the ternary Conv2d / Linear layers built on them (DESIGN.md §2).

Activation values on the forward path are always ``q * scale`` with ``q`` an integer, rounded half up, so
the exported integer network (``hwgen.reference``) computes the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DELTA = 0.05


def threshold_and_scale(w: torch.Tensor, delta: float = DEFAULT_DELTA) -> tuple[torch.Tensor, torch.Tensor]:
    """Δ = delta * max|W| and α = mean |w| over |w| >= Δ, both detached 0-d tensors."""
    with torch.no_grad():
        a = w.detach().abs()
        thr = delta * a.max()
        # A layer whose weights are all zero has Δ = 0: no weight survives (|w| >= Δ would keep zeros).
        keep = (a >= thr) & (a > 0)
        n = keep.sum()
        alpha = (a * keep).sum() / n.clamp(min=1)
    return thr, alpha


def ternary_levels(w: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    """sign(W) * [|W| >= Δ] as a float tensor of -1, 0, +1 (zeros never survive, even when Δ = 0)."""
    a = w.abs()
    return torch.sign(w) * ((a >= thr) & (a > 0)).to(w.dtype)


class _TernarizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, delta):
        thr, alpha = threshold_and_scale(w, delta)
        ctx.save_for_backward(w)
        return alpha * ternary_levels(w, thr)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        # Identity straight-through estimator, cut where the latent weight left [-1, 1].
        return grad * (w.abs() < 1).to(grad.dtype), None


def ternarize_ste(w: torch.Tensor, delta: float = DEFAULT_DELTA) -> torch.Tensor:
    """Forward α·sign(W)·[|W| >= Δ]; backward identity where |W| < 1, zero elsewhere."""
    return _TernarizeSTE.apply(w, delta)


def ternarize(w: torch.Tensor, delta: float = DEFAULT_DELTA) -> tuple[torch.Tensor, float]:
    """The integer ternary tensor (int8 in {-1, 0, 1}) and α, so that α * t is what the forward pass uses."""
    thr, alpha = threshold_and_scale(w, delta)
    return ternary_levels(w.detach(), thr).to(torch.int8), float(alpha)


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
        m = x.detach().abs().max()
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

class TernaryConv2d(nn.Conv2d):
    """Conv2d whose forward uses the ternarized latent weight (no bias: BatchNorm follows)."""

    def __init__(self, *args, delta: float = DEFAULT_DELTA, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, ternarize_ste(self.weight, self.delta), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class TernaryLinear(nn.Linear):
    """Linear layer with ternarized weights and a float bias."""

    def __init__(self, *args, delta: float = DEFAULT_DELTA, **kwargs):
        super().__init__(*args, **kwargs)
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, ternarize_ste(self.weight, self.delta), self.bias)


def fake_quant(x: torch.Tensor, scale: float, lo: int, hi: int) -> torch.Tensor:
    """clamp(round_half_up(x / scale), lo, hi) * scale with the straight-through gradient of ActQuant, for a
    tensor quantized onto another quantizer's grid (a shortcut on its block's output scale)."""
    return _FakeQuantSTE.apply(x, scale, lo, hi)


class GridAvgPool(nn.Module):
    """Global average pool whose output stays on the input's activation grid (scale s of ``act``):
    y = round_half_up(sum(q) / (H*W)) * s, as the integer avgpool layer computes it. Summing the integers
    ``q`` (recovered exactly from x = q*s) keeps float rounding from moving a value across a half step.
    Gradient: that of the plain mean (straight through the rounding)."""

    def __init__(self, act: ActQuant):
        super().__init__()
        self.act = [act]  # a list, so the quantizer is not registered twice in the module tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        with torch.no_grad():
            act = self.act[0]
            s = act.scale
            q_sum = round_half_up(x / s).sum(dim=(2, 3), keepdim=True)
            exact = round_half_up(q_sum / (x.shape[2] * x.shape[3])).clamp(act.lo, act.hi) * s
        return mean + (exact - mean).detach()
