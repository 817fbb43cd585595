"""``python -m train``: parse and check the options once, run the stage, write DIR/model.ir and
DIR/metrics.json. The files are written into a temporary folder beside DIR, renamed into place at the end,
so a failed run leaves no output folder behind; an existing DIR is replaced only when it is an earlier
output of train (hwgen.build.outdir). Checkpoints go to DIR.ckpt/ after every epoch (``--resume`` continues from
there) and are removed when the run completes. Under ``torchrun`` the ranks train together and rank 0
writes."""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hwgen import __version__
from hwgen.contract import ir
from hwgen.build import outdir

from . import checkpoint, distributed
from .loop import OPTIMIZERS, SCHEDULES
from .models import MODELS
from .pipeline import MODEL_DATASET, TRAINABLE, TrainConfig, run
from .prune import SELECTIONS
from .quant import THRESHOLD_RULES, TEX_VALUES
from .recipes import NEEDS_INIT, RECIPES, recipe
from .wpc import MODES

DEFAULTS = TrainConfig()
OUTPUTS = ("model.ir", "metrics.json", "test_images.npy", "test_labels.npy", "train_log.jsonl")
THREADS = 1  # more threads gain little on these small convs and stall badly when cores are busy


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line on stderr and exit status 2 (argparse would print the usage too)."""
        self.exit(2, f"error: {message} (see --help)\n")


# option -> TrainConfig field, for the options a recipe may set (their parser default is None: "not given")
_FIELDS = {"model": "model", "dataset": "dataset", "lanes": "lanes", "epochs": "epochs", "keep_fraction": "keep_fraction",
           "lam": "lam", "wpc_ratio": "ratio", "wpc_mode": "wpc_mode", "selection": "selection",
           "threshold": "threshold", "delta": "delta", "tex": "tex", "act_bits": "act_bits",
           "optimizer": "optimizer", "lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay",
           "schedule": "schedule", "batch_size": "batch_size", "input_size": "input_size",
           "eval_images": "eval_images"}


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m train", description="Train, PE-wise prune and export a ternary CNN.",
                epilog="Options left out take the recipe's value, else the default shown. Under torchrun "
                       "(torchrun --nproc_per_node=K -m train ...) the K processes train data-parallel.")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="a paper's hyper-parameters (docs/training.md)")
    p.add_argument("--model", choices=sorted(MODELS), help="required unless the recipe names one")
    p.add_argument("--dataset", choices=TRAINABLE, default=None,
                   help="digits (built in), cifar10 (the python batches in --data-dir) or imagenet (--data-dir "
                        "holding train/ and val/ class folders); default: the model's. Nothing is downloaded")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    p.add_argument("--pe", type=int, required=True, help="PEs of the target array (divides --lanes)")
    p.add_argument("--lanes", type=int, help=f"input channels per group, a power of two ({DEFAULTS.lanes})")
    p.add_argument("--out", required=True, help="output folder: new, empty, or a previous output to replace")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of this --out")
    p.add_argument("--init", help="float state dict to start from (torchvision ResNet names accepted; "
                                  "loaded with weights_only=True)")
    p.add_argument("--init-exclude", default="", metavar="PREFIXES",
                   help="comma-separated keys of the --init file to leave out, e.g. fc. for other classes")
    p.add_argument("--float-first-last", action="store_true",
                   help="first conv and classifier in full precision (evaluated, but hwgen refuses the IR)")
    p.add_argument("--epochs", type=int, help=f"total epochs, train + fine-tune ({DEFAULTS.epochs})")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--keep-fraction", type=float,
                   help=f"share of each PE's groups kept per input block ({DEFAULTS.keep_fraction})")
    p.add_argument("--lam", type=float, help=f"WPC group-lasso weight λ ({DEFAULTS.lam})")
    p.add_argument("--wpc-ratio", type=float,
                   help="r: clip tau = r * mean norm (mean) or the floor(16r)*floor(G/16)-th smallest norm "
                        f"(rank) ({DEFAULTS.ratio})")
    p.add_argument("--wpc", "--wpc-mode", dest="wpc_mode", choices=MODES,
                   help="mean, rank: the paper's clips; balanced: clip per PE and block at the coming pruning "
                        f"({DEFAULTS.wpc_mode})")
    p.add_argument("--selection", choices=SELECTIONS,
                   help="balanced: equal kept groups per PE in every input block; paper: strongest groups "
                        f"per layer, PEs may idle ({DEFAULTS.selection})")
    p.add_argument("--threshold", choices=THRESHOLD_RULES,
                   help=f"ternary threshold: max (delta * max|W|) or mean (0.7 * mean|W|) ({DEFAULTS.threshold})")
    p.add_argument("--delta", type=float, help=f"delta of the max threshold rule ({DEFAULTS.delta})")
    p.add_argument("--tex", type=int, choices=TEX_VALUES,
                   help="residual expansion: weights in [-tex, tex], run as tex ternary passes (1)")
    p.add_argument("--act-bits", type=int, help=f"activation bits, 2..16 ({DEFAULTS.act_bits})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"({DEFAULTS.optimizer})")
    p.add_argument("--lr", type=float, help=f"learning rate ({DEFAULTS.lr})")
    p.add_argument("--momentum", type=float, help=f"SGD Nesterov momentum ({DEFAULTS.momentum})")
    p.add_argument("--weight-decay", type=float, help=f"({DEFAULTS.weight_decay})")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate over the whole run (both stages): cosine, or step (x0.1 at 40%% and "
                        f"60%% of the epochs, x0.5 at 80%%) ({DEFAULTS.schedule})")
    p.add_argument("--batch-size", type=int, help=f"global batch, split over the ranks ({DEFAULTS.batch_size})")
    p.add_argument("--input-size", type=int, help=f"image folder crop size ({DEFAULTS.input_size})")
    p.add_argument("--eval-images", type=int,
                   help="held-out images measured at the end; 0: all (an image folder: 5000)")
    p.add_argument("--workers", type=int, default=0, help="data loader processes for image folders (0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the recipe, then the options given; raises ValueError on a bad combination."""
    fields = recipe(args.recipe) if args.recipe else {}
    fields.update({f: getattr(args, a) for a, f in _FIELDS.items() if getattr(args, a) is not None})
    if "model" not in fields:
        raise ValueError("--model is required (or a --recipe that names one)")
    fields.setdefault("dataset", MODEL_DATASET.get(fields["model"], "digits"))
    if args.recipe in NEEDS_INIT and not args.init:
        raise ValueError(f"recipe {args.recipe} fine-tunes from float weights: --init FILE is required")
    fields.update(data_dir=args.data_dir, pe=args.pe, seed=args.seed, init=args.init, init_exclude=args.init_exclude,
                  float_first_last=args.float_first_last, quiet=args.quiet)
    return TrainConfig(**fields).check()


