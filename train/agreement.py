"""The trained float model against its exported IR, layer by layer, with a bound that follows from float32
arithmetic rather than from what one machine printed.

Each layer is checked on its own: the model runs its real forward pass, but every quantizer's output is
replaced by the IR's integers (times the scale), so a layer sees exactly the input the integer network gives
it and a rounding flip upstream cannot carry into it. For a layer with ``n`` products per output, the float32
pre-activation p (in output steps) and the IR's exact value z differ by at most

    T = g·(γ_n + 3u)·S  +  8u·(g·S + |g·μ| + |β|) / s_out  +  2u·|p|  +  |z_model - z_IR|

with u = 2^-24, γ_n = n·u / (1 - n·u) (any summation order: blocked, pairwise, threaded or vectorised),
S = Σ|x·w| of the output, g = γ / (σ·s_out) from BatchNorm (at most 8 float32 operations in its eval form),
and the last term the gap between the model's real-valued constants and the IR's integer ones that a
correct export allows (each rounded to the nearest step of 2^-shift). Where p is farther than T from a
rounding boundary (k + 1/2) the model's integer and the IR's must be equal; nearer than that they may differ
by one. Pools, pass-through shortcuts and residual integers are exact: equal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hwgen.contract import ir, reference

from .models import TernaryCNN
from .quant import fake_quant
from .resnet import TernaryResNet, residual_add

U32 = 2.0 ** -24
BN_OPS = 8  # float32 operations between the conv sum and the BatchNorm output, with room to spare


@dataclass
class LayerCheck:
    """One layer: how many values were compared, how many lay within the bound of a rounding boundary,
    how many of those differ, and the violations (a difference the bound does not allow)."""
    name: str
    values: int
    near: int = 0
    differ: int = 0
    violations: int = 0
    max_bound: float = 0.0
    first: str = ""


def _gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def _exact(name: str, got: torch.Tensor, want: torch.Tensor) -> LayerCheck:
    bad = got != want
    first = ""
    if bad.any():
        i = tuple(int(v) for v in torch.nonzero(bad)[0])
        first = f"at {list(i)}: model {int(got[i])}, IR {int(want[i])}"
    return LayerCheck(name, got.numel(), violations=int(bad.sum()), first=first)


def _rounded(name: str, p: torch.Tensor, bound: torch.Tensor, q_model: torch.Tensor,
             q_ir: torch.Tensor) -> LayerCheck:
    """``p``: the model's pre-rounding value in output steps (float64); ``bound``: T per value."""
    dist = (p + 0.5 - torch.round(p + 0.5)).abs()
    near = dist <= bound
    diff = (q_model - q_ir).abs()
    bad = (diff > 0) & ~near | (diff > 1)
    check = LayerCheck(name, p.numel(), int(near.sum()), int((diff > 0).sum()), int(bad.sum()),
                       float(bound.max()) if bound.numel() else 0.0)
    if bad.any():
        i = tuple(int(v) for v in torch.nonzero(bad)[0])
        check.first = (f"at {list(i)}: model {int(q_model[i])}, IR {int(q_ir[i])}, pre-rounding {float(p[i]):.6f}, "
                       f"bound {float(bound[i]):.2e}")
    return check


def _ir_gap(layer: ir.Layer, acc: torch.Tensor) -> torch.Tensor:
    """Largest |acc·scale + offset − (acc·mul + bias − 2^(shift−1)) / 2^shift| a correct export allows: mul and
    the bias are the model's scale and offset rounded to the nearest step of 2^-shift, so each is off by at
    most half a step. An IR whose constants are farther off than that shows up as values that differ where
    the bound does not allow it."""
    step = torch.from_numpy(np.ldexp(0.5, -layer.shift.astype(np.int64))).view(1, -1, 1, 1)
    return (acc.abs() + 1) * step * (1 + 1e-6)


class _Recorder:
    """Forward hooks: record a module's input and output, or replace a quantizer's output by the IR's."""

    def __init__(self):
        self.inputs, self.outputs, self.handles = {}, {}, []

    def record(self, module, name):
        def hook(_, args, out):
            self.inputs[name], self.outputs[name] = args[0].detach(), out.detach()
        self.handles.append(module.register_forward_hook(hook))

    def record_input(self, module, name):
        def hook(_, args):
            self.inputs[name] = args[0].detach()
        self.handles.append(module.register_forward_pre_hook(hook))

    def force(self, module, name, value: torch.Tensor):
        def hook(_, args, out):
            self.outputs[name] = out.detach()
            return value.to(out.dtype)
        self.handles.append(module.register_forward_hook(hook))

    def close(self):
        for h in self.handles:
            h.remove()


