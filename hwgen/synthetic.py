"""Seeded synthetic networks: ternary weights, PE-wise group pruning, calibrated requantization.

Used by tests and by ``hwgen build --model`` when no trained IR is given, so hardware work never waits for
training. The requant constants are calibrated on seeded random inputs so activations use their range.
"""
from __future__ import annotations

import numpy as np
import torch

from . import mapping, reference
from .encoding import requant_constants
from .ir import InputSpec, Layer, Model, validate


def _calibrate(model_so_far: Model, layer: Layer, x: torch.Tensor, rng: np.random.Generator) -> Layer:
    """Pick per-channel requant so the 99th percentile of |acc| maps near the top of the output range."""
    probe = Layer(**{**layer.__dict__, "mul": np.ones(layer.out_shape[0], np.int64),
                     "bias": np.zeros(layer.out_shape[0], np.int64), "shift": np.zeros(layer.out_shape[0], np.int64),
                     "out_bits": 32, "out_signed": True, "relu": False})
    acc = reference.run_layer(model_so_far, probe, x).double()
    per_channel = acc.transpose(0, 1).reshape(acc.shape[1], -1)
    spread = torch.quantile(per_channel.abs(), 0.99, dim=1).clamp(min=1.0).numpy()
    lo, hi = layer.out_range
    consts = [requant_constants(0.9 * hi / s, float(rng.integers(-2, 3))) for s in spread]
    mul, bias, shift = (np.array(c, np.int64) for c in zip(*consts))
    return Layer(**{**layer.__dict__, "mul": mul, "bias": bias, "shift": shift})


def _ternary(rng, shape, lanes, pe, density, balanced):
    w = rng.choice(np.array([-1, 0, 1], np.int8), size=shape, p=[0.3, 0.4, 0.3])
    scores = rng.random((shape[0], mapping.num_blocks(shape[1], lanes)))
    if balanced:
        mask = mapping.balanced_mask(scores, pe, density)
    else:
        mask = scores < density
    wb = w.reshape(shape[0], shape[1], -1)
    for j, (s, e) in enumerate(mapping.block_bounds(shape[1], lanes)):
        wb[~mask[:, j], s:e] = 0
    return wb.reshape(shape), mask


def chain_model(name: str, input_shape, convs, classes: int, *, lanes=16, pe=16, density=0.5,
                balanced=True, seed=0, act_bits=8, calib_images=32) -> Model:
    """A chain: convs given as (out_channels, kernel, stride, padding), then global avgpool and a linear
    classifier with signed 16-bit outputs."""
    rng = np.random.default_rng(seed)
    spec = InputSpec(tuple(input_shape), act_bits, False, 1.0 / 255)
    hi_in = (1 << act_bits) - 1
    x = torch.from_numpy(rng.integers(0, hi_in + 1, size=(calib_images, *input_shape)))
    model = Model(name, lanes, spec, ())
    shape, source = tuple(input_shape), "input"

    def add(layer, xin):
        nonlocal model, shape, source
        if layer.mul is not None:
            layer = _calibrate(model, layer, xin, rng)
        model = Model(name, lanes, spec, model.layers + (layer,))
        shape, source = layer.out_shape, layer.name
        return reference.run_layer(model, layer, xin)

    for i, (out, k, stride, pad) in enumerate(convs):
        c, h, w = shape
        first = i == 0
        weight, mask = _ternary(rng, (out, c, k, k), lanes, pe, 1.0 if first else density, balanced)
        size = lambda n: (n + 2 * pad - k) // stride + 1
        x = add(Layer(f"conv{i + 1}", "conv", source, shape, (out, size(h), size(w)), act_bits, False, True,
                      k, stride, pad, weight, mask, np.ones(out, np.int64), np.zeros(out, np.int64),
                      np.zeros(out, np.int64)), x)
    c = shape[0]
    x = add(Layer("pool", "avgpool", source, shape, (c, 1, 1), act_bits, False, True, mul=np.ones(c, np.int64),
                  bias=np.zeros(c, np.int64), shift=np.zeros(c, np.int64)), x)
    weight, mask = _ternary(rng, (classes, c), lanes, pe, 1.0, balanced)
    add(Layer("fc", "linear", source, (c, 1, 1), (classes, 1, 1), 16, True, False, weight=weight, mask=mask,
              mul=np.ones(classes, np.int64), bias=np.zeros(classes, np.int64),
              shift=np.zeros(classes, np.int64)), x)
    return validate(Model(name, lanes, spec, model.layers, {"synthetic": True, "seed": seed,
                                                             "group_density": density}))
