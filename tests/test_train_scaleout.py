"""Scale-out and long runs: torchrun data parallelism exports the integer network one process exports, a killed run resumed from its checkpoint gives the same IR byte for byte, recipes merge
with explicit options, and ResNet-18 trains from an image folder with --init."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hwgen.contract import ir
from train.cli import config, main, parser
from train.init_weights import torchvision_names
from train.recipes import RECIPES
from train.resnet import resnet18

HELPERS = Path(__file__).parent / "helpers"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(*args, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def _epoch_ir(tmp_path, ranks: int, bn: str = "global") -> ir.Model:
    out = tmp_path / f"epoch{ranks}{bn}.ir"
    script = [str(HELPERS / "ddp_epoch.py"), str(out), bn]
    res = (_torchrun(*script, cwd=tmp_path) if ranks > 1 else
           subprocess.run([sys.executable, *script], cwd=tmp_path, env=ENV, capture_output=True, text=True))
    assert res.returncode == 0, res.stderr[-3000:]
    return ir.load(out)


def _integer_fields(model: ir.Model) -> list:
    fields = ("weight", "mask", "mul", "bias", "shift")
    return [(l.name, f, getattr(l, f)) for l in model.layers for f in fields if getattr(l, f) is not None]


def _same_integers(a: ir.Model, b: ir.Model) -> bool:
    pairs = zip(_integer_fields(a), _integer_fields(b))
    return len(a.layers) == len(b.layers) and all(x[:2] == y[:2] and np.array_equal(x[2], y[2]) for x, y in pairs)


def test_two_processes_train_like_one(tmp_path):
    """One float64 epoch on two ranks against one: the exported integer networks are equal, every weight
    level, mask bit and requant constant (helpers/ddp_epoch.py says why that is exactly comparable)."""
    one, two = _epoch_ir(tmp_path, 1), _epoch_ir(tmp_path, 2)
    assert _integer_fields(one) and _same_integers(one, two)
    plain = _epoch_ir(tmp_path, 2, "plain")  # per-rank BatchNorm statistics: a real difference, which the check sees
    assert not _same_integers(one, plain)


def test_torchrun_cli_trains_and_exports(tmp_path):
    res = _torchrun("-m", "train", "--model", "digits", "--pe", 16, "--epochs", 2, "--out", tmp_path / "run",
                    "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["run"]  # rank 1 wrote nothing, the checkpoints are gone
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data_parallel_ranks"] == 2
    assert metrics["int_accuracy"] == ir.load(tmp_path / "run" / "model.ir").meta["int_accuracy"] > 0.2


def _train(out, *extra, **popen):
    return subprocess.Popen([sys.executable, "-m", "train", "--model", "digits_resnet", "--pe", "16", "--epochs",
                             "4", "--out", str(out), "--quiet", *extra], env=ENV, stderr=subprocess.PIPE,
                            text=True, **popen)


def test_killed_run_resumes_to_the_same_bytes(tmp_path, capsys):
    whole = _train(tmp_path / "whole")
    assert (res := whole.communicate(timeout=300)) and whole.returncode == 0, res[1]  # communicate closes the pipe
    ckpt = tmp_path / "cut.ckpt" / "last.pt"
    cut = _train(tmp_path / "cut")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and cut.poll() is None:  # kill it inside the fine-tune stage (epoch 3 of 4)
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["epochs_done"] >= 3:
            cut.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert cut.communicate(timeout=60) and cut.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "cut").exists()

    args = ["--model", "digits_resnet", "--pe", "16", "--epochs", "4", "--out", str(tmp_path / "cut"), "--quiet"]
    assert main(args) == 2  # a checkpoint is there: no silent restart
    assert main([*args, "--resume", "--seed", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "add --resume to continue it" in err[0] and "seed: expected 0, found 1" in err[1]
    resumed = _train(tmp_path / "cut", "--resume")
    assert (res := resumed.communicate(timeout=300)) and resumed.returncode == 0, res[1]
    assert (tmp_path / "cut" / "model.ir").read_bytes() == (tmp_path / "whole" / "model.ir").read_bytes()
    logs = [(tmp_path / d / "train_log.jsonl").read_text().splitlines() for d in ("whole", "cut")]
    assert logs[0] == logs[1] and len(logs[0]) == 4
    assert not ckpt.parent.exists()


def test_resume_without_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["--model", "digits", "--pe", "16", "--out", str(tmp_path / "x"), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: expected a checkpoint at") and err.count("\n") == 1


def test_recipes_set_defaults_and_options_win():
    for name in RECIPES:
        extra = ["--init", "w.pt"] if name == "aaai20-imagenet" else []
        cfg = config(parser().parse_args(["--recipe", name, "--pe", "4", "--out", "o", *extra]))
        assert all(getattr(cfg, k) == v for k, v in RECIPES[name].items() if k != "ratio")
    cfg = config(parser().parse_args(["--recipe", "wacv19-cifar", "--pe", "4", "--out", "o", "--lr", "0.02",
                                      "--model", "resnet32"]))
    assert (cfg.lr, cfg.model, cfg.optimizer, cfg.epochs, cfg.schedule) == (0.02, "resnet32", "sgd", 200, "step")
    with pytest.raises(ValueError, match="recipe aaai20-imagenet fine-tunes from float weights: --init FILE"):
        config(parser().parse_args(["--recipe", "aaai20-imagenet", "--pe", "4", "--out", "o"]))
    with pytest.raises(ValueError, match="--model is required"):
        config(parser().parse_args(["--pe", "4", "--out", "o"]))


def _image_folder(root: Path, per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8) + np.uint8(120 * c)  # dog images brighter
                np.save(d / f"{i}.npy", img)


def test_resnet18_trains_from_an_image_folder_with_init(tmp_path):
    _image_folder(tmp_path / "data")
    donor = resnet18(input_size=32, classes=1000)
    names = {ours: tv for tv, ours in torchvision_names(donor).items()}
    torch.save({names[k]: v for k, v in donor.state_dict().items() if k in names}, tmp_path / "float.pt")
    out = tmp_path / "run"
    assert main(["--model", "resnet18", "--data-dir", str(tmp_path / "data"), "--input-size", "32", "--pe", "16",
                 "--lanes", "64", "--epochs", "2", "--batch-size", "4", "--init", str(tmp_path / "float.pt"),
                 "--init-exclude", "fc.", "--out", str(out), "--quiet"]) == 0
    irm = ir.load(out / "model.ir")
    assert irm.input.shape == (3, 32, 32) and irm.layer("fc").out_shape == (2, 1, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == 12 and np.load(out / "test_images.npy").shape == (12, 3, 32, 32)
    # everything torchvision has came from the file, but the excluded classifier
    skipped = set(metrics["init"]["skipped"])
    assert {"fc.bias", "fc.weight"} <= skipped
    assert all(k.endswith(("running_max", "calibrated")) for k in skipped - {"fc.bias", "fc.weight"})
    assert metrics["init"]["loaded"] == len(names) - 2


def test_float_first_last_trains_and_hwgen_refuses_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--model", "digits", "--pe", "16", "--epochs", "2", "--float-first-last", "--out", str(out),
                 "--quiet"]) == 0
    irm = ir.load(out / "model.ir")
    assert [l.precision for l in irm.layers] == ["float"] + ["ternary"] * 4 + ["float"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layers"]["conv1"]["bits"] == 32 and metrics["layers"]["conv2"]["bits"] == 2
    from hwgen.cli import main as hwgen_main
    assert hwgen_main(["build", "--ir", str(out / "model.ir"), "--pe", "16", "--out", str(tmp_path / "rtl")]) == 2
    err = capsys.readouterr().err
    assert "layer 'conv1': precision must be ternary, found float" in err and not (tmp_path / "rtl").exists()
