"""The learning rate over a whole run, both stages, as the training loop's own optimizer and schedule set it:
each recipe against the papers' schedule (docs/design.md §2), the milestones scaled to other epoch counts, and a
resumed run going on with the same sequence. The runs train on a handful of digits (the schedule does not
depend on what the images show), one optimizer step an epoch when the batch holds them all."""
import dataclasses
import math
from pathlib import Path

import pytest
import torch

import train.checkpoint
import train.pipeline
from train.cli import config, main, parser
from train.datasets import DataSpec
from train.distributed import World
from train.loop import RunOptimizer, epoch_batches, steps_per_epoch
from train.pipeline import TrainConfig, train_model
from train.recipes import NEEDS_INIT, RECIPES

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_IMAGES = 20


@pytest.fixture
def few_digits(monkeypatch):
    """The runs' data sets cut to their first images."""
    real = train.pipeline.make_dataset

    def first(name, data_dir, split, **options):
        spec = real(name, data_dir, split, **options)
        x, y = spec.data
        n = TRAIN_IMAGES if split == "train" else 8
        return dataclasses.replace(spec, data=(x[:n], y[:n]))

    monkeypatch.setattr(train.pipeline, "make_dataset", first)


def _cosine(lr: float, epochs: int) -> list[float]:
    return [lr * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(epochs)]


# WACV'19 on CIFAR-10 (the AAAI'20 CIFAR runs use it too): lr 0.1 for 200 epochs, x0.1 at 80 and 120, x0.5 at 160
CIFAR = [0.1] * 80 + [0.01] * 40 + [0.001] * 40 + [0.0005] * 40
# The papers give no ImageNet schedule: ours is cosine from Adam's 1e-4 over the 30 epochs; digits: the defaults.
EXPECTED = {"wacv19-cifar": CIFAR, "aaai20-cifar": CIFAR, "aaai20-imagenet": _cosine(1e-4, 30),
            "digits": _cosine(3e-3, 40)}


def _recipe_on_digits(name: str) -> TrainConfig:
    """The recipe as the CLI merges it, on the digits model (model and data do not enter the schedule)."""
    extra = ["--init", "float.pt"] if name in NEEDS_INIT else []
    cfg = config(parser().parse_args(["--recipe", name, "--pe", "16", "--out", "o", *extra]))
    return dataclasses.replace(cfg, model="digits", dataset="digits", lanes=16, init=None, quiet=True)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_learning_rate_over_the_whole_run(few_digits, name):
    cfg = _recipe_on_digits(name)
    assert cfg.batch_size >= TRAIN_IMAGES  # one step an epoch: the epoch's rate is its only one
    trained = train_model(cfg)
    first, _ = cfg.stage_epochs
    assert [r["stage"] for r in trained.log] == ["train+WPC"] * first + ["fine-tune"] * (cfg.epochs - first)
    assert [r["lr"] for r in trained.log] == pytest.approx(EXPECTED[name], rel=1e-12)
    if name == "wacv19-cifar":  # λ = 0, keep 1.0: the fine-tune stage prunes nothing, one run goes on
        assert all(m.all() for m in trained.masks.values())


@pytest.mark.parametrize("epochs, milestones", [(200, (80, 120, 160)), (15, (6, 9, 12)), (10, (4, 6, 8)),
                                                (4, (2, 3))])
def test_step_milestones_scale_with_the_run(epochs, milestones):
    """Each milestone applies from the first epoch at or past 40%, 60%, 80% of the run, for every step of it."""
    per_epoch = 3
    optim = RunOptimizer([torch.zeros(1, requires_grad=True)], TrainConfig(optimizer="sgd", lr=1.0, schedule="step"),
                         epochs, per_epoch)
    lrs = []
    for _ in range(epochs * per_epoch):
        lrs.append(optim.lr)
        optim.step()
    per_epoch_lrs = [lrs[e * per_epoch:(e + 1) * per_epoch] for e in range(epochs)]
    assert all(len(set(steps)) == 1 for steps in per_epoch_lrs)
    epoch_lrs = [steps[0] for steps in per_epoch_lrs]
    assert [e for e in range(1, epochs) if epoch_lrs[e] != epoch_lrs[e - 1]] == list(milestones)
    assert [epoch_lrs[m] for m in milestones] == pytest.approx([0.1, 0.01, 0.005][:len(milestones)], rel=1e-12)


@pytest.mark.parametrize("images, batch, ranks", [(130, 64, 1), (130, 64, 2), (130, 64, 4), (128, 64, 4),
                                                  (3, 2, 2)])
def test_steps_per_epoch_counts_the_batches_run(images, batch, ranks):
    """Data-parallel runs skip a last batch with fewer images than ranks: the schedule must count without it,
    or its epochs drift from the loop's."""
    spec = DataSpec("digits", (torch.zeros(images, 1, 8, 8, dtype=torch.int64), torch.zeros(images, dtype=torch.int64)),
                    10, (1, 8, 8), 1 / 16)
    world = World(0, ranks)
    batches = sum(1 for _ in epoch_batches(spec, batch, torch.Generator().manual_seed(0), world, 0))
    assert steps_per_epoch(spec, batch, world) == batches


def test_resumed_run_continues_the_learning_rate_sequence(few_digits, monkeypatch, tmp_path):
    """Resumed inside the WPC stage, at the stage boundary and inside the fine-tune stage, a run logs the same
    epochs (learning rate, loss, accuracy) and ends with the same weights as the run never interrupted."""
    cfg = TrainConfig(epochs=10, optimizer="sgd", lr=0.1, schedule="step", batch_size=8, quiet=True)
    assert cfg.stage_epochs == (6, 4)  # 3 steps an epoch (8 + 8 + 4 images)
    snapshots = {}
    real_save = train.checkpoint.save

    def save_and_keep(path, state):
        real_save(path, state)
        snapshots.setdefault(state["epochs_done"], Path(path).read_bytes())

    monkeypatch.setattr(train.checkpoint, "save", save_and_keep)
    ckpt = tmp_path / "run.ckpt" / "last.pt"
    whole = train_model(cfg, ckpt=str(ckpt))
    assert [r["lr"] for r in whole.log] == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2 + [0.0005] * 2,
                                                         rel=1e-12)
    for done in (3, 6, 8):
        ckpt.write_bytes(snapshots[done])
        resumed = train_model(cfg, ckpt=str(ckpt), resume=True)
        assert resumed.log == whole.log, done
        for key, value in whole.model.state_dict().items():
            assert torch.equal(resumed.model.state_dict()[key], value), (done, key)


def test_checkpoint_with_a_schedule_per_stage_is_refused(tmp_path, capsys):
    """A version 1 checkpoint holds an optimizer for its stage alone: resuming from it would restart the
    schedule, so it is refused in one line."""
    out = tmp_path / "run"
    ckpt = Path(train.checkpoint.path_for(str(out)))
    ckpt.parent.mkdir()
    cfg = TrainConfig(pe=16, quiet=True)
    torch.save({"format": train.checkpoint.FORMAT, "version": 1, "config": dataclasses.asdict(cfg),
                "epochs_done": 3, "stage": "train+WPC", "stage_state": {}}, ckpt)
    assert main(["--model", "digits", "--pe", "16", "--out", str(out), "--resume", "--quiet"]) == 2
    assert capsys.readouterr().err == (f"error: {ckpt}: expected a ternary-train-checkpoint version 2 file, found "
                                       "ternary-train-checkpoint version 1\n")
