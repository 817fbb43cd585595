"""Ternary CNNs whose eval-mode forward pass is exactly what the exported integer network computes.

Every conv block is ternary conv (no bias) -> BatchNorm -> ReLU -> 8-bit activation fake-quant; then a
global average pool that rounds back onto its input's activation grid, then a ternary linear classifier
with a float bias. ``export.py`` turns each of these into one IR layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .quant import ActQuant, TernaryConv2d, TernaryLinear, round_half_up


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    stride: int
    padding: int


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, spec: ConvSpec, act_bits: int):
        super().__init__()
        self.conv = TernaryConv2d(in_channels, spec.out_channels, spec.kernel, spec.stride, spec.padding)
        self.bn = nn.BatchNorm2d(spec.out_channels)
        self.act = ActQuant(act_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.relu(self.bn(self.conv(x))))


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


class TernaryCNN(nn.Module):
    """Conv blocks, global average pool, linear classifier. ``input_scale``: the float input is the integer
    input times this (recorded in the IR's input spec)."""

    def __init__(self, name: str, in_shape: tuple[int, int, int], convs: list[ConvSpec], classes: int,
                 input_scale: float, input_bits: int = 8, act_bits: int = 8):
        super().__init__()
        self.name, self.in_shape, self.specs = name, tuple(in_shape), list(convs)
        self.input_scale, self.input_bits, self.act_bits = input_scale, input_bits, act_bits
        blocks, c = [], in_shape[0]
        for spec in convs:
            blocks.append(ConvBlock(c, spec, act_bits))
            c = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.pool = GridAvgPool(self.blocks[-1].act)
        self.fc = TernaryLinear(c, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def block_names(self) -> list[str]:
        return [f"conv{i + 1}" for i in range(len(self.blocks))]

    def prunable(self) -> dict[str, TernaryConv2d]:
        """Convs under the group penalty and pruning: all but the first (the classifier is separate)."""
        return {name: b.conv for name, b in list(zip(self.block_names(), self.blocks))[1:]}


DIGITS_CONVS = [ConvSpec(16, 3, 1, 1), ConvSpec(32, 3, 2, 1), ConvSpec(32, 3, 1, 1), ConvSpec(64, 1, 1, 0)]


def digits_cnn(input_scale: float = 1 / 16) -> TernaryCNN:
    """8x8 digits: conv1 1->16 3x3, conv2 16->32 3x3/2, conv3 32->32 3x3, conv4 32->64 1x1, GAP, fc 64->10."""
    return TernaryCNN("digits", (1, 8, 8), DIGITS_CONVS, 10, input_scale)


MODELS = {"digits": digits_cnn}