def _remove_checkpoint(path: str) -> None:
    """The run is complete: nothing to resume. Only the checkpoint goes, with any half-written one a killed
    run left (checkpoint.save's ``<path>.tmp<pid>``); its folder stays if a user put anything else in it."""
    for name in [path, *glob.glob(glob.escape(path) + ".tmp*")]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on unknown or malformed options
    try:
        cfg = config(args)
        world = distributed.world_from_env()
    except ValueError as e:
        return _fail(str(e))
    if args.workers < 0:
        return _fail(f"--workers must be >= 0, not {args.workers}")
    out = os.path.abspath(args.out)
    ckpt = checkpoint.path_for(out)
    try:
        outdir.check(Path(out), outdir.TRAIN, f"--out {args.out}")
    except outdir.OutDirError as e:
        return _fail(str(e))
    ckpt_dir = os.path.dirname(ckpt)
    if os.path.lexists(ckpt_dir) and not os.path.isdir(ckpt_dir):
        return _fail(f"--out {args.out}: found a file at {ckpt_dir}, where the run's checkpoints go; expected "
                     "a folder or nothing there")
    parent = os.path.dirname(out)
    if os.path.exists(ckpt) and not args.resume:
        return _fail(f"found the checkpoint of an interrupted run at {ckpt}: add --resume to continue it, or "
                     "delete it to start over")
    made = []  # the folders this run creates, deepest first, removed again if it fails
    d = parent
    while not os.path.exists(d):
        made.append(d)
        d = os.path.dirname(d)

    # Determinism: the same seed gives the same IR bytes (conv reductions depend on the thread count).
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    distributed.init(world)
    if not world.main:
        try:
            run(cfg, world, ckpt, args.resume, args.workers)
        except ValueError as e:
            return _fail(f"rank {world.rank}: {e}")
        return 0
    tmp = str(outdir.sibling(Path(out)))
    done = False
    try:
        try:
            result = run(cfg, world, ckpt, args.resume, args.workers)
        except ValueError as e:  # bad data, init weights or checkpoint: one line, the checkpoint is kept
            return _fail(str(e))
        # the generator marks the folder as train's: a later run may replace it (hwgen.build.outdir)
        metrics = {"generator": f"{outdir.TRAIN.name} {__version__}", **result.metrics}
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        ir.save(result.ir, os.path.join(tmp, OUTPUTS[0]))
        with open(os.path.join(tmp, OUTPUTS[1]), "w") as f:
            json.dump(metrics, f, indent=1)
            f.write("\n")
        with open(os.path.join(tmp, OUTPUTS[4]), "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in result.log)
        # the held-out images measured, as the hardware sees them: `hwgen sim --inputs test_images.npy`
        images = result.test_x
        small = images.min() >= 0 and images.max() <= 255  # CIFAR's 10,000 test images: 30 MB, not 245 MB
        np.save(os.path.join(tmp, OUTPUTS[2]), images.astype(np.uint8 if small else np.int64), allow_pickle=False)
        np.save(os.path.join(tmp, OUTPUTS[3]), result.test_y.astype(np.int64), allow_pickle=False)
        try:
            outdir.swap_in(Path(tmp), Path(out), outdir.TRAIN, f"--out {args.out}")
        except outdir.OutDirError as e:  # made meanwhile; the checkpoint is kept
            return _fail(str(e))
        done = True
        _remove_checkpoint(ckpt)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        for d in made if not done and not os.path.exists(ckpt) else ():
            try:
                os.rmdir(d)
            except OSError:
                break
    if not args.quiet:
        print(f"{out}: int accuracy {metrics['int_accuracy']:.4f}, float {metrics['float_accuracy']:.4f}, "
              f"group sparsity {metrics['group_sparsity']:.3f}, compression {metrics['compression']:.1f}x, "
              f"{metrics['seconds']} s")
    return 0
