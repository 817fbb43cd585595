"""The training stage as one function: train with WPC -> prune (PE-balanced, or the paper's unbalanced
selection) -> masked fine-tune (λ = 0) -> export to the IR -> measure (float model and integer reference on
the held-out split). Checkpointed every epoch; data-parallel under torchrun (``distributed.py``)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from hwgen.contract import ir, reference
from hwgen.contract.mapping import block_bounds, check_pe_lanes, kept_groups

from . import checkpoint, data, distributed
from .datasets import DataSpec, make_dataset
from .distributed import World
from .export import export, logit_scale, snap_requant
from .init_weights import load_float_init
from .loop import OPTIMIZERS, SCHEDULES, RunOptimizer, Stage, steps_per_epoch, to_input
from .models import MODELS, TernaryCNN, TernaryResNet
from .prune import DEFAULT_KEEP_FRACTION, SELECTIONS, Pruner, group_scores, per_pe_kept, select_masks
from .quant import DEFAULT_DELTA, TernaryConv2d, TernaryLinear, check_ternary_options, configure_ternary
from .wpc import WPCConfig

TRAINABLE = ("digits", "cifar10", "imagenet")
MODEL_DATASET = {name: ("digits" if name.startswith("digits") else "imagenet" if name == "resnet18" else "cifar10")
                 for name in MODELS}
LOGIT_CALIBRATION_IMAGES = 2048  # enough to find the largest logit; all of CIFAR would be slow on a CPU
FOLDER_CALIBRATION_IMAGES = 256  # image folders load from disk: fewer, still enough for the largest logit
FOLDER_EVAL_IMAGES = 5000  # default held-out images measured for an image folder (in-memory sets: all)
LOG_EVAL_IMAGES = 1000  # held-out images evaluated per epoch for the log (all of them for digits)
WPC_SHARE = 0.6  # share of the epochs spent in the WPC stage; the rest fine-tune the pruned network


@dataclass(frozen=True)
class TrainConfig:
    model: str = "digits"
    dataset: str = "digits"
    data_dir: str | None = None
    input_size: int = 224  # image folders only: crop size
    pe: int = 16
    lanes: int = 16
    epochs: int = 40
    seed: int = 0
    keep_fraction: float = DEFAULT_KEEP_FRACTION
    lam: float = 5e-4
    ratio: float = 0.7
    wpc_mode: str = "mean"
    selection: str = "balanced"  # or "paper": strongest groups per layer, no per-PE balance
    threshold: str = "max"  # ternary Δ rule: "max" (δ·max|W|) or "mean" (0.7·mean|W|)
    delta: float = DEFAULT_DELTA
    tex: int = 1  # residual expansion: weights in [-tex, tex]
    act_bits: int = 8
    float_first_last: bool = False  # first conv and classifier in full precision (not buildable by hwgen)
    init: str | None = None  # float state dict to start from (torchvision names accepted)
    init_exclude: str = ""  # comma-separated key prefixes of the init file to leave out, e.g. "fc."
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "cosine"  # over the whole run: cosine, or step (x0.1 at 40% and 60% of the epochs, x0.5 at 80%)
    batch_size: int = 64
    eval_images: int = 0  # held-out images measured at the end; 0: all (an image folder: FOLDER_EVAL_IMAGES)
    quiet: bool = False

    def check(self) -> "TrainConfig":
        """Raise ValueError naming the field, what was expected and what was found."""
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, not {self.model!r}")
        if self.dataset not in TRAINABLE:
            raise ValueError(f"dataset must be one of {', '.join(TRAINABLE)}, not {self.dataset!r}")
        if MODEL_DATASET[self.model] != self.dataset:
            raise ValueError(f"model {self.model} trains on {MODEL_DATASET[self.model]}, not {self.dataset}")
        check_pe_lanes(self.pe, self.lanes)
        if not isinstance(self.epochs, int) or self.epochs < 2:
            raise ValueError(f"epochs must be an integer >= 2 (train, then fine-tune), not {self.epochs!r}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep-fraction must be in (0, 1], not {self.keep_fraction}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, not {self.lam}")
        WPCConfig(self.lam, self.ratio, self.lanes, mode=self.wpc_mode)  # its own checks
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, not {self.selection!r}")
        check_ternary_options(self.delta, self.threshold, self.tex)
        if not isinstance(self.act_bits, int) or not 2 <= self.act_bits <= 16:
            raise ValueError(f"act-bits must be an integer in 2..16, not {self.act_bits!r}")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)} and schedule one of "
                             f"{', '.join(SCHEDULES)}, found {self.optimizer!r}, {self.schedule!r}")
        if not (self.lr > 0 and self.batch_size >= 1 and self.weight_decay >= 0 and 0 <= self.momentum < 1):
            raise ValueError(f"lr and batch size must be positive, weight decay >= 0 and momentum in [0, 1), "
                             f"found {self.lr}, {self.batch_size}, {self.weight_decay}, {self.momentum}")
        if not (isinstance(self.eval_images, int) and self.eval_images >= 0 and self.input_size >= 32):
            raise ValueError(f"eval-images must be an integer >= 0 and input-size >= 32, found "
                             f"{self.eval_images!r}, {self.input_size!r}")
        return self

    @property
    def stage_epochs(self) -> tuple[int, int]:
        first = min(self.epochs - 1, max(1, round(self.epochs * WPC_SHARE)))
        return first, self.epochs - first


@torch.no_grad()
def float_accuracy(model: TernaryCNN, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / max(1, len(x))


def int_accuracy(irm: ir.Model, x_int: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    hits = sum(int((reference.predict(irm, x_int[i:i + batch]).numpy() == y[i:i + batch]).sum())
               for i in range(0, len(x_int), batch))
    return hits / max(1, len(x_int))


def materialize(spec: DataSpec, limit: int = 0, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels as arrays: all of an in-memory set (or its first ``limit``); of an image folder,
    ``limit`` images spread evenly over it (so every class appears)."""
    if isinstance(spec.data, tuple):
        x, y = (t.numpy() for t in spec.data)
        return (x[:limit], y[:limit]) if limit else (x, y)
    ds = spec.data
    n = min(limit or len(ds), len(ds))
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int).tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=64, num_workers=workers)
    xs, ys = zip(*((xb, torch.as_tensor(yb)) for xb, yb in loader))
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def _kept_weights(mask: np.ndarray, shape: torch.Size, lanes: int) -> int:
    """Weights in the kept groups (the last input block may be narrower than ``lanes``)."""
    per_in = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return sum(int(mask[:, j].sum()) * (e - s) * per_in for j, (s, e) in enumerate(block_bounds(shape[1], lanes)))


