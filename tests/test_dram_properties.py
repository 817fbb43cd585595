"""Maps through DRAM in bands (compile/units.py), random shapes (hypothesis), all run on ONE compiled
Verilator model with band buffers: odd sizes, strides 1 and 2, padding, a residual read from DRAM, and band
budgets that exactly fit a band or miss it by one word. Each case is bit-exact against the reference and,
against the deterministic memory, its cycles equal the prediction; half the cases run against cocotbext-axi's
RAM with random pauses on every channel (and stalled streams) instead, where only exactness is required."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from hwgen.build.generate import BuildConfig, build, build_images
from hwgen.compile.units import input_rows, units
from hwgen.contract import mapping, reference
from hwgen.contract.ir import InputSpec, Layer, Model, validate, value_range
from hwgen.sim.stream import compile_model, simulate
from netgen import CAPACITY, LANES, PE, TILE, _calibrate, _weights

BAND_WORDS = 96  # the buffers' depth: every case's budget is at most this
DRAM_CAPACITY = replace(CAPACITY, layers=96, steps=2 * 128, pe_steps=2 * 128, weight_cache=128, n_bufs=6,
                        buf_depth=BAND_WORDS, band_words=BAND_WORDS, read_commands=512, write_commands=256)
EXAMPLES = 16


def _conv(name, source, c, h, w, out, k, stride, pad, rng, fmt, residual=None):
    weight, mask = _weights(rng, out, c, k, 0.75, True)
    size = lambda n: mapping.conv_out_size(n, k, stride, pad)  # noqa: E731
    zeros = np.zeros(out, np.int64)
    return Layer(name=name, kind="conv", source=source, in_shape=(c, h, w), out_shape=(out, size(h), size(w)),
                 kernel=k, stride=stride, padding=pad, weight=weight, mask=mask, mul=zeros, bias=zeros, shift=zeros,
                 residual=residual, **fmt)


@st.composite
def banded_cases(draw):
    """(model, images, band budget, description): a first layer (conv or max pool, any k, stride, padding)
    from the input in DRAM, a 1x1 conv, a 3x3 conv adding the first layer's map back as its residual (read
    from DRAM), and a 1x1 head."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    c, h, w = draw(st.integers(1, 12)), draw(st.integers(2, 9)), draw(st.integers(1, 9))
    kind = draw(st.sampled_from(["conv", "maxpool"]))
    k = draw(st.integers(1, 3))
    stride, pad = draw(st.integers(1, 2)), draw(st.integers(0, k - 1))
    h, w = max(h, k - 2 * pad, 1), max(w, k - 2 * pad, 1)
    bits = draw(st.integers(2, 8))
    spec = InputSpec((c, h, w), bits, False, 1.0)
    images = rng.integers(0, value_range(bits, False)[1] + 1, size=(2, c, h, w))
    fmt = dict(out_bits=bits, out_signed=False, relu=True)
    model, values = Model("banded", LANES, spec, ()), {"input": torch.from_numpy(images)}

    def add(layer, calibrate=True):
        nonlocal model
        if calibrate:
            layer = _calibrate(model, layer, values[layer.source], rng)
        model = Model(model.name, LANES, spec, model.layers + (layer,))
        res = None if layer.residual is None else values[layer.residual]
        values[layer.name] = reference.run_layer(model, layer, values[layer.source], res)

    if kind == "conv":
        first = _conv("first", "input", c, h, w, draw(st.integers(1, 12)), k, stride, pad, rng, fmt)
    else:
        k, pad = max(k, 1), min(pad, k - 1)
        size = lambda n: mapping.conv_out_size(n, k, stride, pad)  # noqa: E731
        first = Layer(name="first", kind="maxpool", source="input", in_shape=(c, h, w), out_shape=(c, size(h), size(w)),
                      kernel=k, stride=stride, padding=pad, **fmt)
    add(first, calibrate=kind == "conv")
    o, ho, wo = first.out_shape
    add(_conv("mid", "first", o, ho, wo, draw(st.integers(1, 12)), 1, 1, 0, rng, fmt))
    add(_conv("second", "mid", model.layers[-1].out_shape[0], ho, wo, o, 3, 1, 1, rng, fmt, residual="first"))
    add(_conv("head", "second", o, ho, wo, draw(st.integers(1, 10)), 1, 1, 0, rng,
              dict(out_bits=16, out_signed=True, relu=False)))
    model = validate(model)
    # a budget that exactly fits some band of the first layer (or the tightest row of any layer), one word
    # less, or one between that and the next row's
    lowered = BuildConfig(PE, LANES, TILE).lower(model).layers
    first_l = lowered[0]
    blocks = lambda ch: mapping.num_blocks(ch, LANES)  # noqa: E731

    def words(l, oy0, oy1, last=False):  # a band's input rows (with its halo) and output rows
        r0, r1 = input_rows(l, oy0, oy1)
        return max(blocks(l.in_shape[0]) * (r1 - r0) * l.in_shape[2],
                   0 if last else blocks(l.out_shape[0]) * (oy1 - oy0) * l.out_shape[2])
    tightest = max(words(l, oy, oy + 1, i == len(lowered) - 1) for i, l in enumerate(lowered)
                   for oy in range(l.out_shape[1]))
    fitting = [r for r in range(1, max(2, ho)) if tightest <= words(first_l, 0, r) <= BAND_WORDS] or [1]
    rows = draw(st.sampled_from(fitting))
    exact = min(max(words(first_l, 0, rows), tightest), BAND_WORDS)
    below_next = min(BAND_WORDS, words(first_l, 0, rows + 1) - 1) if rows < ho else BAND_WORDS
    fit = draw(st.sampled_from(["exact", "one word short", "between"]))
    budget = {"exact": exact, "one word short": max(1, exact - 1),
              "between": draw(st.integers(exact, max(exact, below_next)))}[fit]
    description = (f"seed={seed} {kind} {c}x{h}x{w} k{k}/s{stride}/p{pad} -> {o}x{ho}x{wo}, budget {budget} "
                   f"({fit}, {rows} rows)")
    return model, images, budget, description


