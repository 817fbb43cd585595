"""Group pruning: choose the groups to keep and hold the rest at zero.

Selection "balanced" (ours, the default): ``hwgen.contract.mapping.balanced_mask``, every PE keeps the same number of
its own groups in every input block. Selection "paper" (Yang et al.): a layer keeps its strongest groups
wherever they are, as many as balanced selection keeps in that layer, so PEs may get unequal work.

Masks are bool [O, J] numpy arrays, exactly the IR's ``mask`` field.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from hwgen.contract.mapping import balanced_mask, block_bounds, group_sq_norms

DEFAULT_KEEP_FRACTION = 0.4


def group_scores(weight: torch.Tensor, lanes: int) -> np.ndarray:
    """float64 [O, J]: L2 norm of every group of the latent weight."""
    sq = torch.stack(group_sq_norms(weight.detach().double(), lanes), dim=1)
    return sq.sqrt().numpy()


def expand_mask(mask: np.ndarray, weight_shape: torch.Size, lanes: int) -> torch.Tensor:
    """bool [O, J] -> float tensor of the weight's shape (1 in kept groups, 0 in pruned ones)."""
    o, c = weight_shape[0], weight_shape[1]
    bounds = block_bounds(c, lanes)
    if mask.shape != (o, len(bounds)):
        raise ValueError(f"mask shape must be {[o, len(bounds)]} for a weight {list(weight_shape)} "
                         f"with lanes={lanes}, found {list(mask.shape)}")
    full = torch.zeros(o, c)
    for j, (s, e) in enumerate(bounds):
        full[:, s:e] = torch.from_numpy(mask[:, j].astype(np.float32)).view(-1, 1)
    return full.view(o, c, *([1] * (len(weight_shape) - 2))).expand(weight_shape).contiguous()


SELECTIONS = ("balanced", "paper")


def balanced_masks(layers: dict[str, nn.Module], pe: int, lanes: int, keep_fraction: float) -> dict[str, np.ndarray]:
    """One balanced mask per layer, scored by the latent group norms."""
    return {name: balanced_mask(group_scores(m.weight, lanes), pe, keep_fraction) for name, m in layers.items()}


def paper_mask(scores: np.ndarray, pe: int, keep_fraction: float) -> np.ndarray:
    """bool [O, J]: the highest-scoring groups of the whole layer, no per-PE balance. The count is what
    ``balanced_mask`` keeps, so both selections give the layer the same density (ties: lower index first)."""
    scores = np.asarray(scores, np.float64)
    count = int(balanced_mask(scores, pe, keep_fraction).sum())
    mask = np.zeros(scores.size, bool)
    mask[np.argsort(-scores.ravel(), kind="stable")[:count]] = True
    return mask.reshape(scores.shape)


def select_masks(layers: dict[str, nn.Module], pe: int, lanes: int, keep_fraction: float,
                 selection: str = "balanced") -> dict[str, np.ndarray]:
    """One mask per layer by ``selection`` ("balanced" or "paper"), scored by the latent group norms."""
    if selection == "balanced":
        return balanced_masks(layers, pe, lanes, keep_fraction)
    if selection == "paper":
        return {name: paper_mask(group_scores(m.weight, lanes), pe, keep_fraction) for name, m in layers.items()}
    raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, not {selection!r}")


class Pruner:
    """Holds layers' weights at zero in pruned groups: zeroes them now, masks their gradients (so the
    optimizer sees none there) and re-zeroes after each step (``enforce``) against optimizer drift such as
    momentum or weight decay."""

    def __init__(self, layers: dict[str, nn.Module], masks: dict[str, np.ndarray], lanes: int):
        if set(layers) != set(masks):
            raise ValueError(f"masks must cover the layers {sorted(layers)}, found {sorted(masks)}")
        self.masks = masks
        self._pairs = []
        for name, m in layers.items():
            full = expand_mask(masks[name], m.weight.shape, lanes).to(m.weight.dtype)
            m.weight.register_hook(lambda g, full=full: g * full)
            self._pairs.append((m.weight, full))
        self.enforce()

    @torch.no_grad()
    def enforce(self) -> None:
        for w, full in self._pairs:
            w.mul_(full)


def per_pe_kept(mask: np.ndarray, pe: int) -> list[list[int]]:
    """[block j][PE p]: how many groups PE p keeps in block j (equal within a block when balanced)."""
    return [[int(mask[p::pe, j].sum()) for p in range(pe)] for j in range(mask.shape[1])]
