"""PE-wise group lasso with Weight Penalty Clipping (Yang, He, Fan, AAAI 2020).

For every prunable layer: n_g = sqrt(||W_g||^2 + eps) over the groups of ``hwgen.contract.mapping`` (one output
channel x one block of ``lanes`` input channels x the kernel), a clip tau (detached, recomputed every step)
and penalty = lam * sum_g min(n_g, tau). Groups above tau get no gradient from the penalty, so the survivors
keep their magnitude (and so their ternary scale); the weak groups are pushed to zero.

Mode "mean" (the paper): tau = r * mean(n_g). Mode "rank" (the paper): tau = the k-th smallest n_g with
k = floor(16 r) * floor(G / 16), G the layer's group count, so the shrunk count is a multiple of 16 PEs' worth.

Mode "balanced" (ours, not the paper's): the clip is set per PE and input block, between the groups that
``hwgen.contract.mapping.balanced_mask`` would keep now and those it would drop, so exactly the groups that
PE-balanced pruning will remove are shrunk (the paper's rank mode, ranked within each PE's share).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from hwgen.contract.mapping import balanced_mask, group_sq_norms

EPS = 1e-8  # inside the square root: a zero group would otherwise give a NaN gradient


def group_norms(weight: torch.Tensor, lanes: int, eps: float = EPS) -> torch.Tensor:
    """[O, J] tensor of sqrt(||W_g||^2 + eps), differentiable."""
    return torch.sqrt(torch.stack(group_sq_norms(weight, lanes), dim=1) + eps)


MODES = ("mean", "rank", "balanced")
RANK_UNIT = 16  # the paper counts ranks in multiples of its 16 PEs


@dataclass(frozen=True)
class WPCConfig:
    lam: float = 5e-4
    ratio: float = 0.7  # r in tau = r * mean(n_g) (mode "mean") or the rank share (mode "rank")
    lanes: int = 16
    eps: float = EPS
    mode: str = "mean"
    pe: int = 1  # mode "balanced": the PE count and kept share of the coming balanced pruning
    keep_fraction: float = 1.0

    def __post_init__(self):
        if not self.lam >= 0:
            raise ValueError(f"WPC lambda must be >= 0, not {self.lam}")
        if not self.ratio > 0:
            raise ValueError(f"WPC ratio r must be > 0, not {self.ratio}")
        if self.mode not in MODES:
            raise ValueError(f"WPC mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "rank" and not self.ratio <= 1:
            raise ValueError(f"WPC ratio r must be in (0, 1] in rank mode, not {self.ratio}")


def rank_k(groups: int, ratio: float) -> int:
    """k = floor(16 r) * floor(G / 16): how many groups rank mode shrinks (0 when G < 16)."""
    return min(groups, int(RANK_UNIT * ratio) * (groups // RANK_UNIT))  # 16 r is exact in binary floats


def clip(n: torch.Tensor, cfg: WPCConfig) -> torch.Tensor:
    """tau of mode "mean" or "rank" for the group norms ``n`` (detached); -inf when rank mode shrinks none
    (fewer than 16 groups)."""
    n = n.detach()
    if cfg.mode == "mean":
        return cfg.ratio * n.mean()
    k = rank_k(n.numel(), cfg.ratio)
    if k == 0:
        return torch.tensor(float("-inf"), dtype=n.dtype)
    return n.flatten().kthvalue(k).values


def layer_penalty(weight: torch.Tensor, cfg: WPCConfig) -> torch.Tensor:
    """sum_g min(n_g, tau) for one layer (without lambda)."""
    n = group_norms(weight, cfg.lanes, cfg.eps)
    if cfg.mode in ("mean", "rank"):
        tau = clip(n, cfg)
        if not torch.isfinite(tau):
            return n.sum() * 0  # nothing to shrink: zero penalty, zero gradient (not a sum of -inf)
        # Groups at or below tau are penalized (rank mode: exactly the k smallest, the k-th included); the
        # others contribute the constant tau, no gradient. torch.minimum would split the gradient at a tie.
        return torch.where(n <= tau, n, tau).sum()
    keep = torch.from_numpy(balanced_mask(n.detach().numpy(), cfg.pe, cfg.keep_fraction))
    # Kept groups sit above the clip: constant value, no gradient. The others are below it: penalized.
    return torch.where(keep, n.detach(), n).sum()


def wpc_penalty(weights: Iterable[torch.Tensor], cfg: WPCConfig) -> torch.Tensor:
    """lam * sum over the prunable layers' latent weights; zero (and no work) when lam is 0."""
    weights = list(weights)
    if cfg.lam == 0 or not weights:
        return torch.zeros(())
    return cfg.lam * sum(layer_penalty(w, cfg) for w in weights)