@pytest.fixture(scope="module")
def banded_model(tmp_path_factory):
    """A model compiled from the band-buffer capacity, for every case."""
    from netgen import mutation_net

    out = tmp_path_factory.mktemp("banded") / "anchor"
    build(mutation_net(), BuildConfig(PE, LANES, TILE, DRAM_CAPACITY, weights="dram", band_words=BAND_WORDS), out)
    return compile_model(out)


def test_random_banded_networks_match_reference(banded_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("banded_cases")
    ran, banded, timed, refused, s2d = [], [], [], [], []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=banded_cases(), stall=st.sampled_from([0.0, 0.3]), stem=st.sampled_from(["im2col", "space_to_depth"]))
    def check(case, stall, stem):
        model, images, budget, description = case
        description += f", {stem} stem"
        cfg = BuildConfig(PE, LANES, TILE, DRAM_CAPACITY, weights="dram", band_words=budget, stem=stem)
        try:
            prog = cfg.lower(model)
            units(prog)
        except ValueError as e:  # too small a budget for one output row: refused, with the layer named
            assert "more than a band buffer" in str(e) and budget < BAND_WORDS, description
            ran.append(description)
            refused.append(description)
            return
        if len({u.band for u in units(prog) if u.index == 0}) > 1:
            banded.append(description)
        if prog.space_to_depth:
            s2d.append(description)
        out = base / f"case{len(ran)}"
        man = build_images(model, cfg, out)
        result = simulate(model, out, images, stall=stall, seed=len(ran), compiled=banded_model)
        ran.append(description)
        assert result["mismatches"] == 0, f"{description}\n{result['first_difference']}"
        assert not result["stream_problems"], f"{description}\n{result['stream_problems']}"
        if not stall:
            assert result["cycles_per_image"] == man["predicted_cycles"], description
            timed.append(description)

    check()
    assert len(ran) >= EXAMPLES
    # the cases really split maps into bands, and really compared cycles (not all refused or paused)
    print(f"\n{len(ran)} cases: {len(banded)} banded, {len(timed)} cycles compared, {len(refused)} refused, "
          f"{len(s2d)} with a space-to-depth stem")
    assert len(banded) >= EXAMPLES // 4 and len(timed) >= EXAMPLES // 4, (banded, timed, refused)
    assert s2d, "no case ran a space-to-depth stem"
