"""End-to-end tests of the training stage: train -> prune -> fine-tune -> IR, checked against the integer
reference. Two full default runs (the accuracy and sparsity targets at --pe 16 and 4) plus short ones."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hwgen.contract import ir, reference
from hwgen.contract.mapping import kept_groups, schedule
from train import data
from train.agreement import compare
from train.cli import main
from train.pipeline import TrainConfig, run, train_model
from train.export import export, logit_scale

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRUNABLE = ("conv2", "conv3", "conv4")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=[16, 4], ids=["pe16", "pe4"])
def full_run(request):
    """The default schedule, as ``python -m train --model digits --pe N`` runs it."""
    r = run(TrainConfig(pe=request.param, quiet=True))
    return r.ir, r.metrics


def test_full_run_meets_targets(full_run):
    irm, m = full_run
    assert m["int_accuracy"] >= 0.95
    assert m["group_sparsity"] >= 0.5
    assert m["compression"] == pytest.approx(16 / (1 - m["group_sparsity"]))
    assert abs(m["int_accuracy"] - m["float_accuracy"]) <= 0.02
    assert irm.meta["int_accuracy"] == m["int_accuracy"]


def test_ir_masks_are_balanced_and_pruned_groups_zero(full_run):
    irm, m = full_run
    pe = m["config"]["pe"]
    for layer in irm.layers:
        if layer.weight is None:
            continue
        # Every nonzero ternary group is in the mask (validate() checks it too; this pins the meaning).
        assert not (kept_groups(layer.weight, irm.lanes) & ~layer.mask).any()
        if layer.name in PRUNABLE:
            assert layer.mask.sum() == m["layers"][layer.name]["kept"]
            assert schedule(layer.mask, pe).idle_slots == 0
            assert all(len(set(block)) == 1 for block in m["layers"][layer.name]["per_pe_kept"])
        else:
            assert layer.mask.all()


def test_ir_round_trip(full_run, tmp_path):
    irm, _ = full_run
    path = tmp_path / "model.ir"
    ir.save(irm, path)
    back = ir.load(path)
    assert [l.name for l in back.layers] == [l.name for l in irm.layers]
    assert back.lanes == irm.lanes and back.input == irm.input and back.meta == irm.meta
    for a, b in zip(irm.layers, back.layers):
        for name in ("weight", "mask", "mul", "bias", "shift"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or (x.dtype == y.dtype and np.array_equal(x, y))


@pytest.fixture(scope="module")
def short():
    torch.manual_seed(0)
    return train_model(TrainConfig(pe=4, epochs=3, quiet=True))


def test_export_matches_float_model_layer_by_layer(short):
    """Fed the integer reference's input (times its scale), each float layer gives the reference's integers
    wherever float32 arithmetic cannot reach a rounding boundary, and at most one step off where it can
    (train.agreement derives that bound from the ops, so it holds on any CPU and thread count)."""
    model, split = short.model, short.split
    irm = export(model, 16, short.masks, logit_scale(model, data.to_float(split.train_x)))
    x_int = split.test_x[:100]
    assert x_int.dtype == np.int64 and x_int.min() >= 0 and x_int.max() <= 16
    checks = compare(model, irm, x_int)
    assert [c.name for c in checks] == [l.name for l in irm.layers]
    for c in checks:
        assert c.violations == 0 and c.values > 0 and c.max_bound < 0.25, (c.name, c.first)
    assert next(c for c in checks if c.name == "avgpool").max_bound == 0  # exact: no value may differ


def test_same_seed_same_ir_bytes(tmp_path):
    paths = []
    for i in range(2):
        irm = run(TrainConfig(pe=16, epochs=2, seed=3, quiet=True)).ir
        paths.append(tmp_path / f"{i}.ir")
        ir.save(irm, paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "train", "--model", "digits", "--pe", "4", "--out", str(out),
                           "--epochs", "2", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["metrics.json", "model.ir", "test_images.npy", "test_labels.npy",
                                       "train_log.jsonl"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(len(log))) and len(log) >= 2
    assert {r["stage"] for r in log} == {"train+WPC", "fine-tune"}
    for r in log:
        assert 0 <= r["float_accuracy"] <= 1 and 0 <= r["int_accuracy"] <= 1 and 0 < r["group_density"] <= 1
    assert log[-1]["group_density"] < 1  # pruned by the fine-tune stage
    assert os.listdir(tmp_path) == ["run"]  # no temporary folder left beside it
    m = json.loads((out / "metrics.json").read_text())
    for key in ("int_accuracy", "float_accuracy", "group_sparsity"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["compression"] >= 16
    irm = ir.load(out / "model.ir")
    assert irm.meta["pe"] == 4 and irm.lanes == 16
    images, labels = data.heldout_images()
    pred = reference.predict(irm, images).numpy()
    assert float((pred == labels).mean()) == pytest.approx(m["int_accuracy"])


@pytest.mark.parametrize("args,message", [
    (["--pe", "3"], "pe must be a positive divisor of lanes (16), not 3"),
    (["--pe", "4", "--lanes", "12"], "lanes must be a power of two >= 1, not 12"),
    (["--pe", "32"], "pe must be a positive divisor of lanes (16), not 32"),
    (["--pe", "4", "--epochs", "1"], "epochs must be an integer >= 2"),
    (["--pe", "4", "--keep-fraction", "0"], "keep-fraction must be in (0, 1], not 0.0"),
    (["--pe", "4", "--lam", "-1"], "lam must be a finite number >= 0, not -1.0"),
])
def test_cli_rejects_bad_args(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["--model", "digits", "--out", str(out)] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args,message", [
    (["--pe", "x"], "argument --pe: invalid int value: 'x'"),
    (["--pe", "4", "--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
])
def test_cli_malformed_args_exit_2_with_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "digits", "--out", str(tmp_path / "run")] + args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert os.listdir(tmp_path) == []


def test_cli_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["--model", "digits", "--pe", "4", "--out", str(tmp_path)]) == 2
    assert "found a folder train did not write (holding notes.txt)" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_cli_replaces_previous_output_and_keeps_user_files_in_the_checkpoint_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"generator": "train 0.0.1"}')  # an earlier run's
    (out / "model.ir").write_text("earlier")
    (tmp_path / "run.ckpt").mkdir()
    (tmp_path / "run.ckpt" / "notes.txt").write_text("keep me")
    (tmp_path / "run.ckpt" / "last.pt.tmp99999").write_text("half-written by a killed run")
    assert main(["--model", "digits", "--pe", "4", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["generator"].startswith("train ")
    assert ir.load(out / "model.ir").meta["pe"] == 4
    assert sorted(os.listdir(tmp_path)) == ["run", "run.ckpt"]  # nothing moved aside is left
    assert os.listdir(tmp_path / "run.ckpt") == ["notes.txt"]  # the checkpoints went, the user's file stayed


def test_replace_swaps_previous_output(tmp_path):
    from hwgen.build import outdir
    new, out = tmp_path / "new", tmp_path / "out"
    for d, text in ((new, "new"), (out, "old")):
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"generator": "train 0.1.0", "text": text}))
    outdir.swap_in(new, out, outdir.TRAIN)
    assert json.loads((out / "metrics.json").read_text())["text"] == "new"
    assert os.listdir(tmp_path) == ["out"]
