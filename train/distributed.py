"""Data-parallel training under ``torchrun``: one process per device, DistributedDataParallel, and the batch
statistics made global so that K processes compute what one process computes on the whole batch.

Every rank sees the same global batch order (same seed) and trains on its rows ``rank::world`` of each
batch. Three things would otherwise make K processes differ from one:
- BatchNorm normalizes with the statistics of the rank's rows: ``GlobalBatchNorm2d`` all-reduces them (sum,
  then the centred sum of squares), with a gradient that flows back across ranks. torch's SyncBatchNorm would
  do this but refuses CPU tensors, and gloo on CPU is what CI and laptops have.
- ``ActQuant`` tracks the batch's largest |x|: it takes the maximum over ranks (``global_max``).
- The loss is a mean over the rank's rows: each rank scales its summed loss by world / global batch size,
  so DDP's gradient average is the gradient of the global mean.
What remains is float summation order (the all-reduce adds partial sums).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        return idx[self.rank::self.size]


def world_from_env(env=os.environ) -> World:
    """The torchrun environment (RANK, WORLD_SIZE), read once at the CLI; a plain run is World(0, 1)."""
    size, rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0"))
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK must be in 0..WORLD_SIZE-1, found RANK={rank}, WORLD_SIZE={size}")
    return World(rank, size)


def init(world: World) -> None:
    """Join the process group; nothing for a single process. gloo: training runs on the CPU (placing it on
    CUDA devices, where nccl belongs, waits for a machine with a GPU to check it on)."""
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of each rank's input is the sum of every rank's output gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x) if active() else x


@torch.no_grad()
def global_max(x: torch.Tensor) -> torch.Tensor:
    if active():
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all ranks); eval is unchanged.
    Same parameters and buffers, so state dicts and the exporter see an ordinary BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        n = all_reduce_sum(torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype))
        mean = all_reduce_sum(x.sum((0, 2, 3))) / n
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce_sum((centred * centred).sum((0, 2, 3))) / n
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
            self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def globalize_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d of ``module`` for a GlobalBatchNorm2d holding the same tensors."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            g = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum,
                                  device=child.weight.device, dtype=child.weight.dtype)  # a float64 or GPU model stays one
            g.load_state_dict(child.state_dict())
            setattr(module, name, g)
        else:
            globalize_batchnorm(child)
    return module


def check_in_sync(model: nn.Module) -> None:
    """Raise if the ranks' models differ (they must not: same start, same averaged gradients)."""
    if not active():
        return
    flat = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
    mine = torch.stack([flat.sum(), (flat * torch.arange(len(flat), dtype=flat.dtype)).sum()])
    first = mine.clone()
    dist.broadcast(first, 0)
    if not torch.equal(mine, first):
        raise RuntimeError(f"rank {dist.get_rank()}: model differs from rank 0 after training "
                           f"(checksum {mine.tolist()} != {first.tolist()})")
