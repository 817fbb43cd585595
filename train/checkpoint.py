"""Per-epoch training checkpoints, so that ``--resume`` continues a killed run where it stopped.

One file, ``last.pt``, replaced atomically after every epoch: model, the run's optimizer and schedule state
(one for both stages), both random generators, the masks once pruning has run, the epoch log and the
configuration. It holds tensors and plain containers only and is read with ``torch.load(weights_only=True)``:
loading never runs code.
A resumed run gives the same IR, byte for byte, as one that was never interrupted (same thread count).
"""
from __future__ import annotations

import os

import torch

FORMAT = "ternary-train-checkpoint"
VERSION = 2  # 1: an optimizer and schedule per stage, restarted at the fine-tune stage
FILE = "last.pt"


def path_for(out: str) -> str:
    """Checkpoints of a run writing ``out`` live beside it, in ``out.ckpt/`` (removed when the run ends)."""
    return os.path.join(f"{os.path.abspath(out)}.ckpt", FILE)


def save(path: str, state: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str, config: dict) -> dict:
    """Read a checkpoint written for the same ``config`` (a TrainConfig as a dict; ``quiet`` may differ)."""
    if not os.path.isfile(path):
        raise ValueError(f"--resume: expected a checkpoint at {path} (from an interrupted run with the same "
                         "--out), found none")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: one line, never code
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        found = (f"{state.get('format')} version {state.get('version')}" if isinstance(state, dict)
                 else type(state).__name__)
        raise ValueError(f"{path}: expected a {FORMAT} version {VERSION} file, found {found}")
    saved = {k: v for k, v in state["config"].items() if k != "quiet"}
    wanted = {k: v for k, v in config.items() if k != "quiet"}
    differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if differ:
        k = differ[0]
        raise ValueError(f"--resume: the checkpoint was made with other options ({len(differ)} differ; "
                         f"{k}: expected {saved.get(k)!r}, found {wanted.get(k)!r}); rerun with the same options")
    return state
