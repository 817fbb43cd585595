"""The integer reference against independent formulations."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from hwgen.contract import ir, reference
from hwgen.contract.encoding import requant_constants
from hwgen.contract.ir import InputSpec, Layer, Model


def test_float64_conv_path_equals_int64_path():
    gen = torch.Generator().manual_seed(0)
    for stride, pad, k in ((1, 1, 3), (2, 3, 7), (2, 0, 1)):
        x = torch.randint(-128, 256, (2, 37, 15, 15), generator=gen)
        w = torch.randint(-1, 2, (19, 37, k, k), generator=gen)
        assert torch.equal(reference.conv(x, w, stride, pad, bound=0), reference.conv_int64(x, w, stride, pad))


def _by_loops(model, images) -> dict[str, np.ndarray]:
    """Every layer's output from the IR's semantics (docs/design.md §4) in plain loops over numpy int64, using
    nothing of hwgen.contract.reference: acc = sum of weight * activation over the window's taps inside the map,
    y = clamp(((acc * mul + bias) >> shift) + residual, lo, hi) with lo = 0 under ReLU; maxpool takes the
    max over the window's taps inside the map (padding never wins)."""
    outs = {"input": np.asarray(images, np.int64)}
    for l in model.layers:
        x = outs[l.source]
        _, h, w = l.in_shape
        o, ho, wo = l.out_shape
        k, s, p = l.kernel, l.stride, l.padding
        taps = lambda oy, ox: [(ky, kx, oy * s + ky - p, ox * s + kx - p) for ky in range(k) for kx in range(k)
                               if 0 <= oy * s + ky - p < h and 0 <= ox * s + kx - p < w]
        acc = np.zeros((len(x), o, ho, wo), np.int64)
        if l.kind == "maxpool":
            for oy in range(ho):
                for ox in range(wo):
                    acc[:, :, oy, ox] = np.max([x[:, :, iy, ix] for _, _, iy, ix in taps(oy, ox)], axis=0)
            outs[l.name] = acc
            continue
        if l.kind == "conv":
            weight = l.weight.astype(np.int64)
            for oy in range(ho):
                for ox in range(wo):
                    for ky, kx, iy, ix in taps(oy, ox):
                        acc[:, :, oy, ox] += x[:, :, iy, ix] @ weight[:, :, ky, kx].T
        elif l.kind == "linear":
            acc[:, :, 0, 0] = x[:, :, 0, 0] @ l.weight.astype(np.int64).T
        else:  # avgpool: the sum over the map; mul and shift divide it
            for iy in range(h):
                for ix in range(w):
                    acc[:, :, 0, 0] += x[:, :, iy, ix]
        per_channel = lambda a: a.reshape(1, -1, 1, 1)
        y = (acc * per_channel(l.mul) + per_channel(l.bias)) >> per_channel(l.shift)  # arithmetic: floor
        if l.residual is not None:
            y = y + outs[l.residual]
        half = 1 << (l.out_bits - 1)
        lo, hi = (-half, half - 1) if l.out_signed else (0, 2 * half - 1)
        outs[l.name] = np.clip(y, max(lo, 0) if l.relu else lo, hi)
    del outs["input"]
    return outs


def _assert_equal_to_reference(model, images) -> dict:
    ref = reference.run(model, images)
    alt = _by_loops(model, images)
    assert list(ref) == list(alt)
    for name in ref:
        assert ref[name].shape == alt[name].shape and (ref[name].numpy() == alt[name]).all(), name
    return alt