def _prune_report(masks: dict[str, np.ndarray], pe: int, model: TernaryCNN, lanes: int = 16,
                  tex: int = 1) -> dict:
    """Per weight layer: groups, kept, density, compression = (16 / tex) / density (32-bit float versus
    2·tex-bit weights, pruned groups not stored) and its parameter-weighted twin (stored bits, not groups; a
    full-precision layer stores 32 bits a weight). Totals: the group figures over the pruned layers, the
    weighted compression over every weight layer."""
    layers, weights, stored_bits = {}, 0, 0
    for name, mod in model.weight_layers().items():
        shape = mod.weight.shape
        pruned = name in masks
        bits = 2 * tex if isinstance(mod, (TernaryConv2d, TernaryLinear)) else 32
        m = masks[name] if pruned else np.ones((shape[0], len(block_bounds(shape[1], lanes))), bool)
        n, kw = mod.weight.numel(), _kept_weights(m, shape, lanes)
        density = float(m.mean())
        layers[name] = {"pruned": pruned, "bits": bits, "groups": int(m.size), "kept": int(m.sum()),
                        "density": density, "compression": 32 / bits / density if density else None, "weights": n,
                        "kept_weights": kw, "compression_weighted": 32 * n / (bits * kw) if kw else None}
        if pruned:
            layers[name]["per_pe_kept"] = per_pe_kept(m, pe)
        weights += n
        stored_bits += bits * kw
    groups = sum(int(m.size) for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return {"group_sparsity": 1 - kept / groups, "compression": 16 / tex / (kept / groups),
            "compression_weighted": 32 * weights / stored_bits, "groups": groups, "kept_groups": kept,
            "layers": layers}


def _pruned_norm_share(layers: dict, masks: dict[str, np.ndarray], lanes: int) -> float:
    """How much of the latent weights' squared group norm the masks remove: near 0 when WPC has already
    shrunk exactly the groups that pruning drops."""
    sq = {n: group_scores(m.weight, lanes) ** 2 for n, m in layers.items()}
    total = sum(float(v.sum()) for v in sq.values())
    return sum(float(v[~masks[n]].sum()) for n, v in sq.items()) / max(total, 1e-30)


@dataclass
class Trained:
    model: TernaryCNN
    masks: dict[str, np.ndarray]
    split: data.Split  # integer images: calibration (train) and held-out (test) arrays
    input_scale: float
    pruned_norm_share: float  # share of the latent squared group norms that pruning removed
    log: list  # one record per epoch (train_log.jsonl)
    init: dict  # what --init loaded: {"loaded": count, "skipped": model keys}, empty without --init


def _build(cfg: TrainConfig, spec: DataSpec, report: dict | None = None) -> TernaryCNN | TernaryResNet:
    """The model, its float initial weights loaded (what was loaded goes into ``report``), ternary configured."""
    options = dict(input_scale=spec.input_scale, act_bits=cfg.act_bits, float_first_last=cfg.float_first_last)
    if cfg.dataset == "imagenet":
        options.update(classes=spec.num_classes, input_size=cfg.input_size)
    model = MODELS[cfg.model](**options)
    if cfg.init:
        loaded = load_float_init(model, cfg.init, tuple(p for p in cfg.init_exclude.split(",") if p))
        if report is not None:
            report.update(loaded=len(loaded["loaded"]), skipped=loaded["skipped"])
    configure_ternary(model, cfg.delta, cfg.threshold, cfg.tex)
    return model


def train_model(cfg: TrainConfig, world: World = World(), ckpt: str | None = None, resume: bool = False,
                workers: int = 0) -> Trained:
    """Train with WPC, prune (``cfg.selection``), fine-tune with the masks held, snap the BatchNorm scales onto
    the integer multipliers. One optimizer and one learning-rate schedule span both stages. Deterministic for
    a seed (at a fixed thread count). ``ckpt``: checkpoint file written after every epoch (by rank 0);
    ``resume``: continue from it."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train = make_dataset(cfg.dataset, cfg.data_dir, "train", size=cfg.input_size, seed=cfg.seed)
    test = make_dataset(cfg.dataset, cfg.data_dir, "test", size=cfg.input_size)
    folder = not isinstance(train.data, tuple)
    calib = materialize(train, FOLDER_CALIBRATION_IMAGES if folder else LOGIT_CALIBRATION_IMAGES, workers)
    held = materialize(test, cfg.eval_images or (FOLDER_EVAL_IMAGES if folder else 0), workers)
    split = data.Split(*calib, *held)
    init = {}
    model = _build(cfg, train, init)
    net = model
    if world.size > 1:
        distributed.globalize_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(model)
    optim = RunOptimizer(model.parameters(), cfg, cfg.epochs, steps_per_epoch(train, cfg.batch_size, world))
    state = checkpoint.load(ckpt, asdict(cfg)) if resume else None
    done, masks, log, share = 0, {}, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        done, log, share = state["epochs_done"], list(state["log"]), state["pruned_norm_share"]
        masks = {k: v.numpy() for k, v in state["masks"].items()}
    e1, e2 = cfg.stage_epochs
    bar = tqdm(total=cfg.epochs, initial=done, desc="train+WPC" if done < e1 else "fine-tune", unit="epoch",
               disable=cfg.quiet or not world.main)

    def run_stage(stage: Stage, first: int, last: int) -> None:
        for e in range(first, last):
            record = {"stage": stage_name(e), **stage.epoch(gen, e)}
            if world.main:
                log.append(_epoch_record(model, cfg, split, train.input_scale, masks, e, record))
                bar.set_postfix(loss=record["loss"], acc=record["train_accuracy"], wpc=f"{record['wpc_penalty']:.4f}")
                bar.set_description(record["stage"])
                bar.update()
                if ckpt is not None:
                    checkpoint.save(ckpt, {"config": asdict(cfg), "epochs_done": e + 1,
                                           "model": model.state_dict(), "optimizer": optim.state_dict(),
                                           "generator": gen.get_state(), "rng": torch.get_rng_state(),
                                           "masks": {k: torch.from_numpy(v) for k, v in masks.items()},
                                           "log": log, "pruned_norm_share": share})

    def stage_name(epoch: int) -> str:
        return "train+WPC" if epoch < e1 else "fine-tune"

    wpc = WPCConfig(cfg.lam, cfg.ratio, cfg.lanes, mode=cfg.wpc_mode, pe=cfg.pe, keep_fraction=cfg.keep_fraction)
    if done < e1:
        run_stage(Stage(net, model, cfg, wpc, e1, train, world, workers=workers, optim=optim), done, e1)
    layers = model.prunable()
    if not masks:
        masks.update(select_masks(layers, cfg.pe, cfg.lanes, cfg.keep_fraction, cfg.selection))
        share = _pruned_norm_share(layers, masks, cfg.lanes)
    pruner = Pruner(layers, masks, cfg.lanes)
    fine = Stage(net, model, cfg, WPCConfig(0.0, cfg.ratio, cfg.lanes), e2, train, world, pruner.enforce, workers,
                 optim)
    run_stage(fine, max(done, e1), cfg.epochs)
    bar.close()
    distributed.check_in_sync(model)
    model.eval()
    snap_requant(model)  # the float model measured from here on is the one the IR holds, up to float32
    return Trained(model, masks, split, train.input_scale, share, log, init)


@torch.no_grad()
def _epoch_record(model, cfg: TrainConfig, split: data.Split, scale: float, masks: dict, epoch: int,
                  record: dict) -> dict:
    """The log line of an epoch: the training figures, plus on (up to LOG_EVAL_IMAGES) held-out images the
    float accuracy and the integer accuracy of the network exported as it is now, and the density of the
    prunable groups whose ternary weights are not all zero. Uses no random numbers, so logging does not
    change the run."""
    tx, ty = split.test_x[:LOG_EVAL_IMAGES], split.test_y[:LOG_EVAL_IMAGES]
    xf = to_input(tx, scale)
    f_acc = float_accuracy(model, xf, torch.from_numpy(ty))
    irm = export(model, cfg.lanes, masks, logit_scale(model, xf), {})
    density = [kept_groups(l.weight, cfg.lanes) for l in irm.layers if l.name in model.prunable()]
    kept = sum(int(d.sum()) for d in density)
    return {"epoch": epoch, **record, "float_accuracy": round(f_acc, 6),
            "int_accuracy": round(int_accuracy(irm, tx, ty), 6),
            "group_density": round(kept / max(1, sum(d.size for d in density)), 6)}


@dataclass
class Result:
    ir: ir.Model
    metrics: dict
    log: list
    test_x: np.ndarray  # the held-out integer images measured (what `hwgen sim --inputs` takes)
    test_y: np.ndarray


def run(cfg: TrainConfig, world: World = World(), ckpt: str | None = None, resume: bool = False,
        workers: int = 0) -> Result | None:
    """Train, prune, fine-tune and export; the IR, the metrics and the per-epoch log (None on ranks > 0)."""
    t = train_model(cfg, world, ckpt, resume, workers)
    if not world.main:
        return None
    s = t.split
    xtr = to_input(s.train_x, t.input_scale)
    f_acc = float_accuracy(t.model, to_input(s.test_x, t.input_scale), torch.from_numpy(s.test_y))
    meta = {"dataset": cfg.dataset, "seed": cfg.seed, "pe": cfg.pe, "lanes": cfg.lanes, "epochs": cfg.epochs,
            "keep_fraction": cfg.keep_fraction, "lam": cfg.lam, "wpc_mode": cfg.wpc_mode, "wpc_ratio": cfg.ratio,
            "selection": cfg.selection, "threshold": cfg.threshold, "delta": cfg.delta, "tex": cfg.tex,
            "act_bits": cfg.act_bits, "float_first_last": cfg.float_first_last, "float_accuracy": f_acc}
    irm = export(t.model, cfg.lanes, t.masks, logit_scale(t.model, xtr), meta)
    i_acc = int_accuracy(irm, s.test_x, s.test_y)
    irm.meta["int_accuracy"] = i_acc
    metrics = {"int_accuracy": i_acc, "float_accuracy": f_acc,
               **_prune_report(t.masks, cfg.pe, t.model, cfg.lanes, cfg.tex),
               "pruned_norm_share": t.pruned_norm_share, "test_images": int(len(s.test_y)),
               "data_parallel_ranks": world.size, "init": t.init, "config": asdict(cfg)}
    return Result(irm, metrics, t.log, s.test_x, s.test_y)
