"""The IR: the contract between training and hardware (docs/design.md §4).

One file, a zip archive written deterministically: ``manifest.json`` (format, version, the layer list and
a SHA-256 of every array) plus one ``.npy`` member per array, read back with ``allow_pickle=False``.
Nothing in it is ever unpickled, and :func:`validate` runs at every load.

Integer semantics of each kind are defined once, in :mod:`hwgen.contract.reference`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .encoding import REQUANT_MAX_SHIFT, REQUANT_MUL_BITS
from .mapping import block_bounds, conv_out_size, num_blocks

FORMAT = "ternary-cnn-ir"
VERSION = 2  # 2: full-precision layers (``precision``, ``offset``); version 1 files load unchanged
READABLE_VERSIONS = (1, 2)
KINDS = ("conv", "linear", "avgpool", "maxpool")
PRECISIONS = ("ternary", "float")
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so the same model gives the same bytes
INPUT_BITS = (2, 16)  # smallest and largest bits of an input value
OUT_BITS = (2, 32)  # of a layer's output value
MAX_TEX = 8  # largest residual-expansion level


class IRError(ValueError):
    """A malformed or inconsistent IR; the message names layer, field, expected and found."""


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, int, int]  # C, H, W
    bits: int = 8
    signed: bool = False
    scale: float = 1.0  # real value = integer * scale; used by the host to quantize images


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer. Shapes are (C, H, W). Arrays are per output channel unless noted.

    conv:    weight int8 [O, C, k, k] in [-tex, tex] ({-1, 0, 1} unless residual expansion); acc = conv(x, weight)
    linear:  weight int8 [O, C], same values; input must be C x 1 x 1
    avgpool: global average pool; acc = sum over H x W
    maxpool: k x k window max, no requantization (mul/bias/shift are None)
    Then y = clamp((acc * mul + bias) >> shift, lo, hi) with lo, hi from out_bits/out_signed/relu.
    A conv with ``residual`` adds that layer's output (same shape, same scale) before the clamp:
    y = clamp(((acc * mul + bias) >> shift) + residual, lo, hi).

    ``precision`` "float" (conv or linear, from training with float first/last layers): ``weight`` is float32
    with the scales folded in and ``offset`` float32 [O]; y = clamp(floor(conv(x, weight) + offset + 1/2)) in
    float64. Kept so that such a model can be evaluated; the generator refuses it (it builds ternary layers).
    """

    name: str
    kind: str
    source: str  # name of the producing layer, or "input"
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    out_bits: int
    out_signed: bool
    relu: bool
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    weight: np.ndarray | None = None
    mask: np.ndarray | None = None  # bool [O, ceil(C / lanes)]: groups kept by training
    mul: np.ndarray | None = None  # int64 [O]
    bias: np.ndarray | None = None  # int64 [O]
    shift: np.ndarray | None = None  # int64 [O]
    residual: str | None = None  # conv only: name of the layer (or "input") added before the clamp
    tex: int = 1  # residual expansion: weights take 2*tex+1 levels in [-tex, tex], run as tex ternary passes
    precision: str = "ternary"  # or "float": see above
    offset: np.ndarray | None = None  # float32 [O], float layers only

    @property
    def out_range(self) -> tuple[int, int]:
        lo, hi = value_range(self.out_bits, self.out_signed)
        return (max(lo, 0), hi) if self.relu else (lo, hi)


@dataclass(frozen=True, eq=False)
class Model:
    name: str
    lanes: int  # group size P the pruning was shaped to
    input: InputSpec
    layers: tuple[Layer, ...]
    meta: dict = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def value_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def signed_width(bound: int) -> int:
    """Bits of a two's complement value that holds every integer in [-bound, bound]: the accumulator width
    proven from ``acc_bound``."""
    return bound.bit_length() + 1


_ARRAYS = {  # field -> (dtype, shape as a function of the layer)
    "weight": (np.int8, lambda l: (l.out_shape[0], l.in_shape[0]) + ((l.kernel,) * 2 if l.kind == "conv" else ())),
    "mask": (np.bool_, None),
    "mul": (np.int64, lambda l: (l.out_shape[0],)),
    "bias": (np.int64, lambda l: (l.out_shape[0],)),
    "shift": (np.int64, lambda l: (l.out_shape[0],)),
    "offset": (np.float32, lambda l: (l.out_shape[0],)),
}
_REQUIRED = {
    "conv": ("weight", "mask", "mul", "bias", "shift"),
    "linear": ("weight", "mask", "mul", "bias", "shift"),
    "avgpool": ("mul", "bias", "shift"),
    "maxpool": (),
    "float": ("weight", "mask", "offset"),  # a float conv or linear layer
}
_INT64_MAX = int(np.iinfo(np.int64).max)


