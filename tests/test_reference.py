"""The integer reference against independent formulations."""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from hwgen import reference
from hwgen.encoding import requant_constants


def test_float64_conv_path_equals_int64_path():
    gen = torch.Generator().manual_seed(0)
    for stride, pad, k in ((1, 1, 3), (2, 3, 7), (2, 0, 1)):
        x = torch.randint(-128, 256, (2, 37, 15, 15), generator=gen)
        w = torch.randint(-1, 2, (19, 37, k, k), generator=gen)
        assert torch.equal(reference.conv(x, w, stride, pad, bound=0), reference.conv_int64(x, w, stride, pad))


def _float_chain(model, x):
    """A re-implementation in the IR's words: plain int64 contractions, division with floor for >>."""
    outs, cur = {}, x.double()
    src = {"input": cur}
    for l in model.layers:
        a = src[l.source]
        if l.kind == "conv":
            acc = reference.conv_int64(a.to(torch.int64), torch.from_numpy(l.weight).to(torch.int64), l.stride,
                                       l.padding).double()
        elif l.kind == "linear":
            acc = (a.flatten(1) @ torch.from_numpy(l.weight).double().T)[:, :, None, None]
        else:
            acc = a.sum(dim=(2, 3), keepdim=True)
        acc = acc.to(torch.int64)
        y = (acc * torch.from_numpy(l.mul).view(1, -1, 1, 1) + torch.from_numpy(l.bias).view(1, -1, 1, 1))
        y = torch.div(y, 2 ** torch.from_numpy(l.shift).view(1, -1, 1, 1), rounding_mode="floor")
        lo, hi = l.out_range
        src[l.name] = y.clamp(lo, hi).double()
        outs[l.name] = src[l.name].to(torch.int64)
    return outs


def test_reference_matches_independent_float64(small_model):
    x = torch.randint(0, 256, (5, 1, 8, 8))
    ref = reference.run(small_model, x)
    alt = _float_chain(small_model, x)
    for name in ref:
        assert torch.equal(ref[name], alt[name]), name
    # the network is not degenerate: outputs vary across images and use the range
    logits = ref["fc"].flatten(1)
    assert len({tuple(r.tolist()) for r in logits}) == 5
    assert ref["conv3"].max() > 100


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 50.0), st.floats(-100.0, 100.0), st.integers(-(1 << 20), 1 << 20))
def test_requant_constants_round_half_up(scale, offset, acc):
    mul, bias, shift = requant_constants(scale, offset)
    got = (acc * mul + bias) >> shift
    exact = acc * scale + offset
    # mul carries 17 significant bits: the result is the rounded exact value up to that precision
    assert abs(got - np.floor(exact + 0.5)) <= 1 + abs(acc) * scale * 2.0 ** -16
