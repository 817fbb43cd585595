"""Run by tests/test_train_scaleout.py, alone or under torchrun: one SGD epoch of digits_resnet on 256
digits, then rank 0 saves the flattened floating-point state to argv[1]. argv[2] == "plain" keeps torch's
BatchNorm (per-rank statistics), the control that shows the comparison can fail."""
import sys

import torch

from train import distributed
from train.datasets import DataSpec, make_dataset
from train.loop import Stage
from train.pipeline import TrainConfig, _build
from train.wpc import WPCConfig

torch.set_num_threads(1)
world = distributed.world_from_env()
distributed.init(world)
cfg = TrainConfig(model="digits_resnet", epochs=2, batch_size=64, optimizer="sgd", lr=0.05)
torch.manual_seed(0)
x, y = make_dataset("digits", None, "train").data
spec = DataSpec("digits", (x[:256], y[:256]), 10, (1, 8, 8), 1 / 16)
model = _build(cfg, spec)
net = model
if world.size > 1:
    if sys.argv[2] != "plain":
        distributed.globalize_batchnorm(model)
    net = torch.nn.parallel.DistributedDataParallel(model)
stage = Stage(net, model, cfg, WPCConfig(5e-4, 0.7, 16), 1, spec, world)
stage.epoch(torch.Generator().manual_seed(0), 0)
if sys.argv[2] != "plain":  # per-rank statistics leave the ranks' BatchNorm buffers apart: that raises
    distributed.check_in_sync(model)
if world.main:
    torch.save(torch.cat([t.detach().double().flatten() for t in model.state_dict().values()
                          if t.dtype.is_floating_point]), sys.argv[1])
