"""Trained ``TernaryCNN`` -> ``hwgen.ir.Model``: ternary weights, group masks and per-channel integer
requantization with BatchNorm, the ternary scale α and the activation scales folded in (DESIGN.md §4).

For a conv with input scale s_in, ternary scale α, BatchNorm (γ, β, μ, σ = sqrt(var + eps)) and output
scale s_out, the float model computes relu(γ (α s_in acc - μ) / σ + β) and quantizes it to s_out, so
    q_out = round_half_up(acc * α s_in γ / (σ s_out) + (β - γ μ / σ) / s_out)   clamped to [0, 2^bits - 1].
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hwgen import ir
from hwgen.encoding import requant_constants
from hwgen.mapping import num_blocks

from .models import TernaryCNN
from .quant import ternarize

LOGIT_BITS = 16
LOGIT_TARGET = 16000  # largest calibrated |logit| maps here, leaving 2x headroom below 2^15


def _requant(scale: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
    consts = [requant_constants(float(s), float(b)) for s, b in zip(scale, offset)]
    mul, bias, shift = (np.array(c, np.int64) for c in zip(*consts))
    return {"mul": mul, "bias": bias, "shift": shift}


def _conv_out(n: int, k: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - k) // stride + 1


@torch.no_grad()
def logit_scale(model: TernaryCNN, x_float: torch.Tensor) -> float:
    """Scale of one integer logit step: the largest |logit| seen on ``x_float`` maps to LOGIT_TARGET."""
    was = model.training
    model.eval()
    peak = float(model(x_float).abs().max())
    model.train(was)
    return max(peak, 1e-6) / LOGIT_TARGET


@torch.no_grad()
def export(model: TernaryCNN, lanes: int, masks: dict[str, np.ndarray], out_scale: float,
           meta: dict | None = None) -> ir.Model:
    """Build and validate the IR. ``masks``: bool [O, J] per pruned layer name (others keep every group);
    ``out_scale``: the logit step from :func:`logit_scale`."""
    if not math.isfinite(out_scale) or out_scale <= 0:
        raise ValueError(f"logit scale must be a positive finite number, found {out_scale}")
    layers, source, s_in = [], "input", model.input_scale
    shape = tuple(model.in_shape)
    for name, block in zip(model.block_names(), model.blocks):
        conv, bn = block.conv, block.bn
        t, alpha = ternarize(conv.weight, conv.delta)
        o = t.shape[0]
        mask = masks.get(name, np.ones((o, num_blocks(t.shape[1], lanes)), bool))
        sigma = torch.sqrt(bn.running_var.double() + bn.eps)
        gamma, beta, mu = bn.weight.double(), bn.bias.double(), bn.running_mean.double()
        s_out = block.act.scale
        scale = alpha * s_in * gamma / sigma / s_out
        offset = (beta - gamma * mu / sigma) / s_out
        k, st, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        out_shape = (o, _conv_out(shape[1], k, st, p), _conv_out(shape[2], k, st, p))
        layers.append(ir.Layer(
            name=name, kind="conv", source=source, in_shape=shape, out_shape=out_shape,
            out_bits=block.act.bits, out_signed=False, relu=True, kernel=k, stride=st, padding=p,
            weight=t.numpy().astype(np.int8), mask=np.asarray(mask, bool),
            **_requant(scale.numpy(), offset.numpy())))
        source, shape, s_in = name, out_shape, s_out

    # Global average pool: mean of the integers, rounded half up, on the same grid (scale unchanged).
    c, h, w = shape
    act = model.blocks[-1].act
    layers.append(ir.Layer(
        name="avgpool", kind="avgpool", source=source, in_shape=shape, out_shape=(c, 1, 1),
        out_bits=act.bits, out_signed=False, relu=False,
        **_requant(np.full(c, 1.0 / (h * w)), np.zeros(c))))

    fc = model.fc
    t, alpha = ternarize(fc.weight, fc.delta)
    o = t.shape[0]
    bias = fc.bias.double().numpy() if fc.bias is not None else np.zeros(o)
    layers.append(ir.Layer(
        name="fc", kind="linear", source="avgpool", in_shape=(c, 1, 1), out_shape=(o, 1, 1),
        out_bits=LOGIT_BITS, out_signed=True, relu=False,
        weight=t.numpy().astype(np.int8), mask=masks.get("fc", np.ones((o, num_blocks(c, lanes)), bool)),
        **_requant(np.full(o, alpha * s_in / out_scale), bias / out_scale)))

    spec = ir.InputSpec(tuple(model.in_shape), model.input_bits, False, model.input_scale)
    meta = {"logit_scale": out_scale, **(meta or {})}
    return ir.validate(ir.Model(model.name, lanes, spec, tuple(layers), meta))
