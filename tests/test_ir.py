import dataclasses
import os

import numpy as np
import pytest

from hwgen.contract import ir, reference
from hwgen.contract.encoding import REQUANT_MAX_SHIFT, REQUANT_MUL_BITS
from hwgen.contract.ir import InputSpec, Layer, Model
from hwgen.compile.lower import lower
from hwgen.compile.roms import rq_roms
from irfiles import assert_builds, edit_manifest, npy_bytes, replace_array, rewrite_member

INT64_MAX = int(np.iinfo(np.int64).max)
MUL_LO, MUL_HI = ir.value_range(REQUANT_MUL_BITS, True)


def _replace_layer(model, index, **changes):
    layers = list(model.layers)
    layers[index] = dataclasses.replace(layers[index], **changes)
    return dataclasses.replace(model, layers=tuple(layers))


def test_round_trip_is_exact_and_deterministic(small_model, tmp_path):
    ir.save(small_model, tmp_path / "a.ir")
    ir.save(small_model, tmp_path / "b.ir")
    assert (tmp_path / "a.ir").read_bytes() == (tmp_path / "b.ir").read_bytes()
    back = ir.load(tmp_path / "a.ir")
    assert [l.name for l in back.layers] == [l.name for l in small_model.layers]
    for a, b in zip(back.layers, small_model.layers):
        for f in ("weight", "mask", "mul", "bias", "shift"):
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None and y is None) or (x.dtype == y.dtype and np.array_equal(x, y))
        assert (a.kind, a.in_shape, a.out_shape, a.stride, a.padding) == (b.kind, b.in_shape, b.out_shape,
                                                                          b.stride, b.padding)


def test_truncated_file_is_one_line_error(small_model, tmp_path):
    path = tmp_path / "m.ir"
    ir.save(small_model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ir.IRError) as e:
        ir.load(path)
    assert "not a readable IR file" in str(e.value) and "\n" not in str(e.value)


def test_edited_array_fails_its_checksum(small_model, tmp_path):
    path, edited = tmp_path / "m.ir", tmp_path / "e.ir"
    ir.save(small_model, path)
    rewrite_member(path, edited, "conv2.weight.npy", lambda data: data[:-1] + bytes([data[-1] ^ 2]))
    with pytest.raises(ir.IRError, match=r"layer 'conv2': weight checksum must be the one in the manifest"):
        ir.load(edited)


def test_edited_manifest_field_names_layer_and_field(small_model, tmp_path):
    path, edited = tmp_path / "m.ir", tmp_path / "e.ir"
    ir.save(small_model, path)
    edit_manifest(path, edited, lambda m: m["layers"][1].update(stride="two"))
    with pytest.raises(ir.IRError, match=r"layer 'conv2': stride must be int, found 'two'"):
        ir.load(edited)


@pytest.mark.parametrize("change, message", [
    (dict(weight=None), "layer 'conv2': weight must be an array, found NoneType"),
    (dict(stride=3), r"layer 'conv2': out_shape must be \[32, 3, 3\], found \[32, 4, 4\]"),
    (dict(kind="deconv"), "layer 'conv2': kind must be one of conv, linear, avgpool, maxpool, found 'deconv'"),
    (dict(source="nowhere"), "layer 'conv2': source must be an earlier layer or 'input', found 'nowhere'"),
])
def test_validate_names_field_expected_found(small_model, change, message):
    with pytest.raises(ir.IRError, match=message):
        ir.validate(_replace_layer(small_model, 1, **change))


def test_validate_rejects_non_ternary_and_stray_weights(small_model):
    layer = small_model.layers[1]
    w = layer.weight.copy()
    w.flat[0] = 2
    with pytest.raises(ir.IRError, match="weight values must be ternary"):
        ir.validate(_replace_layer(small_model, 1, weight=w))
    pruned = np.argwhere(~layer.mask)[0]
    w = layer.weight.copy()
    w[pruned[0], pruned[1] * small_model.lanes, 0, 0] = 1
    with pytest.raises(ir.IRError, match=rf"zero in pruned group \(o={pruned[0]}, block={pruned[1]}\)"):
        ir.validate(_replace_layer(small_model, 1, weight=w))


