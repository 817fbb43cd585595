"""Trained ``TernaryCNN`` or ``TernaryResNet`` -> ``hwgen.contract.ir.Model``: ternary weights, group masks and
per-channel integer requantization with BatchNorm, the ternary scale α and the activation scales folded in
(docs/design.md §4).

For a conv with input scale s_in, ternary scale α, BatchNorm (γ, β, μ, σ = sqrt(var + eps)) and output
scale s_out, the float model computes relu(γ (α s_in acc - μ) / σ + β) and quantizes it to s_out, so
    q_out = round_half_up(acc * α s_in γ / (σ s_out) + (β - γ μ / σ) / s_out)   clamped to [0, 2^bits - 1].
Residual networks: the add conv (``<block>_conv2``) carries ``residual`` = its shortcut layer, whose integers
are already on s_out (see ``resnet.py`` for why the scales are shared).
Residual expansion: a layer's weight is its summed integer levels in [-tex, tex] and its ``tex`` is the
layer's; α is the one scale shared by the branches (``quant.threshold_and_scale``), so the folding is unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hwgen.contract import ir
from hwgen.contract.encoding import average_constants, requant_constants
from hwgen.contract.mapping import conv_out_size, kept_groups, num_blocks

from .models import TernaryCNN, TernaryResNet
from .quant import TernaryConv2d, TernaryLinear

LOGIT_BITS = 16
LOGIT_TARGET = 16000  # largest calibrated |logit| maps here, leaving 2x headroom below 2^15


def _requant(scale: np.ndarray, offset: np.ndarray) -> dict[str, np.ndarray]:
    consts = [requant_constants(float(s), float(b)) for s, b in zip(scale, offset)]
    mul, bias, shift = (np.array(c, np.int64) for c in zip(*consts))
    return {"mul": mul, "bias": bias, "shift": shift}


@torch.no_grad()
def logit_scale(model: TernaryCNN, x_float: torch.Tensor) -> float:
    """Scale of one integer logit step: the largest |logit| seen on ``x_float`` maps to LOGIT_TARGET."""
    was = model.training
    model.eval()
    peak = float(model(x_float).abs().max())
    model.train(was)
    return max(peak, 1e-6) / LOGIT_TARGET


def _float_layer(name: str, kind: str, source: str, shape: tuple, out_shape: tuple, weight: torch.Tensor,
                 scale: torch.Tensor, offset: torch.Tensor, lanes: int, **fields) -> ir.Layer:
    """A full-precision layer (``--float-first-last``): y = round(conv(x_int, weight * scale) + offset), the
    per-channel ``scale`` folding BatchNorm and the activation scales into the float32 weight."""
    per_out = (-1,) + (1,) * (weight.dim() - 1)
    w = (weight.double() * scale.view(per_out)).float().numpy()
    return ir.Layer(name=name, kind=kind, source=source, in_shape=tuple(shape), out_shape=out_shape,
                    precision="float", weight=w, offset=offset.float().numpy(),
                    mask=np.ones((w.shape[0], num_blocks(w.shape[1], lanes)), bool), **fields)


def _conv(name: str, source: str, shape: tuple, cb, s_in: float, s_out: float, lanes: int, masks: dict, *,
          bits: int, signed: bool = False, relu: bool = True, residual: str | None = None) -> ir.Layer:
    """One conv + BatchNorm (``cb.conv``, ``cb.bn``) as an IR conv whose requantization lands on s_out."""
    conv, bn = cb.conv, cb.bn
    sigma = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma, beta, mu = bn.weight.double(), bn.bias.double(), bn.running_mean.double()
    offset = (beta - gamma * mu / sigma) / s_out
    k, st, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    o = conv.weight.shape[0]
    out_shape = (o, conv_out_size(shape[1], k, st, p), conv_out_size(shape[2], k, st, p))
    if not isinstance(conv, TernaryConv2d):
        if residual is not None:
            raise ValueError(f"layer '{name}': a full-precision layer cannot take a residual")
        return _float_layer(name, "conv", source, shape, out_shape, conv.weight, s_in * gamma / sigma / s_out,
                            offset, lanes, out_bits=bits, out_signed=signed, relu=relu, kernel=k, stride=st,
                            padding=p)
    t, alpha = conv.ternary()
    tex = conv.tex
    mask = masks.get(name, np.ones((o, num_blocks(t.shape[1], lanes)), bool))
    scale = alpha * s_in * gamma / sigma / s_out
    return ir.Layer(name=name, kind="conv", source=source, in_shape=tuple(shape), out_shape=out_shape,
                    out_bits=bits, out_signed=signed, relu=relu, kernel=k, stride=st, padding=p,
                    weight=t.numpy().astype(np.int8), mask=np.asarray(mask, bool), residual=residual, tex=tex,
                    **_requant(scale.numpy(), offset.numpy()))


def _bn_convs(model: TernaryCNN | TernaryResNet):
    """(conv + BN module, input scale, output scale) of every conv the export folds a BatchNorm into."""
    if isinstance(model, TernaryResNet):
        yield model.stem, model.input_scale, model.stem_act.scale
        for b in model.blocks:
            if b.down is not None:
                yield b.down, b.act_in.scale, b.act_out.scale
            yield b.conv1, b.act_in.scale, b.act1.scale
            yield b.conv2, b.act1.scale, b.act_out.scale
    else:
        s_in = model.input_scale
        for block in model.blocks:
            yield block, s_in, block.act.scale
            s_in = block.act.scale


@torch.no_grad()
def snap_requant(model: TernaryCNN | TernaryResNet) -> None:
    """Rescale every BatchNorm's γ (by 1 ± a few 1e-6) so that the folded scale α s_in γ / (σ s_out) is exactly
    the 18-bit ``mul / 2^shift`` the IR will hold. Without it the float model and the integer network differ
    wherever a value lies within that rounding (~1e-3 of a step at 255) of a half step: a few values in a
    thousand. After it only float32 arithmetic differs (~1e-5 of a step). Call once after training, before
    measuring; export afterwards gives the same multipliers."""
    for cb, s_in, s_out in _bn_convs(model):
        if not isinstance(cb.conv, TernaryConv2d):
            continue  # full precision: export refuses it anyway
        _, alpha = cb.conv.ternary()
        bn = cb.bn
        sigma = torch.sqrt(bn.running_var.double() + bn.eps)
        gamma, beta, mu = bn.weight.double(), bn.bias.double(), bn.running_mean.double()
        scale = (alpha * s_in * gamma / sigma / s_out).numpy()
        offset = ((beta - gamma * mu / sigma) / s_out).numpy()  # its size can bound the shift: pass it too
        consts = (requant_constants(float(v), float(o)) for v, o in zip(scale, offset))
        exact = np.array([m / 2.0 ** sh for m, _, sh in consts])
        ratio = np.divide(exact, scale, out=np.ones_like(scale), where=scale != 0)
        bn.weight.mul_(torch.from_numpy(ratio).to(bn.weight.dtype))


def _cnn_layers(model: TernaryCNN, lanes: int, masks: dict) -> tuple[list[ir.Layer], float]:
    layers, source, s_in, shape = [], "input", model.input_scale, tuple(model.in_shape)
    for name, block in zip(model.block_names(), model.blocks):
        layers.append(_conv(name, source, shape, block, s_in, block.act.scale, lanes, masks, bits=block.act.bits))
        source, shape, s_in = name, layers[-1].out_shape, block.act.scale
    return layers, s_in


def _identity_shortcut(name: str, source: str, shape: tuple, out: int, stride: int, bits: int,
                       lanes: int) -> ir.Layer:
    """Option A (subsample, zero channels) as an identity 1x1 strided conv with unit requantization: the
    integers pass through unchanged, as ``hwgen.frontends.synthetic`` builds it."""
    c, h, w = shape
    weight = np.zeros((out, c, 1, 1), np.int8)
    weight[np.arange(c), np.arange(c)] = 1
    one, zero = np.ones(out, np.int64), np.zeros(out, np.int64)
    return ir.Layer(name=name, kind="conv", source=source, in_shape=tuple(shape),
                    out_shape=(out, conv_out_size(h, 1, stride, 0), conv_out_size(w, 1, stride, 0)), out_bits=bits,
                    out_signed=False, relu=True, kernel=1, stride=stride, padding=0, weight=weight,
                    mask=kept_groups(weight, lanes), mul=one, bias=zero, shift=zero)


def _resnet_layers(model: TernaryResNet, lanes: int, masks: dict) -> tuple[list[ir.Layer], float]:
    bits = model.act_bits
    s = model.stem_act.scale
    layers = [_conv("stem", "input", model.in_shape, model.stem, model.input_scale, s, lanes, masks, bits=bits)]
    if model.use_maxpool:  # 3x3/2, pad 1; no requantization, so it keeps its source's bits and scale
        c, h, w = layers[-1].out_shape
        layers.append(ir.Layer(name="maxpool", kind="maxpool", source="stem", in_shape=(c, h, w),
                               out_shape=(c, conv_out_size(h, 3, 2, 1), conv_out_size(w, 3, 2, 1)), out_bits=bits,
                               out_signed=False, relu=True, kernel=3, stride=2, padding=1))
    for name, b in zip(model.block_names, model.blocks):
        x, shape = layers[-1].name, layers[-1].out_shape
        s_in, s_out, s_h = b.act_in.scale, b.act_out.scale, b.act1.scale
        if b.kind == "identity":
            skip = x
        elif b.kind == "A":
            layers.append(_identity_shortcut(f"{name}_short", x, shape, b.cout, b.stride, bits, lanes))
            skip = layers[-1].name
        else:  # a real conv: signed, no ReLU, requantized straight onto the block output's scale
            layers.append(_conv(f"{name}_down", x, shape, b.down, s_in, s_out, lanes, masks,
                                bits=b.short_bits, signed=True, relu=False))
            skip = layers[-1].name
        layers.append(_conv(f"{name}_conv1", x, shape, b.conv1, s_in, s_h, lanes, masks, bits=bits))
        layers.append(_conv(f"{name}_conv2", layers[-1].name, layers[-1].out_shape, b.conv2, s_h, s_out, lanes,
                            masks, bits=bits, residual=skip))
    return layers, model.blocks[-1].act_out.scale


@torch.no_grad()
def export(model: TernaryCNN | TernaryResNet, lanes: int, masks: dict[str, np.ndarray], out_scale: float,
           meta: dict | None = None) -> ir.Model:
    """Build and validate the IR. ``masks``: bool [O, J] per pruned layer name (others keep every group);
    ``out_scale``: the logit step from :func:`logit_scale`."""
    if not math.isfinite(out_scale) or out_scale <= 0:
        raise ValueError(f"logit scale must be a positive finite number, found {out_scale}")
    if isinstance(model, TernaryResNet):
        layers, s_in = _resnet_layers(model, lanes, masks)
    else:
        layers, s_in = _cnn_layers(model, lanes, masks)
    source, shape = layers[-1].name, layers[-1].out_shape

    # Global average pool: mean of the integers, rounded half up, on the same grid (scale unchanged); the
    # float model's GridAvgPool applies the same constants.
    c, h, w = shape
    lo, hi = ir.value_range(model.act_bits, False)
    mul, bias, shift = (np.full(c, v, np.int64) for v in average_constants(h * w, lo, hi))
    layers.append(ir.Layer(
        name="avgpool", kind="avgpool", source=source, in_shape=shape, out_shape=(c, 1, 1),
        out_bits=model.act_bits, out_signed=False, relu=False, mul=mul, bias=bias, shift=shift))

    fc = model.fc
    o = fc.weight.shape[0]
    bias = fc.bias.double() if fc.bias is not None else torch.zeros(o, dtype=torch.float64)
    logits = dict(out_bits=LOGIT_BITS, out_signed=True, relu=False)
    if not isinstance(fc, TernaryLinear):
        layers.append(_float_layer("fc", "linear", "avgpool", (c, 1, 1), (o, 1, 1), fc.weight,
                                   torch.full((o,), s_in / out_scale, dtype=torch.float64), bias / out_scale,
                                   lanes, **logits))
        return _finish(model, lanes, layers, out_scale, meta)
    t, alpha = fc.ternary()
    bias = bias.numpy()
    layers.append(ir.Layer(
        name="fc", kind="linear", source="avgpool", in_shape=(c, 1, 1), out_shape=(o, 1, 1), **logits,
        weight=t.numpy().astype(np.int8), mask=masks.get("fc", np.ones((o, num_blocks(c, lanes)), bool)),
        tex=fc.tex, **_requant(np.full(o, alpha * s_in / out_scale), bias / out_scale)))
    return _finish(model, lanes, layers, out_scale, meta)


def _finish(model, lanes: int, layers: list[ir.Layer], out_scale: float, meta: dict | None) -> ir.Model:
    spec = ir.InputSpec(tuple(model.in_shape), model.input_bits, False, model.input_scale)
    meta = {"logit_scale": out_scale, **(meta or {})}
    return ir.validate(ir.Model(model.name, lanes, spec, tuple(layers), meta))