def _conv_check(name: str, layer: ir.Layer, cb_conv, bn, x_int: torch.Tensor, y32: torch.Tensor, s_in: float,
                s_out: float, q_model: torch.Tensor, q_ir: torch.Tensor, p: torch.Tensor) -> LayerCheck:
    """Bound T (module docstring) for a ternary conv + BatchNorm whose float32 output is ``y32``."""
    levels, alpha = cb_conv.ternary()
    lv = levels.double()
    st, pad = cb_conv.stride, cb_conv.padding
    acc = F.conv2d(x_int.double(), lv, None, st, pad)  # integers below 2^53: exact
    big_s = F.conv2d(x_int.double().abs(), lv.abs(), None, st, pad) * (s_in * alpha) * (1 + 1e-12)
    sigma = torch.sqrt(bn.running_var.double() + bn.eps)
    g = (bn.weight.double() / sigma / s_out).view(1, -1, 1, 1)
    mu, beta = bn.running_mean.double().view(1, -1, 1, 1), bn.bias.double().view(1, -1, 1, 1)
    n = lv.shape[1] * lv.shape[2] * lv.shape[3]
    bound = (g.abs() * (_gamma(n) + 3 * U32) * big_s
             + BN_OPS * U32 * (g.abs() * big_s + (g * mu).abs() + beta.abs() / s_out)
             + 2 * U32 * p.abs()
             + _ir_gap(layer, acc))
    return _rounded(name, p, bound, q_model, q_ir)


def _fc_check(model, layer: ir.Layer, x_int: torch.Tensor, logits: torch.Tensor, s_in: float,
              out_scale: float, q_ir: torch.Tensor) -> LayerCheck:
    levels, alpha = model.fc.ternary()
    lv = levels.double()
    x = x_int.double().flatten(1)
    acc = (x @ lv.t()).view(len(x), -1, 1, 1)
    big_s = ((x.abs() @ lv.abs().t()) * (s_in * alpha) * (1 + 1e-12)).view(len(x), -1, 1, 1)
    b = (model.fc.bias.double() if model.fc.bias is not None else torch.zeros(lv.shape[0], dtype=torch.float64))
    p = logits.double().view(len(x), -1, 1, 1) / out_scale
    bview = b.view(1, -1, 1, 1)
    bound = ((_gamma(lv.shape[1] + 1) + 3 * U32) * big_s / out_scale + 2 * U32 * (bview.abs() / out_scale + p.abs())
             + _ir_gap(layer, acc))
    return _rounded("fc", p, bound, torch.floor(p + 0.5).long(), q_ir)


@torch.no_grad()
def compare(model: TernaryCNN | TernaryResNet, irm: ir.Model, x_int) -> list[LayerCheck]:
    """Every IR layer of ``model``'s export checked against the model on the integer images ``x_int``."""
    was = model.training
    model.eval()
    outs = reference.run(irm, x_int)
    x_int = torch.as_tensor(np.asarray(x_int), dtype=torch.int64)
    ints = {"input": x_int, **outs}
    grid = lambda name, s: ints[name].to(torch.float32) * s
    rec = _Recorder()
    try:
        checks = (_resnet_checks if isinstance(model, TernaryResNet) else _cnn_checks)(model, irm, ints, grid, rec)
    finally:
        rec.close()
        model.train(was)
    order = {l.name: i for i, l in enumerate(irm.layers)}
    return sorted(checks, key=lambda c: order[c.name])


def _q(out: torch.Tensor, s: float) -> torch.Tensor:
    """A quantizer's output q*s back to q: exact, q*s is within half an ulp of the grid point."""
    return torch.round(out.double() / s).long()


