"""PE-wise group lasso with Weight Penalty Clipping (Yang, He, Fan, AAAI 2020), mean mode.

For every prunable layer: n_g = sqrt(||W_g||^2 + eps) over the groups of ``hwgen.mapping`` (one output
channel x one block of ``lanes`` input channels x the kernel), tau = r * mean(n_g) (detached, recomputed
every step) and penalty = lam * sum_g min(n_g, tau). Groups above tau get no gradient from the penalty, so
the survivors keep their magnitude (and so their ternary scale); the weak groups are pushed to zero.

Mode "balanced" (ours, not the paper's): the clip is set per PE and input block, between the groups that
``hwgen.mapping.balanced_mask`` would keep now and those it would drop, so exactly the groups that
PE-balanced pruning will remove are shrunk (the paper's rank mode, ranked within each PE's share).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from hwgen.mapping import balanced_mask, group_sq_norms

EPS = 1e-8  # inside the square root: a zero group would otherwise give a NaN gradient


def group_norms(weight: torch.Tensor, lanes: int, eps: float = EPS) -> torch.Tensor:
    """[O, J] tensor of sqrt(||W_g||^2 + eps), differentiable."""
    return torch.sqrt(torch.stack(group_sq_norms(weight, lanes), dim=1) + eps)


MODES = ("mean", "balanced")


@dataclass(frozen=True)
class WPCConfig:
    lam: float = 5e-4
    ratio: float = 0.7  # r in tau = r * mean(n_g) (mode "mean")
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


def layer_penalty(weight: torch.Tensor, cfg: WPCConfig) -> torch.Tensor:
    """sum_g min(n_g, tau) for one layer (without lambda)."""
    n = group_norms(weight, cfg.lanes, cfg.eps)
    if cfg.mode == "mean":
        return torch.minimum(n, cfg.ratio * n.detach().mean()).sum()
    keep = torch.from_numpy(balanced_mask(n.detach().numpy(), cfg.pe, cfg.keep_fraction))
    # Kept groups sit above the clip: constant value, no gradient. The others are below it: penalized.
    return torch.where(keep, n.detach(), n).sum()


def wpc_penalty(weights: Iterable[torch.Tensor], cfg: WPCConfig) -> torch.Tensor:
    """lam * sum over the prunable layers' latent weights; zero (and no work) when lam is 0."""
    weights = list(weights)
    if cfg.lam == 0 or not weights:
        return torch.zeros(())
    return cfg.lam * sum(layer_penalty(w, cfg) for w in weights)
