"""Random single-purpose networks for the property tests: one per layer kind, every shape and format drawn.

Weights are ternary (or 2*tex+1 levels) with PE-wise groups pruned, balanced or not; requantization is
calibrated on the case's own images so outputs use their range instead of clamping everywhere.
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from hwgen.contract import mapping, reference
from hwgen.contract.encoding import requant_constants
from hwgen.contract.ir import InputSpec, Layer, Model, validate, value_range
from hwgen.frontends.synthetic import TERNARY, accumulator_spread, prune_groups, ternary, with_requant

PE, LANES, TILE = 4, 8, 8
KINDS = ("conv", "linear", "avgpool", "maxpool", "residual")


def _weights(rng, out, c, k, density, balanced, tex=1):
    w = ternary(rng, (out, c, k, k))
    for _ in range(tex - 1):  # residual expansion, each extra level uniform
        w = w + rng.choice(TERNARY, size=w.shape) * (w != 0)
    return prune_groups(rng, w, LANES, PE, density, balanced)


def _calibrate(model: Model, layer: Layer, x: torch.Tensor, rng) -> Layer:
    """Per channel, the 99th percentile of |acc| maps to a random fraction of the output range."""
    hi = max(layer.out_range[1], 1)
    return with_requant(layer, [(rng.uniform(0.3, 1.3) * hi / s, rng.uniform(-3, 3))
                                for s in accumulator_spread(model, layer, x)])


@st.composite
def cases(draw, kind: str):
    """(model, images, description): a random network exercising ``kind``."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bits, signed = draw(st.integers(2, 8)), draw(st.booleans())
    c = draw(st.integers(1, 20))
    if kind == "linear":
        h = w = 1
    else:
        h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    if kind == "maxpool":
        signed = False  # max pooling needs a non-negative input
    spec = InputSpec((c, h, w), bits, signed, 1.0)
    lo, hi = value_range(bits, signed)
    images = rng.integers(lo, hi + 1, size=(2, c, h, w))
    model = Model(f"prop_{kind}", LANES, spec, ())
    out_bits, out_signed, relu = draw(st.integers(2, 16)), draw(st.booleans()), draw(st.booleans())
    density, balanced = draw(st.sampled_from([0.25, 0.5, 0.75, 1.0])), draw(st.booleans())
    fmt = dict(out_bits=out_bits, out_signed=out_signed, relu=relu)
    zeros = lambda n: np.zeros(n, np.int64)

    def add(layer, calibrate=True):
        nonlocal model
        x = torch.from_numpy(images) if layer.source == "input" else values[layer.source]
        if calibrate:
            layer = _calibrate(model, layer, x, rng)
        model = Model(model.name, LANES, spec, model.layers + (layer,))
        res = None if layer.residual is None else values[layer.residual]
        values[layer.name] = reference.run_layer(model, layer, x, res)

    values = {"input": torch.from_numpy(images)}
    if kind in ("conv", "residual"):
        k = draw(st.integers(1, 3)) if kind == "conv" else draw(st.sampled_from([1, 3]))
        stride = draw(st.integers(1, 2)) if kind == "conv" else 1
        pad = draw(st.integers(0, k - 1)) if kind == "conv" else k // 2
        h, w = max(h, k - 2 * pad), max(w, k - 2 * pad)  # at least one output pixel
        if (h, w) != spec.shape[1:]:
            spec = InputSpec((c, h, w), bits, signed, 1.0)
            images = rng.integers(lo, hi + 1, size=(2, c, h, w))
            values["input"] = torch.from_numpy(images)
            model = Model(model.name, LANES, spec, ())
        out = draw(st.integers(1, 20)) if kind == "conv" else draw(st.integers(1, 12))
        tex = draw(st.integers(1, 2))
        size = lambda n: mapping.conv_out_size(n, k, stride, pad)
        weight, mask = _weights(rng, out, c, k, density, balanced, tex)
        first = Layer(name="conv", kind="conv", source="input", in_shape=(c, h, w), out_shape=(out, size(h), size(w)),
                      kernel=k, stride=stride, padding=pad, weight=weight, mask=mask, mul=zeros(out),
                      bias=zeros(out), shift=zeros(out), tex=tex, **(fmt if kind == "conv" else
                                                                    dict(out_bits=bits, out_signed=False, relu=True)))
        add(first)
        if kind == "residual":  # back to the input's shape, plus the input itself before the clamp
            weight, mask = _weights(rng, c, out, k, density, balanced)
            add(Layer(name="conv_res", kind="conv", source="conv", in_shape=(out, h, w), out_shape=(c, h, w),
                      kernel=k, padding=pad, weight=weight, mask=mask, mul=zeros(c), bias=zeros(c), shift=zeros(c),
                      residual="input", out_bits=max(bits, out_bits), out_signed=signed or out_signed, relu=relu),
                calibrate=True)
            # then a 1x1 conv: the residual layer is an inner one, as in ResNets (lower refuses a residual on
            # the last layer when pe < lanes: the result memory's layout is not the residual's)
            weight, mask = _weights(rng, out, c, 1, 1.0, True)
            add(Layer(name="head", kind="conv", source="conv_res", in_shape=(c, h, w), out_shape=(out, h, w),
                      weight=weight, mask=mask, mul=zeros(out), bias=zeros(out), shift=zeros(out), **fmt))
    elif kind == "linear":
        out = draw(st.integers(1, 20))
        weight, mask = _weights(rng, out, c, 1, density, balanced)
        add(Layer(name="fc", kind="linear", source="input", in_shape=(c, 1, 1), out_shape=(out, 1, 1),
                  weight=weight[:, :, 0, 0], mask=mask, mul=zeros(out), bias=zeros(out), shift=zeros(out), **fmt))
    elif kind == "avgpool":
        scale = rng.uniform(0.5, 1.5) / (h * w) * max(value_range(out_bits, out_signed)[1], 1) / max(hi, 1)
        mul, bias, shift = requant_constants(scale, rng.uniform(-2, 2))
        full = lambda v: np.full(c, v, np.int64)
        add(Layer(name="pool", kind="avgpool", source="input", in_shape=(c, h, w), out_shape=(c, 1, 1),
                  mul=full(mul), bias=full(bias), shift=full(shift), **fmt), calibrate=False)
    else:
        k = draw(st.integers(1, 3))
        stride, pad = draw(st.integers(1, 2)), draw(st.integers(0, k - 1))
        h, w = max(h, k), max(w, k)
        spec = InputSpec((c, h, w), bits, False, 1.0)
        images = rng.integers(0, hi + 1, size=(2, c, h, w))
        size = lambda n: mapping.conv_out_size(n, k, stride, pad)
        model = Model(model.name, LANES, spec, (Layer(
            name="pool", kind="maxpool", source="input", in_shape=(c, h, w), out_shape=(c, size(h), size(w)),
            kernel=k, stride=stride, padding=pad, out_bits=bits, out_signed=False, relu=relu),))
    model = validate(model)
    return model, images, f"seed={seed} " + " | ".join(
        f"{l.kind} {list(l.in_shape)}->{list(l.out_shape)} k{l.kernel}/s{l.stride}/p{l.padding} tex{l.tex} "
        f"out {l.out_bits}{'s' if l.out_signed else 'u'}{' relu' if l.relu else ''}" for l in model.layers) + \
        f" | input {bits}{'s' if spec.signed else 'u'} density {density} {'balanced' if balanced else 'unbalanced'}"