class _Tripwire:
    """Unpickling one creates the folder ``path``: whether the loader ever unpickled shows on disk."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_never_unpickles(small_model, tmp_path):
    path, edited, tripped = tmp_path / "m.ir", tmp_path / "e.ir", tmp_path / "unpickled"
    ir.save(small_model, path)
    pickled = npy_bytes(np.array([_Tripwire(tripped)] * 16, dtype=object), allow_pickle=True)
    replace_array(path, edited, "conv1", "mul", pickled)  # its checksum is right: the loader reads it
    with pytest.raises(ir.IRError, match="Object arrays cannot be loaded when allow_pickle=False"):
        ir.load(edited)
    assert not tripped.exists()


def test_corrupted_files_give_one_line_errors(small_model, tmp_path):
    """Seeded corruption: flipped bytes, truncation. Every outcome is an IRError of one line (a flipped
    byte inside a compressed member once surfaced as a bare zlib.error)."""
    import random

    path = tmp_path / "m.ir"
    ir.save(small_model, path)
    data = path.read_bytes()
    rng = random.Random(0)
    for i in range(300):
        b = bytearray(data)
        if i % 2:
            b = b[:rng.randrange(len(b))]
        else:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        path.write_bytes(bytes(b))
        try:
            ir.load(path)
        except ir.IRError as e:
            assert "\n" not in str(e)


# ---------------------------------------------------------------- numeric fields at their hardware limits

def _channels(model, index, name, value):
    """Layer ``index`` with ``value`` in every channel of its array ``name``."""
    return _replace_layer(model, index, **{name: np.full_like(getattr(model.layers[index], name), value)})


def _bias_room(model, layer):
    """Largest |bias| with |acc * mul + bias| + |residual| within int64, the reference's arithmetic."""
    magnitude = lambda lo_hi: max(map(abs, lo_hi))
    acc = ir.acc_bound(layer, magnitude(ir.input_range(model, layer.source)))
    res = 0 if layer.residual is None else magnitude(ir.input_range(model, layer.residual))
    return INT64_MAX - acc * int(np.abs(layer.mul).max()) - res


@pytest.mark.parametrize("at, past", [(MUL_HI, MUL_HI + 1), (MUL_LO, MUL_LO - 1)])
def test_mul_at_and_past_the_requant_rom_width(small_model, at, past):
    assert_builds(ir.validate(_channels(small_model, 1, "mul", at)), pe=4)
    model = _channels(small_model, 1, "mul", past)
    with pytest.raises(ir.IRError, match=rf"^layer 'conv2': mul must be in {MUL_LO}\.\.{MUL_HI} "
                                         rf"\({REQUANT_MUL_BITS}-bit signed\), found {past}$"):
        ir.validate(model)
    with pytest.raises(OverflowError):  # what the validator saves a build from
        rq_roms(lower(model, 4, model.lanes))


@pytest.mark.parametrize("at, past", [(REQUANT_MAX_SHIFT, REQUANT_MAX_SHIFT + 1), (0, -1)])
def test_shift_at_and_past_its_limit(small_model, at, past):
    assert_builds(ir.validate(_channels(small_model, 1, "shift", at)), pe=4)
    with pytest.raises(ir.IRError, match=rf"^layer 'conv2': shift must be in 0\.\.{REQUANT_MAX_SHIFT} .*, "
                                         rf"found {past}$"):
        ir.validate(_channels(small_model, 1, "shift", past))


@pytest.mark.parametrize("sign", [1, -1])
def test_bias_at_and_past_int64(small_model, sign):
    room = _bias_room(small_model, small_model.layers[1])
    assert_builds(ir.validate(_channels(small_model, 1, "bias", sign * room)), pe=4)
    model = _channels(small_model, 1, "bias", sign * (room + 1))
    with pytest.raises(ir.IRError, match=rf"^layer 'conv2': bias must be in -{room}\.\.{room} .*, "
                                         rf"found {sign * (room + 1)}$"):
        ir.validate(model)
    with pytest.raises(OverflowError):  # the reference's own guard, which the validator now runs first
        reference.run(model, np.zeros((1,) + model.input.shape, np.int64))


