"""Seeded synthetic networks: ternary weights, PE-wise group pruning, calibrated requantization.

Used by tests and by ``hwgen build --model`` when no trained IR is given, so hardware work never waits for
training. Requant constants are calibrated on seeded random inputs so activations use their range.
"""
from __future__ import annotations

import numpy as np
import torch

from ..contract import mapping, reference
from ..contract.encoding import average_constants, requant_constants
from ..contract.ir import InputSpec, Layer, Model, input_range, validate
from ..contract.mapping import prunable

UNIT = (np.ones, np.zeros, np.zeros)  # mul, bias, shift of an exact pass-through
TERNARY = np.array([-1, 0, 1], np.int8)


def ternary(rng: np.random.Generator, shape) -> np.ndarray:
    """Random ternary weights, -1 and +1 with probability 0.3 each."""
    return rng.choice(TERNARY, size=shape, p=[0.3, 0.4, 0.3])


def zero_pruned(weight: np.ndarray, mask: np.ndarray, lanes: int) -> np.ndarray:
    """A copy of ``weight`` [out, c, ...] with the groups that ``mask`` [out, blocks] does not keep zeroed."""
    pruned = weight.copy()
    flat = pruned.reshape(*weight.shape[:2], -1)
    for j, (s, e) in enumerate(mapping.block_bounds(weight.shape[1], lanes)):
        flat[~mask[:, j], s:e] = 0
    return pruned