# ---------------------------------------------------------------- one compiled model for all cases

from hwgen.contract.hardware import Capacity  # noqa: E402

CAPACITY = Capacity(layers=4, steps=1024, rq_words=16, locals=8, dim=16, buf_depth=2048, res_depth=1024, n_bufs=3,
                    act_bits=16, out_bits=32, acc_bits=32, bias_bits=48, shift_bits=6)
_COMPILED = {}


def mutation_net(seed: int = 11) -> Model:
    """Three layers (3x3 conv, strided 3x3 conv, 1x1 conv) with shift-0 requant, distinct per-channel
    constants, output widths from the worst case (nothing clamps) and inputs >= 1: any change of a
    weight, a requant constant or a descriptor changes some output value."""
    rng = np.random.default_rng(seed)
    spec = InputSpec((5, 6, 6), 2, False, 1.0)
    shapes = [(5, 6, 3, 1, 1), (6, 7, 3, 2, 1), (7, 5, 1, 1, 0)]  # c_in, c_out, k, stride, pad
    layers, h, in_max = [], 6, 3
    for i, (c, o, k, s, p) in enumerate(shapes):
        weight = rng.choice(np.array([-1, 1], np.int8), size=(o, c, k, k))
        mul, bias = rng.integers(1, 3, o), rng.permutation(np.arange(-4, 5))[:o]
        worst = c * k * k * in_max * 2 + 4
        bits = 32 if i == len(shapes) - 1 else worst.bit_length() + 1
        ho = (h + 2 * p - k) // s + 1
        layers.append(Layer(name=f"conv{i + 1}", kind="conv", source=layers[-1].name if layers else "input",
                            in_shape=(c, h, h), out_shape=(o, ho, ho), out_bits=bits, out_signed=True, relu=False,
                            kernel=k, stride=s, padding=p, weight=weight, mask=np.ones((o, 1), bool),
                            mul=mul.astype(np.int64), bias=bias.astype(np.int64), shift=np.zeros(o, np.int64)))
        h, in_max = ho, worst
    return validate(Model("mutation_net", LANES, spec, tuple(layers)))


def mutation_images(model: Model, count: int = 3, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 4, size=(count, *model.input.shape))


def compiled_model(tmp_path_factory):
    """(build folder, compiled model) of the capacity build, compiled once per test session."""
    if "model" not in _COMPILED:
        from hwgen.build.generate import BuildConfig, build
        from hwgen.sim.stream import compile_model

        out = tmp_path_factory.mktemp("capacity") / "anchor"
        build(mutation_net(), BuildConfig(PE, LANES, TILE, CAPACITY), out)
        _COMPILED["model"] = (out, compile_model(out))
    return _COMPILED["model"]