def _fail(where: str, what: str, expected, found) -> IRError:
    return IRError(f"{where}: {what} must be {expected}, found {found}")


def _expected_out_shape(l: Layer) -> tuple[int, int, int]:
    c, h, w = l.in_shape
    if l.kind == "linear":
        return (l.out_shape[0], 1, 1)
    if l.kind == "avgpool":
        return (c, 1, 1)
    channels = l.out_shape[0] if l.kind == "conv" else c  # maxpool keeps its channels
    return (channels, conv_out_size(h, l.kernel, l.stride, l.padding), conv_out_size(w, l.kernel, l.stride, l.padding))


def validate(model: Model) -> Model:
    """Check every invariant the reference and the generator rely on; raise IRError naming the first
    violation. Returns the model so that calls chain."""
    if not isinstance(model.lanes, int) or model.lanes < 1:
        raise _fail("model", "lanes", "a positive integer", repr(model.lanes))
    spec = model.input
    if len(spec.shape) != 3 or min(spec.shape) < 1:
        raise _fail("input", "shape", "three positive sizes (C, H, W)", list(spec.shape))
    if not INPUT_BITS[0] <= spec.bits <= INPUT_BITS[1]:
        raise _fail("input", "bits", "in {}..{}".format(*INPUT_BITS), spec.bits)
    if not (np.isfinite(spec.scale) and spec.scale > 0):
        raise _fail("input", "scale", "a positive finite number", spec.scale)
    if not model.layers:
        raise IRError("model: layers must be a non-empty list, found none")
    shapes = {"input": tuple(spec.shape)}
    for l in model.layers:
        where = f"layer '{l.name}'"
        if l.kind not in KINDS:
            raise _fail(where, "kind", f"one of {', '.join(KINDS)}", repr(l.kind))
        if l.name in shapes:
            raise _fail(where, "name", "unique (and not 'input')", "a duplicate")
        if l.source not in shapes:
            raise _fail(where, "source", "an earlier layer or 'input'", repr(l.source))
        if tuple(l.in_shape) != shapes[l.source]:
            raise _fail(where, "in_shape", list(shapes[l.source]), list(l.in_shape))
        if l.kernel < 1 or l.stride < 1 or not 0 <= l.padding < l.kernel:
            raise _fail(where, "kernel/stride/padding", "k >= 1, stride >= 1, 0 <= padding < k",
                        (l.kernel, l.stride, l.padding))
        if l.kind == "linear" and tuple(l.in_shape[1:]) != (1, 1):
            raise _fail(where, "in_shape", "C x 1 x 1 for a linear layer", list(l.in_shape))
        if l.kind == "avgpool" and l.kernel != 1:
            raise _fail(where, "kernel", "1 for a global avgpool", l.kernel)
        padded = [n + 2 * l.padding for n in l.in_shape[1:]]
        if l.kind in ("conv", "maxpool") and l.kernel > min(padded):
            raise _fail(where, "kernel", "at most the padded input ({} x {})".format(*padded), l.kernel)
        if min(l.out_shape) < 1 or tuple(l.out_shape) != _expected_out_shape(l):
            raise _fail(where, "out_shape", list(_expected_out_shape(l)), list(l.out_shape))
        if not OUT_BITS[0] <= l.out_bits <= OUT_BITS[1]:
            raise _fail(where, "out_bits", "in {}..{}".format(*OUT_BITS), l.out_bits)
        full = l.precision == "float"
        if l.precision not in PRECISIONS or (full and (l.kind not in ("conv", "linear") or l.residual)):
            raise _fail(where, "precision", f"one of {', '.join(PRECISIONS)} (float: a conv or linear layer "
                        "without residual)", repr(l.precision))
        for name in _ARRAYS:
            arr = getattr(l, name)
            if name not in _REQUIRED["float" if full else l.kind]:
                if arr is not None:
                    raise _fail(where, name, f"absent for kind {l.kind}", "an array")
                continue
            if not isinstance(arr, np.ndarray):
                raise _fail(where, name, "an array", type(arr).__name__)
            dtype, shape_of = _ARRAYS[name]
            dtype = np.float32 if full and name == "weight" else dtype
            shape = (l.out_shape[0], num_blocks(l.in_shape[0], model.lanes)) if name == "mask" else shape_of(l)
            if arr.dtype != dtype:
                raise _fail(where, f"{name} dtype", np.dtype(dtype).name, arr.dtype.name)
            if arr.shape != shape:
                raise _fail(where, f"{name} shape", list(shape), list(arr.shape))
        if full and not (np.isfinite(l.weight).all() and np.isfinite(l.offset).all()):
            raise _fail(where, "weight/offset", "finite numbers", "inf or nan")
        if l.weight is not None and not full:
            if not 1 <= l.tex <= MAX_TEX:
                raise _fail(where, "tex", f"in 1..{MAX_TEX}", l.tex)
            bad = np.abs(l.weight.astype(np.int64)) > l.tex
            if bad.any():
                expected = "ternary (-1, 0, 1)" if l.tex == 1 else f"in [-{l.tex}, {l.tex}] (tex = {l.tex})"
                raise _fail(where, "weight values", expected, int(l.weight[bad][0]))
            w = l.weight.reshape(l.weight.shape[0], l.weight.shape[1], -1)
            for j, (start, end) in enumerate(block_bounds(l.in_shape[0], model.lanes)):
                blk = w[:, start:end]
                stray = np.flatnonzero(~l.mask[:, j] & (blk != 0).any(axis=(1, 2)))
                if stray.size:
                    raise _fail(where, "weight", f"zero in pruned group (o={stray[0]}, block={j})", "nonzero")
        if l.residual is not None:
            if l.kind != "conv":
                raise _fail(where, "residual", "absent for kind " + l.kind, repr(l.residual))
            if shapes.get(l.residual) != tuple(l.out_shape):
                raise _fail(where, "residual", f"an earlier layer of shape {list(l.out_shape)}",
                            f"{l.residual!r} of shape {list(shapes[l.residual]) if l.residual in shapes else None}")
        if l.kind == "maxpool" and (l.out_bits, l.out_signed) != _source_format(model, l.source):
            raise _fail(where, "out_bits/out_signed", "those of its source", (l.out_bits, l.out_signed))
        if l.mul is not None:
            _check_requant(model, l, where)
        shapes[l.name] = tuple(l.out_shape)
    used = {l.source for l in model.layers} | {l.residual for l in model.layers}
    dangling = [l.name for l in model.layers[:-1] if l.name not in used]
    if dangling:
        raise _fail(f"layer '{dangling[0]}'", "output", "used by a later layer (only the last is the result)", "unused")
    return model