def _cnn_checks(model: TernaryCNN, irm, ints, grid, rec) -> list[LayerCheck]:
    names = model.block_names()
    s_ins = [model.input_scale] + [b.act.scale for b in model.blocks[:-1]]
    for name, block in zip(names, model.blocks):
        rec.record(block.bn, name)
        rec.force(block.act, name + "/q", grid(name, block.act.scale))
    rec.force(model.pool, "avgpool", grid("avgpool", model.blocks[-1].act.scale))
    rec.record(model.fc, "fc")
    model(grid("input", model.input_scale))
    checks = []
    for name, block, s_in in zip(names, model.blocks, s_ins):
        layer, s = irm.layer(name), block.act.scale
        y = rec.outputs[name]
        checks.append(_conv_check(name, layer, block.conv, block.bn, ints[layer.source], y, s_in, s,
                                  _q(rec.outputs[name + "/q"], s), ints[name], y.double() / s))
    checks.append(_exact("avgpool", _q(rec.outputs["avgpool"], model.blocks[-1].act.scale), ints["avgpool"]))
    checks.append(_fc_check(model, irm.layer("fc"), ints["avgpool"], rec.outputs["fc"],
                            model.blocks[-1].act.scale, irm.meta["logit_scale"], ints["fc"]))
    return checks


def _resnet_checks(model: TernaryResNet, irm, ints, grid, rec) -> list[LayerCheck]:
    s_stem = model.stem_act.scale
    rec.record(model.stem, "stem")
    rec.force(model.stem_act, "stem/q", grid("stem", s_stem))
    for name, b in zip(model.block_names, model.blocks):
        rec.record(b.conv1, f"{name}_conv1")
        rec.force(b.act1, f"{name}_conv1/q", grid(f"{name}_conv1", b.act1.scale))
        rec.record(b.conv2, f"{name}_conv2")
        rec.force(b, f"{name}/out", grid(f"{name}_conv2", b.act_out.scale))
        if b.down is not None:
            rec.record(b.down, f"{name}_down")
        rec.record_input(b, f"{name}/in")
    last = model.blocks[-1].act_out.scale
    rec.force(model.pool, "avgpool", grid("avgpool", last))
    rec.record(model.fc, "fc")
    model(grid("input", model.input_scale))
    checks = [_conv_check("stem", irm.layer("stem"), model.stem.conv, model.stem.bn, ints["input"],
                          rec.outputs["stem"], model.input_scale, s_stem, _q(rec.outputs["stem/q"], s_stem),
                          ints["stem"], rec.outputs["stem"].double() / s_stem)]
    if model.use_maxpool:
        checks.append(_exact("maxpool", _q(rec.inputs[f"{model.block_names[0]}/in"], s_stem), ints["maxpool"]))
    for name, b in zip(model.block_names, model.blocks):
        s_in, s_h, s_out = b.act_in.scale, b.act1.scale, b.act_out.scale
        x_name = irm.layer(f"{name}_conv1").source
        conv1 = irm.layer(f"{name}_conv1")
        y1 = rec.outputs[f"{name}_conv1"]
        checks.append(_conv_check(conv1.name, conv1, b.conv1.conv, b.conv1.bn, ints[x_name], y1, s_in, s_h,
                                  _q(rec.outputs[f"{name}_conv1/q"], s_h), ints[conv1.name], y1.double() / s_h))
        conv2 = irm.layer(f"{name}_conv2")
        if b.kind == "A":  # the model's subsample-and-pad against the IR's pass-through layer
            short = b.shortcut(rec.inputs[f"{name}/in"])
            checks.append(_exact(conv2.residual, _q(short, s_out), ints[conv2.residual]))
        elif b.kind == "B":
            down = irm.layer(f"{name}_down")
            yd = rec.outputs[down.name]
            half = 1 << (b.short_bits - 1)
            checks.append(_conv_check(down.name, down, b.down.conv, b.down.bn, ints[x_name], yd, s_in, s_out,
                                      _q(fake_quant(yd, s_out, -half, half - 1), s_out), ints[down.name],
                                      yd.double() / s_out))
        main = rec.outputs[conv2.name]
        q2 = _q(residual_add(main, grid(conv2.residual, s_out), s_out, b.act_out.hi), s_out)
        checks.append(_conv_check(conv2.name, conv2, b.conv2.conv, b.conv2.bn, ints[conv2.source], main, s_h, s_out,
                                  q2, ints[conv2.name], main.double() / s_out))
    checks.append(_exact("avgpool", _q(rec.outputs["avgpool"], last), ints["avgpool"]))
    checks.append(_fc_check(model, irm.layer("fc"), ints["avgpool"], rec.outputs["fc"], last,
                            irm.meta["logit_scale"], ints["fc"]))
    return checks
