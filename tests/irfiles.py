"""Editing IR files the way a corrupted download or a careless hand would."""
import json
import zipfile


def rewrite_member(src, dst, member: str, transform) -> None:
    """Copy the IR archive ``src`` to ``dst`` with ``transform(bytes) -> bytes`` applied to one member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, transform(data) if item.filename == member else data)


def edit_manifest(src, dst, edit) -> None:
    """Copy with ``edit(manifest_dict)`` applied to manifest.json."""
    def transform(data):
        m = json.loads(data)
        edit(m)
        return json.dumps(m).encode()
    rewrite_member(src, dst, "manifest.json", transform)
