"""Run by tests/test_train_scaleout.py, alone or under torchrun: one SGD epoch of digits_resnet on 256
digits in float64, then rank 0 exports the model and saves the IR to argv[1]. argv[2] == "plain" keeps torch's
BatchNorm (per-rank statistics), the control that shows the comparison can fail.

Why float64: one rank and two sum the gradients and statistics in different orders. In float64 those orders
move a value by ~1e-16 of itself, so the ternary thresholds, the activation grid and the 18-bit requant
constants, which round at steps ~1e-7 of their values or coarser, come out the same: the integer IR is what
the two runs must agree on exactly."""
import sys

import torch

from hwgen.contract import ir
from train import distributed
from train.datasets import DataSpec, make_dataset
from train.export import export, logit_scale
from train.loop import Stage, to_input
from train.pipeline import TrainConfig, _build
from train.wpc import WPCConfig


class Float64Input(torch.nn.Module):
    """The training loop feeds float32 pixels: cast them for the float64 model."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.double())


torch.set_num_threads(1)
world = distributed.world_from_env()
distributed.init(world)
cfg = TrainConfig(model="digits_resnet", epochs=2, batch_size=64, optimizer="sgd", lr=0.05)
torch.manual_seed(0)
x, y = make_dataset("digits", None, "train").data
spec = DataSpec("digits", (x[:256], y[:256]), 10, (1, 8, 8), 1 / 16)
model = _build(cfg, spec).double()
net = model
if world.size > 1:
    if sys.argv[2] != "plain":
        distributed.globalize_batchnorm(model)
    net = torch.nn.parallel.DistributedDataParallel(model)
stage = Stage(Float64Input(net), model, cfg, WPCConfig(5e-4, 0.7, 16), 1, spec, world)
stage.epoch(torch.Generator().manual_seed(0), 0)
if sys.argv[2] != "plain":  # per-rank statistics leave the ranks' BatchNorm buffers apart: that raises
    distributed.check_in_sync(model)
if world.main:
    x_float = to_input(x[:256], spec.input_scale).double()
    ir.save(export(model.eval(), 16, {}, logit_scale(model, x_float)), sys.argv[1])
