"""The training stage as one function: train with WPC -> prune (PE-balanced, or the paper's unbalanced
selection) -> masked fine-tune (λ = 0) -> export to the IR -> measure (float model and integer reference on
the held-out split)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hwgen import ir, reference
from hwgen.mapping import block_bounds, check_pe_lanes, kept_groups

from . import data
from .datasets import DATASETS, make_dataset
from .export import export, logit_scale, snap_requant
from .models import MODELS, TernaryCNN, TernaryResNet
from .prune import DEFAULT_KEEP_FRACTION, SELECTIONS, Pruner, group_scores, per_pe_kept, select_masks
from .quant import DEFAULT_DELTA, check_ternary_options, configure_ternary
from .wpc import WPCConfig, wpc_penalty

TRAINABLE = ("digits", "cifar10")  # in-memory data sets; ImageFolder training comes with the data loader work
MODEL_DATASET = {name: ("digits" if name.startswith("digits") else "cifar10") for name in MODELS}
LOGIT_CALIBRATION_IMAGES = 2048  # enough to find the largest logit; all of CIFAR would be slow on a CPU
LOG_EVAL_IMAGES = 1000  # held-out images evaluated per epoch for the log (all of them for digits)
WPC_SHARE = 0.6  # share of the epochs spent in the WPC stage; the rest fine-tune the pruned network


@dataclass(frozen=True)
class TrainConfig:
    model: str = "digits"
    dataset: str = "digits"
    data_dir: str | None = None
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
    lr: float = 3e-3
    batch_size: int = 64
    quiet: bool = False

    def check(self) -> "TrainConfig":
        """Raise ValueError naming the field, what was expected and what was found."""
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, not {self.model!r}")
        if self.dataset not in TRAINABLE:
            raise ValueError(f"dataset must be one of {', '.join(TRAINABLE)} (imagenet training is not wired "
                             f"yet), not {self.dataset!r}")
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
        if not (self.lr > 0 and self.batch_size >= 1):
            raise ValueError(f"lr and batch size must be positive, not {self.lr}, {self.batch_size}")
        return self

    @property
    def stage_epochs(self) -> tuple[int, int]:
        first = min(self.epochs - 1, max(1, round(self.epochs * WPC_SHARE)))
        return first, self.epochs - first


def to_input(x_int, scale: float) -> torch.Tensor:
    """Integer pixels -> the float model's input (exact in float32 for 8-bit pixels)."""
    return torch.as_tensor(x_int).to(torch.float32) * scale


