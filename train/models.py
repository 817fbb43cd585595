"""Ternary CNNs whose eval-mode forward pass is exactly what the exported integer network computes.

Every conv block is ternary conv (no bias) -> BatchNorm -> ReLU -> 8-bit activation fake-quant; then a
global average pool that rounds back onto its input's activation grid, then a ternary linear classifier
with a float bias. ``export.py`` turns each of these into one IR layer. Residual networks are in
``resnet.py``; ``MODELS`` names the models ``python -m train`` can train (on the digits data).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from hwgen.frontends import zoo

from .quant import ActQuant, GridAvgPool, TernaryConv2d, TernaryLinear  # GridAvgPool: re-exported


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    stride: int
    padding: int


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, spec: ConvSpec, act_bits: int, ternary: bool = True):
        super().__init__()
        cls = TernaryConv2d if ternary else nn.Conv2d
        self.conv = cls(in_channels, spec.out_channels, spec.kernel, spec.stride, spec.padding, bias=False)
        self.bn = nn.BatchNorm2d(spec.out_channels)
        self.act = ActQuant(act_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.relu(self.bn(self.conv(x))))


class TernaryCNN(nn.Module):
    """Conv blocks, global average pool, linear classifier. ``input_scale``: the float input is the integer
    input times this (recorded in the IR's input spec). ``float_first_last``: first conv and classifier in
    full precision (trainable, not exportable: the IR holds ternary weights only)."""

    def __init__(self, name: str, in_shape: tuple[int, int, int], convs: list[ConvSpec], classes: int,
                 input_scale: float, input_bits: int = 8, act_bits: int = 8, float_first_last: bool = False):
        super().__init__()
        self.name, self.in_shape, self.specs = name, tuple(in_shape), list(convs)
        self.input_scale, self.input_bits, self.act_bits = input_scale, input_bits, act_bits
        self.float_first_last = float_first_last
        blocks, c = [], in_shape[0]
        for i, spec in enumerate(convs):
            blocks.append(ConvBlock(c, spec, act_bits, ternary=not (float_first_last and i == 0)))
            c = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.pool = GridAvgPool(self.blocks[-1].act)
        self.fc = (nn.Linear if float_first_last else TernaryLinear)(c, classes)

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

    def weight_layers(self) -> dict[str, nn.Module]:
        """Every layer with weights, by IR layer name."""
        return {**dict(zip(self.block_names(), (b.conv for b in self.blocks))), "fc": self.fc}


DIGITS_CONVS = [ConvSpec(*conv) for conv in zoo.DIGITS_CONVS]  # the shape `hwgen build --model digits` builds


def digits_cnn(input_scale: float = 1 / 16, **options) -> TernaryCNN:
    """8x8 digits: conv1 1->16 3x3, conv2 16->32 3x3/2, conv3 32->32 3x3, conv4 32->64 1x1, GAP, fc 64->10."""
    return TernaryCNN("digits", (1, 8, 8), DIGITS_CONVS, 10, input_scale, **options)


# Residual models live in resnet.py; the ones trainable on the digits data are registered here.
from .resnet import RESNETS, TernaryResNet, digits_resnet  # noqa: E402  (resnet.py does not import this module)

MODELS = {"digits": digits_cnn, "digits_resnet": digits_resnet,
          **RESNETS}
