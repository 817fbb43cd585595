"""The command line on bad input: one line naming what is wrong, exit code 2, nothing written."""
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hwgen
from hwgen.contract import ir
from hwgen.frontends import zoo
from hwgen.build.generate import BuildConfig, generate
from hwgen.cli import main
from hwgen.compile.lower import lower
from hwgen.rtl.extmem import RAM_MODULE
from hwgen.frontends.synthetic import resnet_cifar
from irfiles import edit_manifest


def _hwgen(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hwgen", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _assert_refused(res, out, fragment):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr
    assert not out.exists()


@pytest.fixture()
def saved(small_model, tmp_path):
    path = tmp_path / "m.ir"
    ir.save(small_model, path)
    return path


def test_truncated_ir(saved, tmp_path):
    saved.write_bytes(saved.read_bytes()[:300])
    out = tmp_path / "out"
    _assert_refused(_hwgen("build", "--ir", saved, "--pe", 4, "--out", out, cwd=tmp_path), out,
                    "not a readable IR file")


def test_edited_ir(small_model, tmp_path):
    layers = list(small_model.layers)
    bad = layers[2].weight.copy()
    bad[0, 0, 0, 0] = 3
    layers[2] = dataclasses.replace(layers[2], weight=bad)  # save() validates and must refuse it
    with pytest.raises(ir.IRError, match="layer 'conv3': weight values must be ternary"):
        ir.save(dataclasses.replace(small_model, layers=tuple(layers)), tmp_path / "x.ir")
    assert not (tmp_path / "x.ir").exists() and not list(tmp_path.glob("x.ir.tmp*"))


@pytest.mark.parametrize("pe, lanes, fragment", [(3, 16, "pe must be a positive divisor of lanes (16), not 3"),
                                                 (4, 24, "lanes must be a power of two >= 1, not 24")])
def test_invalid_pe_or_lanes(saved, tmp_path, pe, lanes, fragment):
    out = tmp_path / "out"
    _assert_refused(_hwgen("build", "--ir", saved, "--pe", pe, "--lanes", lanes, "--out", out, cwd=tmp_path),
                    out, fragment)


def test_nonpositive_pe_is_a_usage_error(saved, tmp_path):
    out = tmp_path / "out"
    _assert_refused(_hwgen("build", "--ir", saved, "--pe", 0, "--out", out, cwd=tmp_path), out,
                    "argument --pe: expected a positive integer, found 0 (see python -m hwgen build --help)")


DIGITS = ["--model", "digits", "--pe", "4"]


@pytest.mark.parametrize("verb, args, fragment", [
    ("build", ["--model", "digits", "--pe", "99999999999999999999"],
     "pe must be a positive divisor of lanes (16), not 99999999999999999999"),
    ("build", DIGITS + ["--lanes", "0"], "argument --lanes: expected a positive integer up to 1024, found 0"),
    ("build", DIGITS + ["--lanes", "2048"], "argument --lanes: expected a positive integer up to 1024, found 2048"),
    ("build", DIGITS + ["--lanes", str(2 ** 40)], "expected a positive integer up to 1024, found 1099511627776"),
    ("build", DIGITS + ["--tile", "0"], "argument --tile: expected a positive integer, found 0"),
    ("build", DIGITS + ["--tile", "12"], "--tile must be a power of two, not 12"),
    ("build", DIGITS + ["--input-size", "0"], "argument --input-size: expected a positive integer, found 0"),
    ("build", ["--model", "resnet20", "--pe", "4", "--input-size", "7"],
     "input size of resnet20 must be at least 8, not 7"),
    ("build", DIGITS + ["--seed", "-1"], "argument --seed: expected a non-negative integer, found -1"),
    ("sim", DIGITS + ["--images", "0"], "argument --images: expected a positive integer, found 0"),
    ("sim", DIGITS + ["--images", str(10 ** 15)], f"--images {10 ** 15}: that many random [1, 8, 8] images do "
                                                  "not fit in memory"),
    ("sim", DIGITS + ["--stall", "1.5"], "--stall must be a probability in [0, 1), not 1.5"),
    ("sim", DIGITS + ["--stall", "-0.1"], "--stall must be a probability in [0, 1), not -0.1"),
    ("sim", DIGITS + ["--stall", "nan"], "--stall must be a probability in [0, 1), not nan"),
    ("synth", DIGITS + ["--device", "LFE5U-25F", "--clock-mhz", "0"],
     "argument --clock-mhz: expected a clock in MHz above 0 and at most 1000, found '0'"),
    ("synth", DIGITS + ["--device", "LFE5U-25F", "--clock-mhz", "nan"], "found 'nan'"),
    ("synth", DIGITS + ["--device", "LFE5U-25F", "--clock-mhz", "1e30"], "found '1e30'"),
    ("synth", DIGITS + ["--device", "LFE5U-25F", "--baud", "0"],
     "argument --baud: expected a positive integer baud rate, found '0'"),
])
def test_numbers_at_and_past_their_limits(tmp_path, capsys, verb, args, fragment):
    """Refused in one line, exit status 2, before anything is written (in-process: no build is started)."""
    out = tmp_path / "out"
    try:
        code = main([verb, *args, "--out", str(out)])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert not out.exists()


def test_zoo_refuses_an_unknown_name():
    """A name is looked up, never parsed: resnet26 is not in the zoo, though 26 is a valid CIFAR depth."""
    with pytest.raises(zoo.ZooError, match=r"^model must be one of digits, resnet18, resnet20, resnet32, resnet44, "
                                           r"resnet56, not 'resnet26'$"):
        zoo.build("resnet26", pe=16)


@pytest.mark.parametrize("name, depth", [("resnet18", 18), ("resnet20", 20), ("resnet32", 32), ("resnet44", 44),
                                         ("resnet56", 56)])
def test_each_zoo_resnet_has_the_depth_of_its_name(name, depth):
    model = zoo.build(name, pe=16, input_size=zoo.MODELS[name].min_input_size)
    weighted = [l for l in model.layers if l.kind == "linear" or (l.kind == "conv" and l.kernel > 1)]
    assert model.name == name and len(weighted) == depth  # 1x1 shortcuts do not count in a ResNet's depth


@pytest.mark.parametrize("values, dtype, found", [([0, 256], np.int64, "[0, 256]"), ([-1, 3], np.int16, "[-1, 3]"),
                                                  ([1, 2 ** 63 + 1], np.uint64, f"[0, {2 ** 63 + 1}]")])
def test_inputs_out_of_range_are_refused_before_the_build(saved, tmp_path, values, dtype, found):
    images = np.zeros((2, 1, 8, 8), dtype=dtype)
    images[0, 0, 0, :2] = values  # the uint64 value would wrap to a negative int64
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "out"
    _assert_refused(_hwgen("sim", "--ir", saved, "--pe", 4, "--inputs", tmp_path / "images.npy", "--images", 2,
                           "--out", out, cwd=tmp_path), out,
                    f"--inputs values must be in [0, 255] (the IR's 8-bit unsigned input), found {found}")


def test_board_images_out_of_range_are_refused(saved, tmp_path):
    """hwgen run reads its --images through the same checks as sim's --inputs, the range included."""
    from hwgen.cli import UsageError, _board_images
    images = np.zeros((1, 8, 8), np.int64)
    images[0, 0, 0] = 256
    np.save(tmp_path / "one.npy", images)
    with pytest.raises(UsageError, match=r"--images values must be in \[0, 255\] \(the IR's 8-bit unsigned input\), "
                                         r"found \[0, 256\]"):
        _board_images(tmp_path / "one.npy", ir.load(saved))


def test_unknown_layer_kind(saved, tmp_path):
    path, out = tmp_path / "edited.ir", tmp_path / "out"
    edit_manifest(saved, path, lambda m: m["layers"][1].update(kind="upsample"))
    _assert_refused(_hwgen("build", "--ir", path, "--pe", 4, "--out", out, cwd=tmp_path), out,
                    "layer 'conv2': kind must be one of conv, linear, avgpool, maxpool, found 'upsample'")


def test_unsupported_layer_use(small_model, tmp_path):
    """Valid IR the generator does not build: max pooling of a signed tensor."""
    c = small_model.layers[0].out_shape[0]
    first = dataclasses.replace(small_model.layers[0], out_signed=True, relu=False)
    pool = ir.Layer("pool0", "maxpool", "conv1", (c, 8, 8), (c, 4, 4), 8, True, False, kernel=2, stride=2)
    layers = list(small_model.layers)
    layers[1] = dataclasses.replace(layers[1], source="pool0", in_shape=(c, 4, 4), out_shape=(32, 2, 2))
    layers[2] = dataclasses.replace(layers[2], in_shape=(32, 2, 2), out_shape=(32, 2, 2))
    layers[3] = dataclasses.replace(layers[3], in_shape=(32, 2, 2), out_shape=(64, 2, 2))
    layers[4] = dataclasses.replace(layers[4], in_shape=(64, 2, 2))
    path = tmp_path / "pool.ir"
    ir.save(dataclasses.replace(small_model, layers=tuple([first, pool] + layers[1:])), path)
    out = tmp_path / "out"
    _assert_refused(_hwgen("build", "--ir", path, "--pe", 4, "--out", out, cwd=tmp_path), out,
                    "layer 'pool0': max pooling needs a non-negative (unsigned) input")


_DIGESTS = """import hashlib, json, sys
from hwgen.contract import ir
from hwgen.build.generate import BuildConfig, generate
files = generate(ir.load(sys.argv[1]), BuildConfig(pe=4))
print(json.dumps({name: hashlib.sha256(text.encode()).hexdigest() for name, text in files.items()}))"""


def test_build_is_byte_identical_and_machine_independent(saved, tmp_path):
    """Another process (another hash seed, another working folder) gives the same bytes, and nothing in them
    names this machine: no source-location attribute, no path of this checkout or of the run."""
    a = generate(ir.load(saved), BuildConfig(pe=4))
    assert a == generate(ir.load(saved), BuildConfig(pe=4))
    digests = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in a.items()}
    for seed in ("0", "1"):
        res = subprocess.run([sys.executable, "-c", _DIGESTS, str(saved)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": seed})
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == digests
    checkout = str(Path(hwgen.__file__).resolve().parent.parent)
    for name, text in a.items():
        assert "(* src" not in text and checkout not in text and str(tmp_path) not in text, name


@pytest.mark.parametrize("network, buffers", [("digits", 2), ("resnet20", 3)])
def test_manifest_buffer_bits_are_the_rams_the_rtl_instantiates(small_model, network, buffers):
    model = small_model if network == "digits" else resnet_cifar(20, 8, lanes=16, pe=4, density=0.765, seed=0)
    files = generate(model, BuildConfig(pe=4))
    rams = [dict(re.findall(r"\.(\w+)\(32'd(\d+)\)", params))
            for params in re.findall(rf"{RAM_MODULE} #\((.*?)\) \w+ \(", files["hwgen_top.v"], re.S)]
    assert len(rams) == buffers + 1 == lower(model, 4, 16).n_bufs + 1  # the activation buffers and the result
    bits = sum(int(r["LANES"]) * int(r["LANE_WIDTH"]) * int(r["DEPTH"]) for r in rams)
    assert json.loads(files["manifest.json"])["buffer_bits"] == bits


def test_build_writes_manifest(saved, tmp_path):
    out = tmp_path / "out"
    res = _hwgen("build", "--ir", saved, "--pe", 4, "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["predicted_cycles"] > 0 and man["rom_bits"] > 0
    assert 0 < man["kept_groups"] < man["total_groups"]
    assert {"hwgen_top.v", "hwgen_mem.v", "sched.hex", "pe0.hex", "rq3.hex"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("args, fragment", [
    (["build", "--maps", "dram"], "--maps dram needs --weights dram, found --weights rom"),
    (["build", "--weight-cache", "64"], "--weight-cache needs --weights dram, found --weights rom"),
    (["build", "--onchip-kbits", "1000", "--weights", "dram"], "--onchip-kbits plans the memories itself: drop "
                                                               "--weights"),
    (["build", "--onchip-kbits", "1"], "no memory plan fits 1,000 bits on chip"),
    (["build", "--weights", "dram", "--maps", "dram", "--band-words", "4"], "more than a band buffer (4 input"),
    (["synth", "--weights", "dram", "--board", "ulx3s-85f"], "--weights dram puts the weights alone in DRAM, and "
                                                             "on a board the host loads them through the maps' "
                                                             "write port: add --maps dram"),
    (["run", "--weights", "dram", "--port", "loop://", "--images", "x.npy"], "add --maps dram"),
    (["synth", "--weights", "dram", "--maps", "dram", "--device", "LFE5U-85F"], "a design with weights in DRAM "
                                                                               "needs a board with an SDRAM"),
])
def test_dram_options_refused_in_one_line(saved, tmp_path, args, fragment):
    """The memory tier's options on bad input: one line, exit 2, no output folder."""
    out = tmp_path / "out"
    res = _hwgen(*args, "--ir", saved, "--pe", "4", "--out", out, cwd=tmp_path)
    _assert_refused(res, out, fragment)


def test_a_user_folder_is_refused_before_the_memory_plan(saved, tmp_path):
    """--onchip-kbits plans for seconds to minutes: a folder hwgen did not write is refused first."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = _hwgen("build", "--ir", saved, "--pe", "4", "--onchip-kbits", "1000", "--out", out, cwd=tmp_path)
    assert res.returncode == 2 and "found a folder hwgen did not write" in res.stderr, res.stderr
    assert "planning" not in res.stdout and [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"
