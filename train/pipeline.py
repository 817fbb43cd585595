"""The training stage as one function: train with WPC -> PE-balanced prune -> masked fine-tune (λ = 0) ->
export to the IR -> measure (float model and integer reference on the held-out split)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hwgen import ir, reference
from hwgen.mapping import check_pe_lanes

from . import data
from .export import export, logit_scale, snap_requant
from .models import MODELS, TernaryCNN, TernaryResNet
from .prune import DEFAULT_KEEP_FRACTION, Pruner, balanced_masks, group_scores, per_pe_kept
from .wpc import WPCConfig, wpc_penalty

WPC_SHARE = 0.6  # share of the epochs spent in the WPC stage; the rest fine-tune the pruned network


@dataclass(frozen=True)
class TrainConfig:
    model: str = "digits"
    pe: int = 16
    lanes: int = 16
    epochs: int = 40
    seed: int = 0
    keep_fraction: float = DEFAULT_KEEP_FRACTION
    lam: float = 5e-4
    ratio: float = 0.7
    wpc_mode: str = "mean"
    lr: float = 3e-3
    batch_size: int = 64
    quiet: bool = False

    def check(self) -> "TrainConfig":
        """Raise ValueError naming the field, what was expected and what was found."""
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, not {self.model!r}")
        check_pe_lanes(self.pe, self.lanes)
        if not isinstance(self.epochs, int) or self.epochs < 2:
            raise ValueError(f"epochs must be an integer >= 2 (train, then fine-tune), not {self.epochs!r}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep-fraction must be in (0, 1], not {self.keep_fraction}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, not {self.lam}")
        WPCConfig(self.lam, self.ratio, self.lanes, mode=self.wpc_mode)  # its own checks
        if not (self.lr > 0 and self.batch_size >= 1):
            raise ValueError(f"lr and batch size must be positive, not {self.lr}, {self.batch_size}")
        return self

    @property
    def stage_epochs(self) -> tuple[int, int]:
        first = min(self.epochs - 1, max(1, round(self.epochs * WPC_SHARE)))
        return first, self.epochs - first


def _fit(model: TernaryCNN | TernaryResNet, x: torch.Tensor, y: torch.Tensor, epochs: int, cfg: TrainConfig,
         wpc: WPCConfig, gen: torch.Generator, desc: str, after_step=None) -> None:
    """Adam with a cosine learning rate over ``epochs``; the WPC penalty on the prunable layers."""
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
            out = model(x[idx])
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


@torch.no_grad()
def float_accuracy(model: TernaryCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).double().mean())


def int_accuracy(irm: ir.Model, x_int: np.ndarray, y: np.ndarray) -> float:
    return float((reference.predict(irm, x_int).numpy() == y).mean())


def _prune_report(masks: dict[str, np.ndarray], pe: int, model: TernaryCNN) -> dict:
    layers = {}
    for name, m in masks.items():
        layers[name] = {"groups": int(m.size), "kept": int(m.sum()), "per_pe_kept": per_pe_kept(m, pe)}
    groups = sum(v["groups"] for v in layers.values())
    kept = sum(v["kept"] for v in layers.values())
    # Parameter-weighted: 16x for ternary (2 bits vs 32) times all weights over the weights in kept groups.
    weights, kept_weights = 0, 0
    for name, conv in model.weight_layers().items():
        n = conv.weight.numel()
        weights += n
        kept_weights += n * float(masks[name].mean()) if name in masks else n
    return {"group_sparsity": 1 - kept / groups, "compression": 16 / (kept / groups),
            "compression_weighted": 16 * weights / kept_weights, "groups": groups, "kept_groups": kept,
            "layers": layers}


def _pruned_norm_share(layers: dict, masks: dict[str, np.ndarray], lanes: int) -> float:
    """How much of the latent weights' squared group norm the masks remove: near 0 when WPC has already
    shrunk exactly the groups that balanced pruning drops."""
    sq = {n: group_scores(m.weight, lanes) ** 2 for n, m in layers.items()}
    total = sum(float(v.sum()) for v in sq.values())
    return sum(float(v[~masks[n]].sum()) for n, v in sq.items()) / max(total, 1e-30)


@dataclass
class Trained:
    model: TernaryCNN
    masks: dict[str, np.ndarray]
    split: data.Split
    pruned_norm_share: float  # share of the latent squared group norms that pruning removed


def train_model(cfg: TrainConfig) -> Trained:
    """Train with WPC, prune PE-balanced, fine-tune with the masks held, snap the BatchNorm scales onto the
    integer multipliers. Deterministic for a seed (at a fixed thread count)."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    split = data.load_split()
    x, y = data.to_float(split.train_x), torch.from_numpy(split.train_y)
    model = MODELS[cfg.model](data.INPUT_SCALE)
    e1, e2 = cfg.stage_epochs
    wpc = WPCConfig(cfg.lam, cfg.ratio, cfg.lanes, mode=cfg.wpc_mode, pe=cfg.pe, keep_fraction=cfg.keep_fraction)
    _fit(model, x, y, e1, cfg, wpc, gen, "train+WPC")
    layers = model.prunable()
    masks = balanced_masks(layers, cfg.pe, cfg.lanes, cfg.keep_fraction)
    share = _pruned_norm_share(layers, masks, cfg.lanes)
    pruner = Pruner(layers, masks, cfg.lanes)
    _fit(model, x, y, e2, cfg, WPCConfig(0.0, cfg.ratio, cfg.lanes), gen, "fine-tune", pruner.enforce)
    model.eval()
    snap_requant(model)  # the float model measured from here on is the one the IR holds, up to float32
    return Trained(model, masks, split, share)


def run(cfg: TrainConfig) -> tuple[ir.Model, dict]:
    """Train, prune, fine-tune and export; returns the IR and the metrics."""
    t = train_model(cfg)
    s = t.split
    xtr = data.to_float(s.train_x)
    f_acc = float_accuracy(t.model, data.to_float(s.test_x), torch.from_numpy(s.test_y))
    meta = {"seed": cfg.seed, "pe": cfg.pe, "lanes": cfg.lanes, "epochs": cfg.epochs,
            "keep_fraction": cfg.keep_fraction, "lam": cfg.lam, "wpc_mode": cfg.wpc_mode, "wpc_ratio": cfg.ratio,
            "float_accuracy": f_acc}
    irm = export(t.model, cfg.lanes, t.masks, logit_scale(t.model, xtr), meta)
    i_acc = int_accuracy(irm, s.test_x, s.test_y)
    irm.meta["int_accuracy"] = i_acc
    metrics = {"int_accuracy": i_acc, "float_accuracy": f_acc, **_prune_report(t.masks, cfg.pe, t.model),
               "pruned_norm_share": t.pruned_norm_share, "test_images": int(len(s.test_y)),
               "config": asdict(cfg)}
    return irm, metrics
