"""The free-running Verilator harness of bench/sim_overhead.py (bench/freerun_main.cpp): the input beats the
cocotb testbench sends, driven from C++; every output value equal to the reference, `cycles` == predicted."""
import sys
from pathlib import Path

from hwgen.build.generate import BuildConfig, build
from hwgen.contract.reference import expected_beats
from hwgen.sim.stream import random_images

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from sim_overhead import build_freerun, run_freerun  # noqa: E402


def test_freerun_harness_is_bit_exact_and_cycle_exact(small_model, tmp_path):
    """Three images back to back through one process; the 129-bit input payload (16 lanes x 8 bits + last)
    exercises the harness's wide-port path."""
    out = tmp_path / "small_pe4"
    man = build(small_model, BuildConfig(pe=4), out)
    assert man["lanes"] * man["act_bits"] + 1 > 64
    images = random_images(small_model, 3, seed=3)
    result = run_freerun(build_freerun(out), out, images)
    assert result["outputs"] == expected_beats(small_model, images)
    assert result["lasts"] == [[0] * (man["output_beats"] - 1) + [1]] * 3
    assert result["cycles"] == [man["predicted_cycles"]] * 3
    assert result["clock_cycles"] > sum(result["cycles"])