def prune_groups(rng: np.random.Generator, weight: np.ndarray, lanes: int, pe: int, density: float,
                 balanced: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(weight, kept mask [out, blocks]): groups pruned by random scores to ``density``, the same number
    kept for every PE (mapping.balanced_mask) when ``balanced``, else each kept with that probability."""
    scores = rng.random((weight.shape[0], mapping.num_blocks(weight.shape[1], lanes)))
    mask = mapping.balanced_mask(scores, pe, density) if balanced else scores < density
    return zero_pruned(weight, mask, lanes), mask


def accumulator_spread(model: Model, layer: Layer, x: torch.Tensor) -> np.ndarray:
    """Per output channel of ``layer`` (appended to ``model``), the 99th percentile of |accumulator| on the
    inputs ``x``, at least 1: what requantization calibrates against."""
    n = layer.out_shape[0]
    probe = Layer(**{**layer.__dict__, "mul": np.ones(n, np.int64), "bias": np.zeros(n, np.int64),
                     "shift": np.zeros(n, np.int64), "out_bits": 32, "out_signed": True, "relu": False,
                     "residual": None})
    acc = reference.run_layer(model, probe, x).double()
    return torch.quantile(acc.transpose(0, 1).reshape(n, -1).abs(), 0.99, dim=1).clamp(min=1.0).numpy()


def with_requant(layer: Layer, scales_offsets) -> Layer:
    """``layer`` with per-channel requant constants for the (scale, offset) pairs (encoding.requant_constants)."""
    consts = [requant_constants(scale, offset) for scale, offset in scales_offsets]
    mul, bias, shift = (np.array(c, np.int64) for c in zip(*consts))
    return Layer(**{**layer.__dict__, "mul": mul, "bias": bias, "shift": shift})


class NetBuilder:
    """Appends layers one at a time, running the reference on calibration images as it goes."""

    def __init__(self, name, input_shape, *, lanes=16, pe=16, density=0.5, balanced=True, seed=0,
                 act_bits=8, calib_images=4):
        self.rng = np.random.default_rng(seed)
        self.lanes, self.pe, self.density, self.balanced = lanes, pe, density, balanced
        self.act_bits = act_bits
        spec = InputSpec(tuple(input_shape), act_bits, False, 1.0 / 255)
        self.model = Model(name, lanes, spec, (), {"synthetic": True, "seed": seed, "group_density": density})
        hi = (1 << act_bits) - 1
        self.values = {"input": torch.from_numpy(self.rng.integers(0, hi + 1, size=(calib_images, *input_shape)))}
        self.last = "input"

    def shape(self, name=None):
        name = name or self.last
        return self.model.input.shape if name == "input" else self.model.layer(name).out_shape

    def _ternary(self, out, c, k, density):
        return prune_groups(self.rng, ternary(self.rng, (out, c, k, k)), self.lanes, self.pe, density, self.balanced)

    def _add(self, layer: Layer, calibrate: bool) -> str:
        x = self.values[layer.source]
        res = self.values[layer.residual] if layer.residual else None
        if calibrate:
            layer = self._calibrate(layer, x, 0.5 if res is not None else 0.9)
        self.model = Model(self.model.name, self.lanes, self.model.input, self.model.layers + (layer,),
                           self.model.meta)
        self.values[layer.name] = reference.run_layer(self.model, layer, x, res)
        self.last = layer.name
        return layer.name

    def _calibrate(self, layer: Layer, x, target: float) -> Layer:
        """Per channel, map the 99th percentile of |acc| to ``target`` of the output range."""
        hi = layer.out_range[1]
        return with_requant(layer, [(target * hi / s, float(self.rng.integers(-2, 3)))
                                    for s in accumulator_spread(self.model, layer, x)])

    def conv(self, out, k, stride=1, pad=None, *, source=None, residual=None, relu=True, dense=False,
             name=None, tex=1) -> str:
        source = source or self.last
        c, h, w = self.shape(source)
        pad = k // 2 if pad is None else pad
        weight, mask = self._ternary(out, c, k, 1.0 if dense else self.density)
        for _ in range(tex - 1):  # residual expansion: a sum of tex ternary draws, 2*tex+1 levels
            weight = weight + self._ternary(out, c, k, 1.0)[0] * (weight != 0)
        size = lambda n: mapping.conv_out_size(n, k, stride, pad)
        zeros = np.zeros(out, np.int64)
        return self._add(Layer(name or f"conv{len(self.model.layers)}", "conv", source, (c, h, w),
                               (out, size(h), size(w)), self.act_bits, False, relu, k, stride, pad,
                               weight.astype(np.int8), mask, zeros + 1, zeros, zeros, residual, tex),
                         calibrate=True)

    def shortcut_a(self, out, stride, *, source=None, name=None) -> str:
        """Option-A shortcut: subsample by ``stride`` and append zero channels, as an exact identity 1x1 conv."""
        source = source or self.last
        c, h, w = self.shape(source)
        weight = np.zeros((out, c, 1, 1), np.int8)
        weight[np.arange(c), np.arange(c)] = 1
        size = lambda n: mapping.conv_out_size(n, 1, stride, 0)
        return self._add(Layer(name or f"short{len(self.model.layers)}", "conv", source, (c, h, w),
                               (out, size(h), size(w)), self.act_bits, False, True, 1, stride, 0, weight,
                               mapping.kept_groups(weight, self.lanes), *(f(out, np.int64) for f in UNIT)),
                         calibrate=False)

    def maxpool(self, k, stride, pad) -> str:
        c, h, w = self.shape()
        size = lambda n: mapping.conv_out_size(n, k, stride, pad)
        return self._add(Layer(f"maxpool{len(self.model.layers)}", "maxpool", self.last, (c, h, w),
                               (c, size(h), size(w)), self.act_bits, False, True, k, stride, pad), calibrate=False)

    def avgpool(self) -> str:
        c, h, w = self.shape()
        mul, bias, shift = average_constants(h * w, *input_range(self.model, self.last))
        full = lambda v: np.full(c, v, np.int64)
        return self._add(Layer("pool", "avgpool", self.last, (c, h, w), (c, 1, 1), self.act_bits, False, True,
                               mul=full(mul), bias=full(bias), shift=full(shift)), calibrate=False)

    def linear(self, classes) -> str:
        c = self.shape()[0]
        weight, mask = self._ternary(classes, c, 1, 1.0)
        zeros = np.zeros(classes, np.int64)
        return self._add(Layer("fc", "linear", self.last, (c, 1, 1), (classes, 1, 1), 16, True, False,
                               weight=weight[:, :, 0, 0], mask=mask, mul=zeros + 1, bias=zeros, shift=zeros),
                         calibrate=True)

    def finish(self) -> Model:
        return validate(self.model)


def chain_model(name: str, input_shape, convs, classes: int, **options) -> Model:
    """A chain: convs given as (out_channels, kernel, stride, padding), the first dense, then global
    avgpool and a linear classifier with signed 16-bit outputs."""
    net = NetBuilder(name, input_shape, **options)
    for i, (out, k, stride, pad) in enumerate(convs):
        net.conv(out, k, stride, pad, dense=i == 0, name=f"conv{i + 1}")
    net.avgpool()
    net.linear(classes)
    return net.finish()


def _basic_block(net: NetBuilder, out: int, stride: int, shortcut: str) -> None:
    x = net.last
    c = net.shape(x)[0]
    if stride == 1 and c == out:
        skip = x
    elif shortcut == "A":
        skip = net.shortcut_a(out, stride, source=x)
    else:
        skip = net.conv(out, 1, stride, 0, source=x, relu=False)
    net.conv(out, 3, stride, source=x)
    net.conv(out, 3, 1, residual=skip)


def resnet_cifar(depth: int, input_size: int = 32, classes: int = 10, **options) -> Model:
    """ResNet-20/32/44/56 (He et al., CIFAR layout): 3 stages of (depth-2)/6 basic blocks, option-A shortcuts."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, not {depth}")
    net = NetBuilder(f"resnet{depth}", (3, input_size, input_size), **options)
    net.conv(16, 3, dense=True)
    for stage, width in enumerate((16, 32, 64)):
        for block in range((depth - 2) // 6):
            _basic_block(net, width, 2 if stage and not block else 1, "A")
    net.avgpool()
    net.linear(classes)
    return net.finish()


def resnet18(input_size: int = 224, classes: int = 1000, **options) -> Model:
    """ResNet-18 (ImageNet layout): 7x7/2 stem, 3x3/2 max pool, 4 stages of 2 blocks, 1x1 downsample."""
    net = NetBuilder("resnet18", (3, input_size, input_size), **options)
    net.conv(64, 7, 2, 3, dense=True)
    net.maxpool(3, 2, 1)
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            _basic_block(net, width, 2 if stage and not block else 1, "B")
    net.avgpool()
    net.linear(classes)
    return net.finish()


def with_unbalanced_pruning(model: Model, pe: int, seed: int = 0) -> Model:
    """The same network with paper-style (unbalanced) pruning: in every prunable layer the same number of
    groups is kept, chosen by score over the whole layer instead of per PE. Weights of newly kept groups
    are +1; requantization is unchanged. For cycle comparisons, not for accuracy."""
    rng = np.random.default_rng(seed)
    pruned = {id(l) for l in prunable(model.layers)}  # option-A shortcuts stay pass-throughs
    layers = list(model.layers)
    for i, l in enumerate(layers):
        if id(l) not in pruned or l.mask.all():
            continue
        scores = rng.random(l.mask.shape).ravel()
        mask = np.zeros(l.mask.size, bool)
        mask[np.argsort(-scores, kind="stable")[:int(l.mask.sum())]] = True
        mask = mask.reshape(l.mask.shape)
        layers[i] = Layer(**{**l.__dict__, "weight": zero_pruned(np.ones_like(l.weight), mask, model.lanes),
                             "mask": mask})
    return Model(model.name, model.lanes, model.input, tuple(layers), {**model.meta, "pruning": "unbalanced"})
