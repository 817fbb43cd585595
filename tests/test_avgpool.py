"""Global average pooling: the float model's GridAvgPool and the IR's avgpool layer compute one integer
function for every map size, and that function is the mean rounded half up (exact halves included)."""
import numpy as np
import pytest
import torch

from hwgen.contract import encoding, ir, reference
from train.quant import ActQuant, GridAvgPool

SIZES = range(1, 17)


def _maps_with_every_sum(h: int, w: int, hi: int) -> np.ndarray:
    """[area*hi + 1, 1, h, w] maps of integers in [0, hi]; map s sums to s (r pixels of q+1, the rest q)."""
    area = h * w
    s = np.arange(area * hi + 1)
    q, r = np.divmod(s, area)
    maps = q[:, None] + (np.arange(area)[None, :] < r[:, None])
    return maps.reshape(-1, 1, h, w)


def _pool_model(h: int, w: int, bits: int, scale: float) -> ir.Model:
    lo, hi = ir.value_range(bits, False)
    mul, bias, shift = (np.array([v], np.int64) for v in encoding.average_constants(h * w, lo, hi))
    layer = ir.Layer(name="avgpool", kind="avgpool", source="input", in_shape=(1, h, w), out_shape=(1, 1, 1),
                     out_bits=bits, out_signed=False, relu=False, mul=mul, bias=bias, shift=shift)
    return ir.validate(ir.Model("pool", 16, ir.InputSpec((1, h, w), bits, False, scale), (layer,), {}))


@pytest.mark.parametrize("signed,bits", [(False, 8), (True, 9), (False, 4)])
def test_average_constants_round_every_sum_half_up(signed, bits):
    lo, hi = ir.value_range(bits, signed)
    for h in SIZES:
        for w in SIZES:
            area = h * w
            s = np.arange(area * lo, area * hi + 1, dtype=np.int64)
            mul, bias, shift = encoding.average_constants(area, lo, hi)
            got = (s * mul + bias) >> shift
            want = np.floor_divide(2 * s + area, 2 * area)  # floor(s / area + 1/2), in integers
            assert np.array_equal(got, want), (h, w, int((got != want).sum()))


@pytest.mark.parametrize("n", SIZES)
def test_float_pool_and_ir_agree_on_every_sum(n):
    """Every possible sum of an n x n map of 8-bit activations, through the float model's pool and through
    the integer reference of the exported layer: equal integers."""
    act = ActQuant(8)
    act.running_max.fill_(255 / 64)  # scale 1/64; not a power of two is tested below
    act.calibrated.fill_(True)
    act.eval()
    maps = _maps_with_every_sum(n, n, act.hi)
    x = torch.from_numpy(maps).float() * act.scale
    got = GridAvgPool(act)(x) / act.scale
    assert torch.equal(got, got.round())
    want = reference.run(_pool_model(n, n, 8, act.scale), maps)["avgpool"]
    assert np.array_equal(got.round().long().numpy(), want)
    assert np.array_equal(want.reshape(-1), (2 * maps.sum((1, 2, 3)) + n * n) // (2 * n * n))


@pytest.mark.parametrize("bits,h,w", [(8, 6, 6), (12, 5, 13)])
def test_float_pool_recovers_integers_at_any_scale(bits, h, w):
    """6x6: the size whose exact halves used to round differently on the two sides. 12 bits over 5x13: no
    18-bit constants round every sum half up, and the two sides still compute the same integers."""
    act = ActQuant(bits)
    act.running_max.fill_(3.7)
    act.calibrated.fill_(True)
    rng = np.random.default_rng(bits)
    maps = np.concatenate([_maps_with_every_sum(h, w, act.hi)[::97], rng.integers(0, act.hi + 1, (500, 1, h, w))])
    x = torch.from_numpy(maps).float() * act.scale
    got = (GridAvgPool(act)(x) / act.scale).round().long().numpy()
    assert np.array_equal(got, reference.run(_pool_model(h, w, bits, act.scale), maps)["avgpool"])


def test_average_constants_reject_an_empty_map():
    with pytest.raises(ValueError, match="average pool needs area >= 1 and lo <= hi, found area 0"):
        encoding.average_constants(0, 0, 255)


def _rounds_every_sum_half_up(layer: ir.Layer) -> bool:
    area = layer.in_shape[1] * layer.in_shape[2]
    s = np.arange(0, area * 255 + 1, dtype=np.int64)[:, None]
    return np.array_equal((s * layer.mul + layer.bias) >> layer.shift,
                          np.broadcast_to((2 * s + area) // (2 * area), (len(s), len(layer.mul))))


def test_exported_and_synthetic_pools_of_a_6x6_map_round_half_up():
    """ResNet-20 at 24x24 ends on a 6x6 map: the trained export and the synthetic network both hold the
    constants the float model's pool applies."""
    from hwgen.frontends import synthetic
    from train.export import export, logit_scale
    from train.resnet import resnet_cifar
    torch.manual_seed(0)
    model = resnet_cifar(20, input_size=24)
    with torch.no_grad():
        model.train()
        model(torch.rand(4, 3, 24, 24))
    model.eval()
    x = torch.rand(2, 3, 24, 24)
    for irm in (export(model, 16, {}, logit_scale(model, x)), synthetic.resnet_cifar(20, input_size=24)):
        pool = next(l for l in irm.layers if l.kind == "avgpool")
        assert pool.in_shape[1:] == (6, 6) and _rounds_every_sum_half_up(pool), irm.name
