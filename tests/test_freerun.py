"""The free-running Verilator harness of bench/sim_overhead.py (bench/freerun_main.cpp): the input beats the
cocotb testbench sends, driven from C++; every output value equal to the reference, `cycles` == predicted."""
import importlib.util
from pathlib import Path

from hwgen.build.generate import BuildConfig, build
from hwgen.contract.reference import expected_beats
from hwgen.sim.stream import random_images


def load_bench(name: str):
    """bench/<name>.py as a module, loaded by file path: bench/ is scripts, not a package on sys.path."""
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sim_overhead = load_bench("sim_overhead")


def test_freerun_harness_is_bit_exact_and_cycle_exact(small_model, tmp_path):
    """Three images back to back through one process; the 129-bit input payload (16 lanes x 8 bits + last)
    exercises the harness's wide-port path."""
    out = tmp_path / "small_pe4"
    man = build(small_model, BuildConfig(pe=4), out)
    assert man["lanes"] * man["act_bits"] + 1 > 64
    images = random_images(small_model, 3, seed=3)
    result = sim_overhead.run_freerun(sim_overhead.build_freerun(out), out, images)
    assert result["outputs"] == expected_beats(small_model, images)
    assert result["lasts"] == [[0] * (man["output_beats"] - 1) + [1]] * 3
    assert result["cycles"] == [man["predicted_cycles"]] * 3
    assert result["clock_cycles"] > sum(result["cycles"])