def _residual_net(bias: int) -> Model:
    """input -> 'a' -> 'b' -> 'c' (plus 'a'): 1x1 convs, +1 weights, shift 0; 'c' has ``bias``."""
    def conv(name, source, residual=None, bias=0):
        return Layer(name=name, kind="conv", source=source, in_shape=(4, 2, 2), out_shape=(4, 2, 2), out_bits=8,
                     out_signed=False, relu=True, weight=np.ones((4, 4, 1, 1), np.int8), mask=np.ones((4, 1), bool),
                     mul=np.ones(4, np.int64), bias=np.full(4, bias, np.int64), shift=np.zeros(4, np.int64),
                     residual=residual)
    return Model("residual", 4, InputSpec((4, 2, 2)),
                 (conv("a", "input"), conv("b", "a"), conv("c", "b", residual="a", bias=bias)))


def test_bias_room_leaves_room_for_the_residual():
    """At the limit acc * mul + bias + residual is the int64 maximum, which clamps to 255; were the residual
    left out of the room, the sum would wrap negative and clamp to 0."""
    room = _bias_room(_residual_net(0), _residual_net(0).layers[2])
    model = ir.validate(_residual_net(room))
    assert_builds(model, pe=4)
    assert (reference.run(model, np.full((1, 4, 2, 2), 255))["c"] == 255).all()
    with pytest.raises(ir.IRError, match=rf"^layer 'c': bias must be in -{room}\.\.{room} "):
        ir.validate(_residual_net(room + 1))


def _bits_and_tex(model, field, value):
    if field == "input bits":
        return dataclasses.replace(model, input=dataclasses.replace(model.input, bits=value))
    if field == "out_bits":
        return _replace_layer(model, 1, out_bits=value)
    layer = model.layers[1]  # tex: the weights take the extreme levels too, where the limit allows them
    weight = layer.weight * np.int8(min(max(value, 1), ir.MAX_TEX))
    return _replace_layer(model, 1, tex=value, weight=weight)


@pytest.mark.parametrize("field, at, past, message", [
    ("input bits", ir.INPUT_BITS[1], ir.INPUT_BITS[1] + 1, "input: bits must be in {}..{}".format(*ir.INPUT_BITS)),
    ("input bits", ir.INPUT_BITS[0], ir.INPUT_BITS[0] - 1, "input: bits must be in {}..{}".format(*ir.INPUT_BITS)),
    ("out_bits", ir.OUT_BITS[1], ir.OUT_BITS[1] + 1, "layer 'conv2': out_bits must be in {}..{}".format(*ir.OUT_BITS)),
    ("out_bits", ir.OUT_BITS[0], ir.OUT_BITS[0] - 1, "layer 'conv2': out_bits must be in {}..{}".format(*ir.OUT_BITS)),
    ("tex", ir.MAX_TEX, ir.MAX_TEX + 1, f"layer 'conv2': tex must be in 1..{ir.MAX_TEX}"),
    ("tex", 1, 0, f"layer 'conv2': tex must be in 1..{ir.MAX_TEX}"),
])
def test_bits_and_tex_at_and_past_their_limits(small_model, field, at, past, message):
    assert_builds(ir.validate(_bits_and_tex(small_model, field, at)), pe=4)
    with pytest.raises(ir.IRError) as e:
        ir.validate(_bits_and_tex(small_model, field, past))
    assert str(e.value) == f"{message}, found {past}"


def test_kernel_at_and_past_the_padded_input(small_model):
    """conv3 reads a 4 x 4 map with padding 1: a 6 x 6 kernel gives a 1 x 1 output, a 7 x 7 none."""
    def kernel(k):
        conv3, conv4 = small_model.layers[2:4]
        weight = np.zeros(conv3.weight.shape[:2] + (k, k), np.int8)
        weight[:, :, :3, :3] = conv3.weight
        layers = list(small_model.layers)
        layers[2] = dataclasses.replace(conv3, kernel=k, weight=weight, out_shape=(conv3.out_shape[0], 1, 1))
        layers[3] = dataclasses.replace(conv4, in_shape=(conv4.in_shape[0], 1, 1), out_shape=(conv4.out_shape[0], 1, 1))
        layers[4] = dataclasses.replace(layers[4], in_shape=(conv4.out_shape[0], 1, 1))
        return dataclasses.replace(small_model, layers=tuple(layers))
    assert_builds(ir.validate(kernel(6)), pe=4)
    with pytest.raises(ir.IRError, match=r"^layer 'conv3': kernel must be at most the padded input \(6 x 6\), "
                                         r"found 7$"):
        ir.validate(kernel(7))