def _fit(model: TernaryCNN | TernaryResNet, x: torch.Tensor, y: torch.Tensor, epochs: int, cfg: TrainConfig,
         wpc: WPCConfig, gen: torch.Generator, desc: str, after_step=None, scale: float = data.INPUT_SCALE,
         augment=None, on_epoch=None) -> None:
    """Adam with a cosine learning rate over ``epochs``; the WPC penalty on the prunable layers. ``x`` holds
    integer pixels; each batch is augmented (if ``augment``) and scaled to the float input."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = epochs * math.ceil(len(x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    prunable = [m.weight for m in model.prunable().values()]
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=cfg.quiet)
    for _ in bar:
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total, correct = 0.0, 0
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            out = model(to_input(x[idx] if augment is None else augment(x[idx], gen), scale))
            loss = F.cross_entropy(out, y[idx])
            penalty = wpc_penalty(prunable, wpc)
            opt.zero_grad()
            (loss + penalty).backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y[idx]).sum())
        bar.set_postfix(loss=f"{total / len(x):.3f}", acc=f"{correct / len(x):.3f}",
                        wpc=f"{float(penalty.detach()):.4f}")
        if on_epoch is not None:
            on_epoch({"stage": desc, "loss": round(total / len(x), 6), "train_accuracy": round(correct / len(x), 6),
                      "wpc_penalty": float(penalty.detach())})


@torch.no_grad()
def float_accuracy(model: TernaryCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).double().mean())


def int_accuracy(irm: ir.Model, x_int: np.ndarray, y: np.ndarray) -> float:
    return float((reference.predict(irm, x_int).numpy() == y).mean())


def _kept_weights(mask: np.ndarray, shape: torch.Size, lanes: int) -> int:
    """Weights in the kept groups (the last input block may be narrower than ``lanes``)."""
    per_in = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return sum(int(mask[:, j].sum()) * (e - s) * per_in for j, (s, e) in enumerate(block_bounds(shape[1], lanes)))


def _prune_report(masks: dict[str, np.ndarray], pe: int, model: TernaryCNN, lanes: int = 16,
                  tex: int = 1) -> dict:
    """Per weight layer: groups, kept, density, compression = (16 / tex) / density (32-bit float versus
    2·tex-bit weights, pruned groups not stored) and its parameter-weighted twin (kept weights, not groups).
    Totals: the group figures over the pruned layers, the weighted compression over every weight layer."""
    ratio = 16 / tex
    layers, weights, kept_weights = {}, 0, 0
    for name, mod in model.weight_layers().items():
        shape = mod.weight.shape
        pruned = name in masks
        m = masks[name] if pruned else np.ones((shape[0], len(block_bounds(shape[1], lanes))), bool)
        n, kw = mod.weight.numel(), _kept_weights(m, shape, lanes)
        density = float(m.mean())
        layers[name] = {"pruned": pruned, "groups": int(m.size), "kept": int(m.sum()), "density": density,
                        "compression": ratio / density if density else None, "weights": n,
                        "kept_weights": kw, "compression_weighted": ratio * n / kw if kw else None}
        if pruned:
            layers[name]["per_pe_kept"] = per_pe_kept(m, pe)
        weights += n
        kept_weights += kw
    groups = sum(int(m.size) for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return {"group_sparsity": 1 - kept / groups, "compression": ratio / (kept / groups),
            "compression_weighted": ratio * weights / kept_weights, "groups": groups, "kept_groups": kept,
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
    split: data.Split  # integer images of the data set's train and test splits
    input_scale: float
    pruned_norm_share: float  # share of the latent squared group norms that pruning removed
    log: list  # one record per epoch (train_log.jsonl)


def train_model(cfg: TrainConfig) -> Trained:
    """Train with WPC, prune (``cfg.selection``), fine-tune with the masks held, snap the BatchNorm scales onto
    the integer multipliers. Deterministic for a seed (at a fixed thread count)."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train = make_dataset(cfg.dataset, cfg.data_dir, "train", seed=cfg.seed)
    test = make_dataset(cfg.dataset, cfg.data_dir, "test")
    (x, y), (tx, ty) = train.data, test.data
    split = data.Split(x.numpy(), y.numpy(), tx.numpy(), ty.numpy())
    model = MODELS[cfg.model](input_scale=train.input_scale, act_bits=cfg.act_bits)
    fit = dict(scale=train.input_scale, augment=train.augment)
    configure_ternary(model, cfg.delta, cfg.threshold, cfg.tex)
    e1, e2 = cfg.stage_epochs
    wpc = WPCConfig(cfg.lam, cfg.ratio, cfg.lanes, mode=cfg.wpc_mode, pe=cfg.pe, keep_fraction=cfg.keep_fraction)
    log, current = [], {"masks": {}}
    fit["on_epoch"] = lambda record: log.append(_epoch_record(model, cfg, split, train.input_scale,
                                                              current["masks"], len(log), record))
    _fit(model, x, y, e1, cfg, wpc, gen, "train+WPC", **fit)
    layers = model.prunable()
    masks = select_masks(layers, cfg.pe, cfg.lanes, cfg.keep_fraction, cfg.selection)
    current["masks"] = masks
    share = _pruned_norm_share(layers, masks, cfg.lanes)
    pruner = Pruner(layers, masks, cfg.lanes)
    _fit(model, x, y, e2, cfg, WPCConfig(0.0, cfg.ratio, cfg.lanes), gen, "fine-tune", pruner.enforce, **fit)
    model.eval()
    snap_requant(model)  # the float model measured from here on is the one the IR holds, up to float32
    return Trained(model, masks, split, train.input_scale, share, log)


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


def run(cfg: TrainConfig) -> tuple[ir.Model, dict, list]:
    """Train, prune, fine-tune and export; returns the IR, the metrics and the per-epoch log."""
    t = train_model(cfg)
    s = t.split
    xtr = to_input(s.train_x[:LOGIT_CALIBRATION_IMAGES], t.input_scale)
    f_acc = float_accuracy(t.model, to_input(s.test_x, t.input_scale), torch.from_numpy(s.test_y))
    meta = {"dataset": cfg.dataset, "seed": cfg.seed, "pe": cfg.pe, "lanes": cfg.lanes, "epochs": cfg.epochs,
            "keep_fraction": cfg.keep_fraction, "lam": cfg.lam, "wpc_mode": cfg.wpc_mode, "wpc_ratio": cfg.ratio,
            "selection": cfg.selection, "threshold": cfg.threshold, "delta": cfg.delta, "tex": cfg.tex,
            "act_bits": cfg.act_bits, "float_accuracy": f_acc}
    irm = export(t.model, cfg.lanes, t.masks, logit_scale(t.model, xtr), meta)
    i_acc = int_accuracy(irm, s.test_x, s.test_y)
    irm.meta["int_accuracy"] = i_acc
    metrics = {"int_accuracy": i_acc, "float_accuracy": f_acc,
               **_prune_report(t.masks, cfg.pe, t.model, cfg.lanes, cfg.tex),
               "pruned_norm_share": t.pruned_norm_share, "test_images": int(len(s.test_y)),
               "config": asdict(cfg)}
    return irm, metrics, t.log
