"""Editing IR files the way a corrupted download or a careless hand would, and checking that an edited
model still builds."""
import hashlib
import io
import json
import zipfile

import numpy as np

from hwgen.contract import ir, reference
from hwgen.build.generate import images
from hwgen.compile.lower import lower


def rewrite_member(src, dst, member: str, transform) -> None:
    """Copy the IR archive ``src`` to ``dst`` with ``transform(bytes) -> bytes`` applied to one member."""
    _rewrite(src, dst, {member: transform})


def _rewrite(src, dst, transforms: dict) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, transforms[item.filename](data) if item.filename in transforms else data)


def edit_manifest(src, dst, edit) -> None:
    """Copy with ``edit(manifest_dict)`` applied to manifest.json."""
    def transform(data):
        m = json.loads(data)
        edit(m)
        return json.dumps(m).encode()
    rewrite_member(src, dst, "manifest.json", transform)


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def replace_array(src, dst, layer: str, field: str, data: bytes) -> None:
    """Copy with the ``.npy`` member of ``layer``'s ``field`` replaced by ``data``, and its manifest checksum
    set to the SHA-256 of ``data`` as ``ir.save`` computes it: the loader reads the new member."""
    with zipfile.ZipFile(src) as z:
        manifest = json.loads(z.read("manifest.json"))
    ref = next(e for e in manifest["layers"] if e["name"] == layer)[field]
    ref["sha256"] = hashlib.sha256(data).hexdigest()
    _rewrite(src, dst, {f"{ref['array']}.npy": lambda _: data,
                        "manifest.json": lambda _: json.dumps(manifest).encode()})


def assert_builds(model: ir.Model, pe: int) -> None:
    """What ``hwgen build`` and ``hwgen sim`` do short of Verilog: lower, pack every ROM image, run the
    reference on images at both ends of the input range."""
    images(lower(model, pe, model.lanes))
    lo, hi = ir.value_range(model.input.bits, model.input.signed)
    batch = np.stack([np.full(model.input.shape, lo), np.full(model.input.shape, hi)])
    reference.run(model, batch)
