"""Output folders (``--out``) of ``hwgen build|sim|synth`` and ``python -m train``.

Every output is written into a temporary sibling folder and renamed into place, so the folder is never
half-written and a failed run leaves the previous output as it was. A path that already exists is replaced
only when it is a previous output of the same program, or an empty folder (nothing in it to lose): a user's
folder, a file or a symbolic link there is refused, before any work is done and again at the swap (the user
may have made it meanwhile), and nothing is touched.

A folder names its writer in the ``generator`` field of its record file: ``manifest.json`` for hwgen (every
verb writes one; its content stays deterministic), ``metrics.json`` for train.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Writer:
    name: str  # the record's "generator" is this name, alone or followed by " <version>"
    record: str  # the JSON file in each output folder that names its writer

    def owns(self, record: dict) -> bool:
        gen = record.get("generator")
        return isinstance(gen, str) and (gen == self.name or gen.startswith(self.name + " "))


HWGEN = Writer("hwgen", "manifest.json")
TRAIN = Writer("train", "metrics.json")


class OutDirError(ValueError):
    """An output path that may not be replaced; the message is one line: what was found, what was expected."""


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _record(folder: Path, writer: Writer) -> dict:
    try:
        record = json.loads((folder / writer.record).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def foreign(path: Path, writer: Writer) -> str | None:
    """What stands at ``path`` that ``writer`` may not replace, in words; None when it may (nothing there,
    an empty folder, or one of the writer's outputs)."""
    path = Path(path)
    if os.path.islink(path):
        return f"a symbolic link (to {os.readlink(path)})"
    if not os.path.lexists(path):
        above = path.parent
        while not os.path.lexists(above) and above != above.parent:
            above = above.parent
        return None if os.path.isdir(above) else f"the file {above} on its path"
    if not path.is_dir():
        return "a file"
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        return f"a folder that cannot be read ({e.strerror})"
    if not names or writer.owns(_record(path, writer)):
        return None
    return f"a folder {writer.name} did not write (holding {_listing(names)})"


def check(path: Path, writer: Writer, label: str | None = None) -> None:
    """Raise OutDirError unless ``writer`` may write its output to ``path``. ``label`` starts the message
    (default ``--out PATH``)."""
    found = foreign(path, writer)
    if found is not None:
        raise _refused(path, found, writer, label)


def _refused(path: Path, found: str, writer: Writer, label: str | None) -> OutDirError:
    return OutDirError(f"{label or f'--out {path}'}: found {found}; expected a new path, an empty folder or a "
                       f"previous {writer.name} output (its {writer.record} names {writer.name} as the generator)")


def sibling(out: Path) -> Path:
    """A new empty folder beside ``out`` (its parents made), with the permissions of an ordinary folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp makes it private; the output is an ordinary folder
    return tmp


def swap_in(tmp: Path, out: Path, writer: Writer, label: str | None = None) -> None:
    """Rename the finished folder ``tmp`` to ``out``. A previous ``out`` is moved aside first, checked once
    more (what is deleted is what was checked) and removed after, so ``out`` is never half-written. Raises
    OutDirError, with ``tmp`` left in place, when ``out`` may not be replaced."""
    tmp, out = Path(tmp), Path(out)
    check(out, writer, label)
    aside = None
    if os.path.lexists(out):
        aside = out.with_name(f".{out.name}.old{os.getpid()}")
        os.rename(out, aside)
        found = foreign(aside, writer)
        if found is not None:  # changed between the check and the move
            os.rename(aside, out)
            raise _refused(out, found, writer, label)
    try:
        os.rename(tmp, out)
    except OSError:
        if aside is not None and not os.path.lexists(out):
            os.rename(aside, out)
        check(out, writer, label)  # made meanwhile: refused in one line
        raise
    if aside is not None:
        shutil.rmtree(aside)


def remove(path: Path, writer: Writer) -> None:
    """Delete ``path`` if it is an output of ``writer`` (or an empty folder); anything else stays."""
    if os.path.lexists(path) and foreign(path, writer) is None:
        shutil.rmtree(path)