def acc_bound(layer: Layer, in_max: int) -> int:
    """Largest |acc| any input with |x| <= in_max can produce (used for widths and overflow checks)."""
    if layer.kind == "avgpool":
        return in_max * layer.in_shape[1] * layer.in_shape[2]
    if layer.weight is None:
        return in_max
    nonzero = np.abs(layer.weight.astype(np.int64)).reshape(layer.weight.shape[0], -1).sum(1)
    return int(nonzero.max(initial=0)) * in_max


def input_range(model: Model, source: str) -> tuple[int, int]:
    if source == "input":
        return value_range(model.input.bits, model.input.signed)
    return model.layer(source).out_range


def _check_requant(model: Model, l: Layer, where: str) -> None:
    """mul and shift as the drain's requant unit holds them (encoding.py). Its other widths (accumulator,
    bias) are derived from the IR's values, so the remaining limit is int64, where the reference computes
    acc * mul + bias and adds the residual."""
    for name, lo, hi, what in (("mul", *value_range(REQUANT_MUL_BITS, True), f"{REQUANT_MUL_BITS}-bit signed"),
                               ("shift", 0, REQUANT_MAX_SHIFT, "the requant unit's largest shift")):
        arr = getattr(l, name)
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            raise _fail(where, name, f"in {lo}..{hi} ({what})", int(arr[bad][0]))
    magnitude = lambda values: max(abs(int(min(values))), abs(int(max(values))))  # np.abs wraps at int64 min
    acc = acc_bound(l, magnitude(input_range(model, l.source)))
    res = 0 if l.residual is None else magnitude(input_range(model, l.residual))
    mul = max(magnitude(l.mul), 1)  # at least 1: the sum itself must fit too
    if acc * mul + res > _INT64_MAX:
        raise _fail(where, "mul", f"at most {(_INT64_MAX - res) // acc} in magnitude (acc * mul within int64 for "
                    f"|acc| <= {acc})", magnitude(l.mul))
    room = _INT64_MAX - acc * mul - res
    if magnitude(l.bias) > room:
        raise _fail(where, "bias", f"in -{room}..{room} (acc * mul + bias + residual within int64 for |acc| <= "
                    f"{acc}, |mul| <= {mul})", next(int(b) for b in l.bias if abs(int(b)) > room))


def _source_format(model: Model, source: str) -> tuple[int, bool]:
    if source == "input":
        return model.input.bits, model.input.signed
    l = model.layer(source)
    return l.out_bits, l.out_signed


