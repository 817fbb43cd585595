"""The 8x8 digits data set (scikit-learn's bundled copy, no download) and its fixed held-out split.

Pixels are integers 0..16. The integer network input is the raw pixel (IR input: 8 bits, unsigned,
scale 1/16) and the float model sees pixel / 16, so both see exactly the same values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

INPUT_BITS = 8
INPUT_SCALE = 1 / 16
SPLIT_SEED = 0  # the held-out split never depends on the training seed, so runs are comparable
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """Integer images int64 [N, 1, 8, 8] (0..16) and labels int64 [N]."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_split() -> Split:
    """Deterministic stratified 80/20 split."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.int64).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    if x.min() < 0 or x.max() > 16:
        raise ValueError(f"digits pixels must be integers in 0..16, found {x.min()}..{x.max()}")
    tx, vx, ty, vy = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return Split(tx, ty, vx, vy)


def heldout_images() -> tuple[np.ndarray, np.ndarray]:
    """The held-out integer images (the exact input of ``hwgen.contract.reference.run``) and their labels."""
    s = load_split()
    return s.test_x, s.test_y


def to_float(x_int) -> torch.Tensor:
    """Integer pixels -> the float model's input (pixel * INPUT_SCALE, exact in float32)."""
    return torch.as_tensor(np.asarray(x_int), dtype=torch.float32) * INPUT_SCALE
