"""Fuzzing the IR loader: random bytes, random byte edits of a real file, and random edits of manifest
fields must each give one IRError with a one-line message (never another exception, never a hang); numeric
fields at their hardware limits build, one past them are refused."""
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hwgen.contract import ir
from hwgen.contract.encoding import REQUANT_MAX_SHIFT, REQUANT_MUL_BITS
from hwgen.contract.ir import value_range
from hwgen.frontends.synthetic import chain_model
from irfiles import assert_builds, edit_manifest, npy_bytes, replace_array

INT64_MAX = int(np.iinfo(np.int64).max)

FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "good.ir"
    ir.save(chain_model("fuzz", (3, 4, 4), [(8, 3, 1, 1), (4, 1, 1, 0)], 5, pe=4, lanes=4, seed=2), path)
    return path


def _load_fails_in_one_line(path):
    with pytest.raises(ir.IRError) as e:
        ir.load(path)
    message = str(e.value)
    assert message and "\n" not in message, repr(message)
    return message


@FUZZ
@given(data=st.binary(max_size=4000))
def test_random_bytes(data, tmp_path):
    path = tmp_path / "random.ir"
    path.write_bytes(data)
    _load_fails_in_one_line(path)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_byte_edits_of_a_real_file(edits, cut, good, tmp_path):
    data = bytearray(good.read_bytes())
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[:cut % len(data)]
    path = tmp_path / "edited.ir"
    path.write_bytes(bytes(data))
    if bytes(data) == good.read_bytes():
        ir.load(path)  # an edit that wrote the same byte back: still a good file
        return
    try:
        ir.load(path)  # a byte of zip padding or metadata may change nothing that is read
    except ir.IRError as e:
        assert "\n" not in str(e), repr(str(e))


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(node, prefix=()):
    """Every (path, value) in the manifest tree."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(choice=st.integers(0, 10**6), value=VALUES, delete=st.booleans())
def test_field_edits(choice, value, delete, good, tmp_path):
    with zipfile.ZipFile(good) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    manifest = json.loads(members["manifest.json"])
    paths = [p for p, _ in _paths(manifest) if p]
    path = paths[choice % len(paths)]
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    original = parent[path[-1]]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    elif value == original and type(value) is type(original):
        return  # not an edit
    else:
        parent[path[-1]] = value
    members["manifest.json"] = json.dumps(manifest).encode()
    out = tmp_path / "fields.ir"
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    try:
        ir.load(out)  # some edits are harmless (meta, the input's scale, a name nothing refers to)
    except ir.IRError as e:
        assert "\n" not in str(e), repr(str(e))


# Numeric fields at and past their hardware limits: (where, field) -> (lowest, highest) allowed, for the
# model ``good``. Within them the file loads and builds; one past, it is refused with that field named.
MUL_RANGE = value_range(REQUANT_MUL_BITS, True)


def _limits(model: ir.Model) -> dict:
    limits = {("input", "bits"): ir.INPUT_BITS}
    for l in model.layers:
        where = f"layer '{l.name}'"
        limits[where, "out_bits"] = ir.OUT_BITS
        if l.weight is not None:
            limits[where, "tex"] = (1, ir.MAX_TEX)
        if l.mul is not None:
            acc = ir.acc_bound(l, max(map(abs, ir.input_range(model, l.source))))
            room = INT64_MAX - acc * int(np.abs(l.mul).max())  # no residual in this model
            limits.update({(where, "mul"): MUL_RANGE, (where, "shift"): (0, REQUANT_MAX_SHIFT),
                           (where, "bias"): (-room, room)})
    return limits


@FUZZ
@given(choice=st.integers(0, 10**6), channel=st.integers(0, 10**6), high=st.booleans(), delta=st.integers(-2, 2))
def test_numeric_fields_at_and_past_their_limits(choice, channel, high, delta, good, tmp_path):
    model = ir.load(good)
    limits = _limits(model)
    where, field = sorted(limits)[choice % len(limits)]
    lo, hi = limits[where, field]
    value = (hi if high else lo) + delta
    out = tmp_path / "limit.ir"
    if where == "input":
        edit_manifest(good, out, lambda m: m["input"].update(bits=value))
    elif field in ("out_bits", "tex"):
        name = where.split("'")[1]
        edit_manifest(good, out, lambda m: next(e for e in m["layers"] if e["name"] == name).update({field: value}))
    else:  # one channel of a requant array, written with its checksum as ir.save computes it
        name = where.split("'")[1]
        arr = getattr(model.layer(name), field).copy()
        arr[channel % arr.size] = value
        replace_array(good, out, name, field, npy_bytes(arr))
    if lo <= value <= hi:
        assert_builds(ir.load(out), pe=4)
    else:
        assert f"{where}: {field} must be " in _load_fails_in_one_line(out)
