"""One training stage, epoch by epoch: the WPC penalty on the prunable layers, global batches split over the
data-parallel ranks (``distributed.py``), and the run's optimizer and learning-rate schedule (``RunOptimizer``).

The stages of a run share one ``RunOptimizer``, so the learning rate follows one schedule over the whole run,
as the papers' recipes do (no restart at the fine-tune stage). Its state goes into the checkpoint after every
epoch, so a resumed run goes on exactly where it stopped.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .datasets import DataSpec
from .distributed import World, active
from .wpc import WPCConfig, wpc_penalty

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "step")
STEP_MILESTONES = ((0.4, 0.1), (0.6, 0.1), (0.8, 0.5))  # of the run's epochs: x0.1 at 80 and 120, x0.5 at 160 of 200


def to_input(x_int, scale: float) -> torch.Tensor:
    """Integer pixels -> the float model's input (exact in float32 for 8-bit pixels)."""
    return torch.as_tensor(x_int).to(torch.float32) * scale


def lr_factor(schedule: str, step: int, epochs: int, per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` of a run of ``epochs`` epochs of ``per_epoch`` steps:
    cosine over the steps, or step per epoch (each milestone applies from the first epoch at or past it)."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / (epochs * per_epoch)))
    epoch = step // per_epoch
    return math.prod(gamma for at, gamma in STEP_MILESTONES if epoch >= at * epochs)


def steps_per_epoch(data: DataSpec, batch_size: int, world: World = World()) -> int:
    """The optimizer steps of an epoch: the global batches ``epoch_batches`` yields (it skips batches with fewer
    images than ranks), so that the schedule's epochs are the loop's."""
    n = len(data.data[0]) if isinstance(data.data, tuple) else len(data.data)
    full, last = divmod(n, batch_size)
    return max(1, full * (batch_size >= world.size) + (last >= world.size))


def epoch_batches(data: DataSpec, batch_size: int, gen: torch.Generator, world: World, epoch: int,
                  workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """(integer images, labels, global batch size) of this rank's rows of each global batch. The order and
    the augmentation are drawn for the whole global batch from ``gen`` on every rank, so they do not depend
    on the number of ranks. A last batch with fewer images than ranks is skipped when data-parallel."""
    if isinstance(data.data, tuple):
        x, y = data.data
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx] if data.augment is None else data.augment(x[idx], gen)
            if len(idx) >= world.size:
                rows = world.shard(torch.arange(len(idx)))
                yield xb[rows], y[idx][rows], len(idx)
        return
    ds = data.data
    ds.set_epoch(epoch)
    perm = torch.randperm(len(ds), generator=gen)
    globals_ = [perm[i:i + batch_size] for i in range(0, len(ds), batch_size)]
    globals_ = [g for g in globals_ if len(g) >= world.size]
    mine = [world.shard(g).tolist() for g in globals_]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=mine, num_workers=workers)
    for (xb, yb), g in zip(loader, globals_):
        yield xb, torch.as_tensor(yb), len(g)


class RunOptimizer:
    """The optimizer of the recipe (SGD with Nesterov momentum, or Adam) and its learning-rate schedule over
    ``epochs`` epochs of ``per_epoch`` steps, stepped once per batch."""

    def __init__(self, params, cfg, epochs: int, per_epoch: int):
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                                       weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda i: lr_factor(cfg.schedule, i, epochs, per_epoch))

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.sched.get_last_lr()[0]

    def step(self) -> None:
        self.opt.step()
        self.sched.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])


class Stage:
    """Epochs of ``net`` (the model, or its DistributedDataParallel wrapper) under ``wpc``, stepping ``optim``:
    the run's, shared with its other stages; None: one of this stage's own, its schedule over ``epochs``."""

    def __init__(self, net: torch.nn.Module, model: torch.nn.Module, cfg, wpc: WPCConfig, epochs: int,
                 data: DataSpec, world: World, after_step=None, workers: int = 0, optim: RunOptimizer | None = None):
        self.net, self.model, self.cfg, self.wpc, self.data, self.world = net, model, cfg, wpc, data, world
        self.after_step, self.workers = after_step, workers
        if optim is None:
            optim = RunOptimizer(model.parameters(), cfg, epochs, steps_per_epoch(data, cfg.batch_size, world))
        self.optim = optim
        self.prunable = [m.weight for m in model.prunable().values()]

    def epoch(self, gen: torch.Generator, epoch: int) -> dict:
        """Train one epoch; returns the learning rate of its first step, the global loss, the training accuracy
        and the last WPC penalty."""
        self.net.train()
        lr = self.optim.lr
        total, correct, seen = 0.0, 0, 0
        penalty = torch.zeros(())
        for xb, yb, n in epoch_batches(self.data, self.cfg.batch_size, gen, self.world, epoch, self.workers):
            out = self.net(to_input(xb, self.data.input_scale))
            # summed over this rank's rows, over the global batch size times the ranks DDP averages over:
            # the averaged gradient is that of the global batch's mean loss
            loss = F.cross_entropy(out, yb, reduction="sum") * (self.world.size / n)
            penalty = wpc_penalty(self.prunable, self.wpc)
            self.optim.opt.zero_grad()
            (loss + penalty).backward()
            self.optim.step()
            if self.after_step is not None:
                self.after_step()
            total += float(loss.detach()) * n / self.world.size  # this rank's summed loss
            correct += int((out.argmax(1) == yb).sum())
            seen += len(yb)
        stats = torch.tensor([total, correct, seen], dtype=torch.float64)
        if active():
            dist.all_reduce(stats)
        total, correct, seen = stats.tolist()
        return {"lr": lr, "loss": round(total / seen, 6), "train_accuracy": round(correct / seen, 6),
                "wpc_penalty": float(penalty.detach())}
