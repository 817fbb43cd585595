"""The product's main path on real data: train the digits CNN, export the IR, generate the Verilog,
and check 20 held-out images in Verilator bit for bit against the integer reference."""
import json
import subprocess
import sys

import numpy as np

from hwgen.contract import ir, mapping, reference


def _run(*args, cwd):
    res = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_trained_digits_model_through_the_whole_chain(tmp_path):
    run = tmp_path / "runs" / "digits"  # a parent folder that does not exist yet, as in the README
    _run("train", "--model", "digits", "--pe", 16, "--out", run, "--quiet", cwd=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    model = ir.load(run / "model.ir")
    images, labels = np.load(run / "test_images.npy"), np.load(run / "test_labels.npy")

    # the accuracy users see is the integer model's, measured here again from the IR file
    accuracy = float((reference.predict(model, images).numpy() == labels).mean())
    assert accuracy == metrics["int_accuracy"] >= 0.95
    assert metrics["group_sparsity"] >= 0.5
    for layer in model.layers[1:-1]:  # every prunable layer: each PE keeps as many groups as the others
        if layer.kind == "conv":
            kept = mapping.kept_groups(layer.weight, 16)
            for j in range(kept.shape[1]):
                assert len({int(kept[p::16, j].sum()) for p in range(16)}) == 1, (layer.name, j)

    out = tmp_path / "rtl"
    _run("hwgen", "sim", "--ir", run / "model.ir", "--pe", 16, "--inputs", run / "test_images.npy",
         "--images", 20, "--out", out, cwd=tmp_path)
    result = json.loads((out / "sim_result.json").read_text())
    assert result["images"] == 20 and result["mismatches"] == 0
    assert result["cycles_per_image"] == result["predicted_cycles"]


def test_trained_digits_resnet_through_the_whole_chain(tmp_path):
    """Residual blocks (identity and option-A shortcuts) trained on digits: the float model's accuracy is
    the hardware's, and Verilator agrees bit for bit."""
    run = tmp_path / "dres"
    _run("train", "--model", "digits_resnet", "--pe", 16, "--out", run, "--quiet", cwd=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["int_accuracy"] >= 0.95
    assert abs(metrics["int_accuracy"] - metrics["float_accuracy"]) <= 0.005
    model = ir.load(run / "model.ir")
    assert any(layer.residual for layer in model.layers)
    out = tmp_path / "rtl"
    _run("hwgen", "sim", "--ir", run / "model.ir", "--pe", 16, "--inputs", run / "test_images.npy",
         "--images", 10, "--out", out, cwd=tmp_path)
    result = json.loads((out / "sim_result.json").read_text())
    assert result["mismatches"] == 0 and result["cycles_per_image"] == result["predicted_cycles"]