def test_reference_matches_loops_on_a_digits_chain(small_model):
    x = torch.randint(0, 256, (5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    outs = _assert_equal_to_reference(small_model, x)
    # the network is not degenerate: outputs vary across images and use the range
    logits = outs["fc"].reshape(5, -1)
    assert len({tuple(r.tolist()) for r in logits}) == 5
    assert outs["conv3"].max() > 100


LANES = 4


def _random_layers(seed: int) -> Model:
    """input -> conv (random kernel, stride, padding) -> maxpool -> conv -> conv plus the maxpool's output
    -> avgpool -> linear, with random pruned ternary weights (levels up to 2 in one conv), requant constants
    scaled so that most outputs fall inside the clamp range, random signedness and ReLU. The maxpool's source
    is signed on even seeds, so that its padding would win if it were a zero."""
    rng = np.random.default_rng(seed)
    c0, size = int(rng.integers(1, 6)), int(rng.integers(5, 9))
    spec = InputSpec((c0, size, size), 8, bool(rng.integers(2)))
    layers, shapes = [], {"input": spec.shape}
    in_max = {"input": 128 if spec.signed else 255}

    def add(name, kind, source, out_shape, bits=8, signed=False, relu=True, k=1, stride=1, pad=0, out_c=None,
            tex=1, residual=None):
        c = shapes[source][0]
        weight = mask = None
        if kind in ("conv", "linear"):
            mask = rng.random((out_c, -(-c // LANES))) < 0.7
            weight = rng.integers(-tex, tex + 1, (out_c, c) + ((k, k) if kind == "conv" else ())).astype(np.int8)
            for j in range(mask.shape[1]):
                weight[~mask[:, j], j * LANES:(j + 1) * LANES] = 0
        rq = {}
        if kind != "maxpool":
            n = out_shape[0]
            typical = in_max[source] * (size * size if kind == "avgpool" else np.sqrt(c * k * k) * tex)
            scale = 2 ** (bits - 1) / typical * rng.uniform(0.5, 2, n)
            shift = np.clip(np.floor(np.log2(2 ** 14 / scale)), 0, 20).astype(np.int64)  # |mul| near 2^13..2^14
            mul = np.maximum(np.round(scale * 2.0 ** shift), 1).astype(np.int64)
            mul = mul * (rng.choice((-1, 1), n) if kind != "avgpool" else 1)
            bias = np.round(rng.uniform(-0.3, 0.3, n) * 2.0 ** (bits + shift)).astype(np.int64)
            rq = dict(mul=mul, bias=bias, shift=shift)
        layers.append(Layer(name=name, kind=kind, source=source, in_shape=shapes[source], out_shape=out_shape,
                            out_bits=bits, out_signed=signed, relu=relu, kernel=k, stride=stride, padding=pad,
                            weight=weight, mask=mask, tex=tex, residual=residual, **rq))
        shapes[name], in_max[name] = out_shape, (1 << (bits - 1)) if signed else (1 << bits) - 1

    out = lambda n, k, s, p: (n + 2 * p - k) // s + 1
    k, s = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    p, c1 = int(rng.integers(0, k)), int(rng.integers(2, 7))
    signed = seed % 2 == 0
    add("a", "conv", "input", (c1, out(size, k, s, p), out(size, k, s, p)), signed=signed, relu=not signed,
        k=k, stride=s, pad=p, out_c=c1)
    n = shapes["a"][1]
    k, s = int(rng.integers(2, min(3, n) + 1)), int(rng.integers(1, 3))
    p = int(rng.integers(0, k))
    m = out(n, k, s, p)
    add("m", "maxpool", "a", (c1, m, m), signed=signed, relu=not signed, k=k, stride=s, pad=p)
    add("b", "conv", "m", (c1, m, m), k=3, pad=1, out_c=c1, tex=2, signed=True, relu=False)
    add("c", "conv", "b", (c1, m, m), k=3, pad=1, out_c=c1, signed=bool(rng.integers(2)), residual="m")
    add("pool", "avgpool", "c", (c1, 1, 1))
    add("fc", "linear", "pool", (3, 1, 1), bits=16, signed=True, relu=False, out_c=3)
    return ir.validate(Model(f"random{seed}", LANES, spec, tuple(layers)))


@pytest.mark.parametrize("seed", range(12))
def test_reference_matches_loops_on_random_layers(seed):
    model = _random_layers(seed)
    lo, hi = ir.value_range(model.input.bits, model.input.signed)
    images = np.random.default_rng(seed).integers(lo, hi, (4,) + model.input.shape, endpoint=True)
    outs = _assert_equal_to_reference(model, images)
    for l in model.layers:  # not degenerate: every layer has values strictly inside its clamp range
        lo, hi = l.out_range
        assert ((outs[l.name] > lo) & (outs[l.name] < hi)).any(), l.name


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 50.0), st.floats(-100.0, 100.0), st.integers(-(1 << 20), 1 << 20))
def test_requant_constants_round_half_up(scale, offset, acc):
    mul, bias, shift = requant_constants(scale, offset)
    got = (acc * mul + bias) >> shift
    exact = acc * scale + offset
    # mul carries 17 significant bits: the result is the rounded exact value up to that precision
    assert abs(got - np.floor(exact + 0.5)) <= 1 + abs(acc) * scale * 2.0 ** -16
