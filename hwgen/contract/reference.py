"""The integer reference: executes an IR exactly, in int64, and returns every layer's output.

This module *defines* the integer semantics the hardware must match (docs/design.md §4):
    acc = sum(ternary * activation)                       conv / linear / avgpool (sum over the map)
    y   = clamp((acc * mul + bias) >> shift, lo, hi)      per output channel, >> is floor (arithmetic)
    maxpool: y = max over the window (padding never wins)
lo/hi come from the layer's out_bits and signedness; ReLU raises lo to 0.
A full-precision layer (``precision`` "float") is evaluated in float64, y = clamp(floor(acc + offset + 1/2)):
deterministic, but not integer semantics; the generator does not build such layers.
"""
from __future__ import annotations

import numpy as np
import torch

from .ir import Layer, Model, acc_bound, input_range, value_range
from .encoding import output_stream
from .mapping import conv_out_size

_INT64_LIMIT = 1 << 63
_FLOAT64_EXACT = 1 << 53  # every integer of smaller magnitude is exact in float64


def conv(x: torch.Tensor, w: torch.Tensor, stride: int, pad: int, bound: int) -> torch.Tensor:
    """Exact integer convolution. When ``bound`` (the largest |partial sum| possible) is below 2^53 every
    partial sum is an integer float64 holds exactly, so float64 conv2d (im2col and dgemm) is exact in any
    summation order, and much faster than the int64 path used otherwise."""
    if bound < _FLOAT64_EXACT:
        return torch.nn.functional.conv2d(x.double(), w.double(), stride=stride, padding=pad).to(torch.int64)
    return conv_int64(x, w, stride, pad)


def conv_int64(x: torch.Tensor, w: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """Exact int64 convolution as a sum of k*k shifted channel contractions."""
    k = w.shape[-1]
    ho, wo = (conv_out_size(n, k, stride, pad) for n in x.shape[2:])
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    acc = torch.zeros((x.shape[0], w.shape[0], ho, wo), dtype=torch.int64)
    for ky in range(k):
        for kx in range(k):
            tap = x[:, :, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            acc += torch.einsum("oc,bchw->bohw", w[:, :, ky, kx], tap)
    return acc


def _requant(layer: Layer, acc: torch.Tensor, in_max: int, res: torch.Tensor | None = None) -> torch.Tensor:
    mul, bias, shift = (torch.from_numpy(a).view(1, -1, 1, 1) for a in (layer.mul, layer.bias, layer.shift))
    worst = acc_bound(layer, in_max) * int(np.abs(layer.mul).max()) + int(np.abs(layer.bias).max())
    if worst >= _INT64_LIMIT:
        raise OverflowError(f"layer '{layer.name}': requantization can reach {worst}, beyond int64")
    lo, hi = layer.out_range
    y = torch.bitwise_right_shift(acc * mul + bias, shift)
    return torch.clamp(y if res is None else y + res, lo, hi)


def _float_layer(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    w = torch.from_numpy(layer.weight).double()
    if layer.kind == "linear":
        acc = (x.flatten(1).double() @ w.T).view(x.shape[0], -1, 1, 1)
    else:
        acc = torch.nn.functional.conv2d(x.double(), w, stride=layer.stride, padding=layer.padding)
    y = torch.floor(acc + torch.from_numpy(layer.offset).double().view(1, -1, 1, 1) + 0.5)
    lo, hi = layer.out_range
    return torch.clamp(y, lo, hi).to(torch.int64)


def run_layer(model: Model, layer: Layer, x: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
    if layer.precision == "float":
        return _float_layer(layer, x)
    lo, hi = input_range(model, layer.source)
    in_max = max(abs(lo), abs(hi))
    if layer.kind == "maxpool":
        pad = layer.padding
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=lo - 1)
        return torch.nn.functional.max_pool2d(padded.double(), layer.kernel, layer.stride).to(torch.int64)
    if layer.kind == "avgpool":
        acc = x.sum(dim=(2, 3), keepdim=True)
    elif layer.kind == "linear":
        acc = torch.einsum("oc,bc->bo", torch.from_numpy(layer.weight.astype(np.int64)), x.flatten(1))
        acc = acc.view(acc.shape[0], -1, 1, 1)
    else:
        acc = conv(x, torch.from_numpy(layer.weight.astype(np.int64)), layer.stride, layer.padding,
                   acc_bound(layer, in_max))
    return _requant(layer, acc, in_max, res)


def run(model: Model, images) -> dict[str, torch.Tensor]:
    """``images``: integers [B, C, H, W] (or [C, H, W]) within the input's range. Returns every layer's
    output as int64 [B, C, H, W], keyed by layer name, in network order."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.int64)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != tuple(model.input.shape):
        raise ValueError(f"input must be [B, {', '.join(map(str, model.input.shape))}], found {list(x.shape)}")
    lo, hi = value_range(model.input.bits, model.input.signed)
    if x.numel() and (x.min() < lo or x.max() > hi):
        raise ValueError(f"input values must be in [{lo}, {hi}], found [{int(x.min())}, {int(x.max())}]")
    outs = {"input": x}
    for layer in model.layers:
        res = outs[layer.residual] if layer.residual is not None else None
        outs[layer.name] = run_layer(model, layer, outs[layer.source], res)
    del outs["input"]
    return outs


def predict(model: Model, images) -> torch.Tensor:
    """Class index per image: argmax of the last layer (first index on ties)."""
    last = run(model, images)[model.layers[-1].name]
    return last.flatten(1).argmax(dim=1)


def expected_beats(model: Model, images: np.ndarray) -> list[list[int]]:
    """Per image, the network's result values in output-stream order (``encoding.output_stream``)."""
    last = run(model, images)[model.layers[-1].name].numpy()
    return [output_stream(img) for img in last]
