"""Training-step overhead of ternary + WPC over plain float training, on the same ResNet-20 (CPU).

The ternary model is ``train.resnet.resnet_cifar(20)`` (ternary weights, integer activation fake-quant,
grid-exact residual adds) with the WPC penalty on its prunable convs; the float twin has the same shapes
built from plain nn.Conv2d / BatchNorm / ReLU with option-A shortcuts. Both take Adam steps on the same
random CIFAR-shaped batches. Repetitions alternate the two (order swapped every time) so that a load change
on shared cores hits both alike; the medians of the per-step times are compared.

    python bench/train_overhead.py [--batch 32] [--reps 5] [--steps 3] [--threads 1]

The last line is ``train_overhead_ratio: X.XX`` (ternary+WPC median step / float median step; target <= 1.5).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.resnet import resnet_cifar
from train.wpc import WPCConfig, wpc_penalty


class FloatBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, + option-A shortcut (subsample, zero channels), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, 0, self.pad))
        return torch.relu(self.bn2(self.conv2(h)) + short)


class FloatResNet20(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, c = [], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(3):
                blocks.append(FloatBlock(c, width, 2 if i and not j else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def _params(model: nn.Module) -> list[tuple]:
    return sorted(tuple(p.shape) for p in model.parameters())


def make_step(model: nn.Module, wpc: WPCConfig | None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    prunable = [m.weight for m in model.prunable().values()] if wpc is not None else []
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x), y)
        if wpc is not None:
            loss = loss + wpc_penalty(prunable, wpc)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def timed(step, batches) -> list[float]:
    out = []
    for x, y in batches:
        t0 = time.perf_counter()
        step(x, y)
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5, help="alternating repetitions")
    p.add_argument("--steps", type=int, default=3, help="training steps per model per repetition")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ternary, floating = resnet_cifar(20), FloatResNet20()
    if _params(ternary) != _params(floating):  # the twin must do the same arithmetic work
        raise SystemExit(f"float twin parameter shapes differ from ResNet-20's: expected {_params(ternary)}, "
                         f"found {_params(floating)}")
    steps = {"float": make_step(floating, None), "ternary+wpc": make_step(ternary, WPCConfig())}
    batches = [(torch.rand(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,)))
               for _ in range(args.steps)]
    for step in steps.values():  # warm-up: allocator, first-call costs, quantizer calibration
        timed(step, batches[:2])
    times = {k: [] for k in steps}
    for r in range(args.reps):
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            times[name] += timed(steps[name], batches)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"ResNet-20, batch {args.batch}, {args.threads} thread(s), {args.reps} x {args.steps} steps each")
    for k, v in med.items():
        print(f"  {k:12s} median step {v * 1e3:8.1f} ms  (min {min(times[k]) * 1e3:.1f}, "
              f"max {max(times[k]) * 1e3:.1f})")
    print(f"train_overhead_ratio: {med['ternary+wpc'] / med['float']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