# ---------------------------------------------------------------- file format

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def save(model: Model, path: str | os.PathLike) -> None:
    """Validate, then write atomically (a temporary file renamed into place)."""
    validate(model)
    arrays, layers = {}, []
    for l in model.layers:
        entry = {f.name: getattr(l, f.name) for f in dataclasses.fields(l) if f.name not in _ARRAYS}
        entry["in_shape"], entry["out_shape"] = list(l.in_shape), list(l.out_shape)
        for name in _ARRAYS:
            arr = getattr(l, name)
            if arr is not None:
                key = f"{l.name}.{name}"
                arrays[key] = _npy_bytes(arr)
                entry[name] = {"array": key, "sha256": hashlib.sha256(arrays[key]).hexdigest()}
        layers.append(entry)
    manifest = {
        "format": FORMAT, "version": VERSION, "name": model.name, "lanes": model.lanes,
        "input": {**dataclasses.asdict(model.input), "shape": list(model.input.shape)},
        "layers": layers, "meta": model.meta,
    }
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            members = [("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())]
            members += [(f"{k}.npy", v) for k, v in sorted(arrays.items())]
            for name, data in members:
                info = zipfile.ZipInfo(name, _ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str | os.PathLike) -> Model:
    """Read and validate an IR file. Any defect raises IRError with a one-line message."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise IRError(f"{path}: expected an IR file, found {'a folder' if os.path.isdir(path) else 'nothing'}")
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            return validate(_from_manifest(manifest, z))
    except IRError as e:
        raise IRError(f"{path}: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, KeyError, ValueError,
            TypeError, AttributeError, IndexError, OverflowError, RuntimeError) as e:
        # A truncated or edited archive surfaces as any of these; one line names the file and the cause.
        raise IRError(f"{path}: not a readable IR file ({type(e).__name__}: {e})") from None


def _get(d: dict, key: str, kind: type | tuple, where: str):
    if not isinstance(d, dict) or key not in d:
        raise IRError(f"{where}: field '{key}' is missing")
    value = d[key]
    if not isinstance(value, kind) or (kind in (int, (int,)) and isinstance(value, bool)):
        raise _fail(where, key, kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind),
                    repr(value)[:40])
    return value


def _shape(d: dict, key: str, where: str) -> tuple[int, int, int]:
    v = _get(d, key, list, where)
    if len(v) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise _fail(where, key, "three integers", repr(v)[:40])
    return tuple(v)


def _from_manifest(m: dict, z: zipfile.ZipFile) -> Model:
    if _get(m, "format", str, "manifest") != FORMAT:
        raise _fail("manifest", "format", repr(FORMAT), repr(m["format"]))
    if _get(m, "version", int, "manifest") not in READABLE_VERSIONS:
        raise _fail("manifest", "version", f"one of {READABLE_VERSIONS}", m["version"])
    inp = _get(m, "input", dict, "manifest")
    spec = InputSpec(_shape(inp, "shape", "input"), _get(inp, "bits", int, "input"),
                     _get(inp, "signed", bool, "input"), float(_get(inp, "scale", (int, float), "input")))
    layers = []
    for i, e in enumerate(_get(m, "layers", list, "manifest")):
        where = f"layer {i}"
        name = _get(e, "name", str, where)
        where = f"layer '{name}'"
        arrays = {}
        for key in _ARRAYS:
            ref = e.get(key) if isinstance(e, dict) else None
            if ref is None:
                continue
            member = _get(ref, "array", str, f"{where} {key}")
            data = z.read(f"{member}.npy")
            if hashlib.sha256(data).hexdigest() != _get(ref, "sha256", str, f"{where} {key}"):
                raise _fail(where, f"{key} checksum", "the one in the manifest", "a different one (edited file?)")
            arrays[key] = np.load(io.BytesIO(data), allow_pickle=False)
        layers.append(Layer(
            name=name, kind=_get(e, "kind", str, where), source=_get(e, "source", str, where),
            in_shape=_shape(e, "in_shape", where), out_shape=_shape(e, "out_shape", where),
            out_bits=_get(e, "out_bits", int, where), out_signed=_get(e, "out_signed", bool, where),
            relu=_get(e, "relu", bool, where), kernel=_get(e, "kernel", int, where),
            stride=_get(e, "stride", int, where), padding=_get(e, "padding", int, where),
            residual=_get(e, "residual", (str, type(None)), where) if "residual" in e else None,
            tex=_get(e, "tex", int, where) if "tex" in e else 1,
            precision=_get(e, "precision", str, where) if "precision" in e else "ternary", **arrays))
    return Model(_get(m, "name", str, "manifest"), _get(m, "lanes", int, "manifest"), spec, tuple(layers),
                 _get(m, "meta", dict, "manifest"))
