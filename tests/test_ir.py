import dataclasses
import io

import numpy as np
import pytest

from hwgen import ir
from irfiles import edit_manifest, rewrite_member


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


def test_never_unpickles(small_model, tmp_path):
    path, edited = tmp_path / "m.ir", tmp_path / "e.ir"
    ir.save(small_model, path)
    buf = io.BytesIO()
    np.save(buf, np.array([object()] * 16, dtype=object), allow_pickle=True)
    rewrite_member(path, edited, "conv1.mul.npy", lambda data: buf.getvalue())
    with pytest.raises(ir.IRError):
        ir.load(edited)


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
