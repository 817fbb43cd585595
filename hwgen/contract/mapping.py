"""PE-wise groups and the wave schedule: the one definition shared by training and hardware.

A *group* is output channel o x input block j x the whole kernel: W[o, jL:(j+1)L, ...] (docs/design.md §2).
Output channel o belongs to PE (o mod N) and is that PE's local channel o // N. In input block j the array
runs ``waves[j]`` waves; in wave w every PE handles its w-th kept group of block j (or idles).

Functions here take numpy arrays; ``group_sq_norms`` also takes torch tensors (only slicing and sums).
The sizes a layer maps to (blocks of a channel count, the output size of a window) are defined here too, so
that the IR, the exporter, the lowering and the stream encoding read the same rule.
Which layers training prunes (``prunable``: not the stem, the classifier or an option-A pass-through) is
decided here as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ConfigError(ValueError):
    """An array shape the generator cannot build."""


def check_pe_lanes(pe: int, lanes: int) -> None:
    """The array shapes the generator supports; the message names what was expected and found."""
    if not isinstance(lanes, int) or lanes < 1 or lanes & (lanes - 1):
        raise ConfigError(f"lanes must be a power of two >= 1, not {lanes!r}")
    if not isinstance(pe, int) or pe < 1 or lanes % pe:
        raise ConfigError(f"pe must be a positive divisor of lanes ({lanes}), not {pe!r}")


def num_blocks(channels: int, lanes: int) -> int:
    """Input blocks of ``channels`` channels: lane words per pixel, the last one zero-padded."""
    return -(-channels // lanes)


def conv_out_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output rows (or columns) of a convolution or pooling window over ``n`` input rows, zero-padded by
    ``padding`` on both sides."""
    return (n + 2 * padding - kernel) // stride + 1


def block_bounds(channels: int, lanes: int) -> list[tuple[int, int]]:
    return [(j * lanes, min(channels, (j + 1) * lanes)) for j in range(num_blocks(channels, lanes))]


def group_sq_norms(weight, lanes: int) -> list:
    """Per input block j, the squared L2 norm of every group (o, j): a list of J vectors of length O.
    ``weight`` is [O, C] or [O, C, kh, kw], numpy or torch."""
    flat = weight.reshape(weight.shape[0], weight.shape[1], -1)
    return [(flat[:, s:e] ** 2).sum(-1).sum(-1) for s, e in block_bounds(weight.shape[1], lanes)]


def kept_groups(weight: np.ndarray, lanes: int) -> np.ndarray:
    """bool [O, J]: a group is kept when any of its ternary weights is nonzero."""
    return np.stack([n > 0 for n in group_sq_norms(np.asarray(weight, np.int64), lanes)], axis=1)


def balanced_mask(scores: np.ndarray, pe: int, keep_fraction: float) -> np.ndarray:
    """PE-balanced selection: in every input block each PE keeps the same number of its own groups, the
    highest-scoring ones. ``scores`` is [O, J]; returns bool [O, J]."""
    scores = np.asarray(scores, np.float64)
    out, blocks = scores.shape
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], not {keep_fraction}")
    per_pe = out // pe if out >= pe else 1  # channels of the smallest PE (or 1 when O < N)
    keep = max(1, int(np.floor(keep_fraction * per_pe + 0.5)))  # half up, not Python's half-to-even
    mask = np.zeros(scores.shape, bool)
    for p in range(min(pe, out)):
        owned = np.arange(p, out, pe)
        for j in range(blocks):
            # Stable sort on -score: ties go to the lower channel, so the result is deterministic.
            best = owned[np.argsort(-scores[owned, j], kind="stable")[:keep]]
            mask[best, j] = True
    return mask


@dataclass(frozen=True, eq=False)
class Schedule:
    """``slots[r, p]``: output channel PE p handles in row r (-1 = idle); row r is wave ``wave[r]`` of
    input block ``block[r]``. Rows are ordered by block, then wave."""

    pe: int
    waves: tuple[int, ...]
    block: np.ndarray
    slots: np.ndarray
    plane: np.ndarray | None = None  # ternary plane of each row (residual expansion); None: all plane 0

    @property
    def rows(self) -> int:
        return len(self.block)

    @property
    def idle_slots(self) -> int:
        return int((self.slots < 0).sum())


def schedule(mask: np.ndarray, pe: int) -> Schedule:
    out, blocks = mask.shape
    waves, block, rows = [], [], []
    for j in range(blocks):
        per_pe = [[o for o in range(p, out, pe) if mask[o, j]] for p in range(pe)]
        n = max(len(k) for k in per_pe)
        waves.append(n)
        for w in range(n):
            block.append(j)
            rows.append([k[w] if w < len(k) else -1 for k in per_pe])
    slots = np.array(rows, np.int64).reshape(-1, pe)
    return Schedule(pe, tuple(waves), np.array(block, np.int64), slots, np.zeros(len(block), np.int64))


def ternary_planes(weight: np.ndarray) -> list[np.ndarray]:
    """A weight with levels in [-t, t] as t ternary planes that sum to it: plane p (1-based) is
    sign(w) where |w| >= p. Residual expansion runs one pass per plane into the same accumulator."""
    w = np.asarray(weight, np.int64)
    t = max(1, int(np.abs(w).max(initial=0)))
    return [(np.sign(w) * (np.abs(w) >= p)).astype(np.int8) for p in range(1, t + 1)]


def plane_schedule(planes: list[np.ndarray], lanes: int, pe: int) -> tuple[Schedule, list[np.ndarray]]:
    """The schedules of each plane's kept groups, one after the other; returns the schedule and the kept
    groups of each plane."""
    kept = [kept_groups(p, lanes) for p in planes]
    parts = [schedule(k, pe) for k in kept]
    waves = tuple(sum(ws) for ws in zip(*(p.waves for p in parts)))
    plane = np.concatenate([np.full(p.rows, i, np.int64) for i, p in enumerate(parts)])
    return Schedule(pe, waves, np.concatenate([p.block for p in parts]),
                    np.concatenate([p.slots for p in parts]).reshape(-1, pe), plane), kept


def is_identity_shortcut(layer) -> bool:
    """An option-A shortcut (subsample, append zero channels) as ``train.export`` and ``hwgen.frontends.synthetic``
    write it: a 1x1 conv whose weight is the identity on its input channels, with unit requantization (mul 1,
    bias 0, shift 0), so the integers pass through. Told by what the layer is, not by its name (the exporter
    calls it ``<block>_short``, the synthetic networks ``short<N>``). Takes an IR or a lowered layer."""
    if layer.kind != "conv" or layer.mul is None or layer.weight.shape[2:] != (1, 1):
        return False
    return (np.array_equal(layer.weight[:, :, 0, 0], np.eye(*layer.weight.shape[:2]))
            and (layer.mul == 1).all() and (layer.bias == 0).all() and (layer.shift == 0).all())


def prunable(layers):
    """The layers training prunes (IR or lowered): convs and linears except the first (stem) and the last
    (classifier), which the papers leave dense, and the option-A shortcuts, which have no weights to learn."""
    weighted = [l for l in layers if l.kind in ("conv", "linear")]
    return [l for l in weighted[1:-1] if not is_identity_shortcut(l)]
