"""``python -m train``: parse and check the options once, run the stage, write DIR/model.ir and
DIR/metrics.json. The files are written into a temporary folder beside DIR, renamed into place at the end,
so a failed run leaves no output folder behind."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

from hwgen import ir

from .datasets import make_dataset
from .models import MODELS
from .pipeline import MODEL_DATASET, TRAINABLE, TrainConfig, run
from .prune import SELECTIONS
from .quant import THRESHOLD_RULES, TEX_VALUES
from .wpc import MODES

DEFAULTS = TrainConfig()
OUTPUTS = ("model.ir", "metrics.json", "test_images.npy", "test_labels.npy", "train_log.jsonl")
THREADS = 1  # more threads gain little on these small convs and stall badly when cores are busy


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line on stderr and exit status 2 (argparse would print the usage too)."""
        self.exit(2, f"error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m train", description="Train, PE-wise prune and export a ternary CNN.")
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--dataset", choices=TRAINABLE, default=None,
                   help="digits (built in, the default for the digits models) or cifar10 (the python batches in "
                        "--data-dir; the default for resnet20/32/44/56). Nothing is downloaded")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    p.add_argument("--pe", type=int, required=True, help="PEs of the target array (divides --lanes)")
    p.add_argument("--lanes", type=int, default=DEFAULTS.lanes, help="input channels per group (power of two)")
    p.add_argument("--out", required=True, help="output folder: new, or a previous output to replace")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="total epochs (train + fine-tune)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--keep-fraction", type=float, default=DEFAULTS.keep_fraction,
                   help="share of each PE's groups kept per input block")
    p.add_argument("--lam", type=float, default=DEFAULTS.lam, help="WPC group-lasso weight λ")
    p.add_argument("--wpc-ratio", type=float, default=DEFAULTS.ratio,
                   help="r: clip tau = r * mean norm (mean) or the floor(16r)*floor(G/16)-th smallest norm (rank)")
    p.add_argument("--wpc", "--wpc-mode", dest="wpc_mode", choices=MODES, default=DEFAULTS.wpc_mode,
                   help="mean, rank: the paper's clips; balanced: clip per PE and block at the coming pruning")
    p.add_argument("--selection", choices=SELECTIONS, default=DEFAULTS.selection,
                   help="balanced: equal kept groups per PE in every input block; paper: strongest groups "
                        "per layer, PEs may idle")
    p.add_argument("--threshold", choices=THRESHOLD_RULES, default=DEFAULTS.threshold,
                   help="ternary threshold: max (delta * max|W|) or mean (0.7 * mean|W|)")
    p.add_argument("--delta", type=float, default=DEFAULTS.delta, help="delta of the max threshold rule")
    p.add_argument("--tex", type=int, choices=TEX_VALUES, default=DEFAULTS.tex,
                   help="residual expansion: weights in [-tex, tex], run as tex ternary passes")
    p.add_argument("--act-bits", type=int, default=DEFAULTS.act_bits, help="activation bits (2..16)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _replace(new: str, out: str) -> None:
    """Rename ``new`` to ``out``; a previous output there is swapped aside first, restored on failure."""
    if not os.path.exists(out):
        os.rename(new, out)
        return
    old = f"{new}.old"
    os.rename(out, old)
    try:
        os.rename(new, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on unknown or malformed options
    dataset = args.dataset or MODEL_DATASET.get(args.model, "digits")
    cfg = TrainConfig(model=args.model, dataset=dataset, data_dir=args.data_dir, pe=args.pe, lanes=args.lanes, epochs=args.epochs, seed=args.seed,
                      keep_fraction=args.keep_fraction, lam=args.lam, ratio=args.wpc_ratio, wpc_mode=args.wpc_mode,
                      selection=args.selection, threshold=args.threshold, delta=args.delta, tex=args.tex,
                      act_bits=args.act_bits, quiet=args.quiet)
    try:
        cfg.check()
    except ValueError as e:
        return _fail(str(e))
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not (os.path.isdir(out) and set(os.listdir(out)) <= set(OUTPUTS)):
        return _fail(f"--out must be a new folder or a previous output (only {', '.join(OUTPUTS)}), found {out}")
    parent = os.path.dirname(out)
    if os.path.exists(parent) and not os.path.isdir(parent):
        return _fail(f"--out must be inside a folder, found the file {parent}")
    made = []  # the folders this run creates, deepest first, removed again if it fails
    d = parent
    while not os.path.exists(d):
        made.append(d)
        d = os.path.dirname(d)

    # Determinism: the same seed gives the same IR bytes (conv reductions depend on the thread count).
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    done = False
    try:
        model, metrics, log = run(cfg)
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        ir.save(model, os.path.join(tmp, OUTPUTS[0]))
        with open(os.path.join(tmp, OUTPUTS[1]), "w") as f:
            json.dump(metrics, f, indent=1)
            f.write("\n")
        with open(os.path.join(tmp, OUTPUTS[4]), "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in log)
        # the held-out split, as the hardware sees it: `hwgen sim --inputs test_images.npy`
        images, labels = (t.numpy() for t in make_dataset(cfg.dataset, cfg.data_dir, "test").data)
        small = images.min() >= 0 and images.max() <= 255  # CIFAR's 10,000 test images: 30 MB, not 245 MB
        np.save(os.path.join(tmp, OUTPUTS[2]), images.astype(np.uint8 if small else np.int64), allow_pickle=False)
        np.save(os.path.join(tmp, OUTPUTS[3]), labels.astype(np.int64), allow_pickle=False)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
        _replace(tmp, out)
        done = True
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        for d in made if not done else ():
            try:
                os.rmdir(d)
            except OSError:
                break
    if not args.quiet:
        print(f"{out}: int accuracy {metrics['int_accuracy']:.4f}, float {metrics['float_accuracy']:.4f}, "
              f"group sparsity {metrics['group_sparsity']:.3f}, compression {metrics['compression']:.1f}x, "
              f"{metrics['seconds']} s")
    return 0
