"""Full 224x224 ResNet-18 at 16 PEs: build, Verilator build, one image simulated bit-exact.

Prints build time and peak memory, Verilator build time, simulated cycles against the prediction,
simulation wall time and cycles/s. Targets: build <= 60 s and <= 4 GB; the whole run <= 10 min.
Run: python bench/resnet18_full.py [--pe 16] [--out rtl_out/bench_resnet18]
"""
import argparse
import resource
import sys
import time
from pathlib import Path

from hwgen.build.generate import BuildConfig, build
from hwgen.frontends.zoo import PAPER_GROUP_DENSITY
from hwgen.sim.stream import random_images, simulate
from hwgen.frontends.synthetic import resnet18


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pe", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("rtl_out/bench_resnet18"))
    args = ap.parse_args()
    start = time.perf_counter()
    model = resnet18(224, pe=args.pe, density=PAPER_GROUP_DENSITY, seed=0)
    t_model = time.perf_counter() - start
    t0 = time.perf_counter()
    man = build(model, BuildConfig(pe=args.pe), args.out)
    t_build = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"synthetic model (seeded, calibrated): {t_model:.1f} s")
    print(f"hwgen build: {t_build:.1f} s, peak memory so far {peak_gb:.2f} GB")
    result = simulate(model, args.out, random_images(model, 1, seed=0))
    cycles = result["cycles_per_image"]
    print(f"verilator build: {result['verilator_build_s']:.1f} s")
    print(f"simulated cycles: {cycles:,} (predicted {result['predicted_cycles']:,}, "
          f"{'equal' if result['cycles_match'] else 'DIFFERENT'})")
    print(f"bit-exact: {result['mismatches'] == 0} ({result['outputs_checked']} values)")
    print(f"simulation wall time: {result['simulation_s']:.1f} s, {cycles / result['simulation_s']:,.0f} cycles/s "
          f"(includes streaming {man['input_beats']:,} input beats from Python)")
    print(f"utilization: {man['utilization']:.4f}")
    total = time.perf_counter() - start
    print(f"whole run: {total:.1f} s")
    ok = result["mismatches"] == 0 and result["cycles_match"]
    print(f"resnet18_224_build_s: {t_build:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
