"""Tool speed: `hwgen build` wall time and peak memory for ResNet-20 (32x32) and ResNet-18 (224x224) at
16 PEs, medians of repeated runs, each build in a fresh process (as a user runs it); then, with --sim, the
Verilator build time and simulated cycles per second of one image through the cocotb testbench.

    python bench/tool_speed.py [--repeat 3] [--sim]

Last line: ``resnet18_build_s: <median seconds>``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = (("resnet20", 32), ("resnet18", 224))

_BUILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from hwgen.cli import main
rc = main(["build", "--model", sys.argv[1], "--pe", "16", "--out", sys.argv[2]])
print(json.dumps({"rc": rc, "s": time.perf_counter() - t0,
                  "gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""

_SIM = """
import json, sys
from hwgen.build.generate import BuildConfig, build
from hwgen.frontends.zoo import PAPER_GROUP_DENSITY
from hwgen.sim.stream import random_images, simulate
from hwgen.frontends import synthetic
m = synthetic.resnet_cifar(20, 32, pe=16, density=PAPER_GROUP_DENSITY) if sys.argv[1] == "resnet20" else \
    synthetic.resnet18(224, pe=16, density=PAPER_GROUP_DENSITY)
build(m, BuildConfig(16), sys.argv[2])
r = simulate(m, sys.argv[2], random_images(m, 1, 0))
print(json.dumps({k: r[k] for k in ("verilator_build_s", "simulation_s", "cycles_per_image", "mismatches")}))
"""


def _run(code: str, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"bench step failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sim", action="store_true", help="also build and run Verilator (one image each)")
    args = ap.parse_args()
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in MODELS:
            runs = [_run(_BUILD, name, os.path.join(tmp, f"{name}{i}")) for i in range(args.repeat)]
            s = statistics.median(r["s"] for r in runs)
            gb = statistics.median(r["gb"] for r in runs)
            medians[name] = s
            times = ", ".join(f"{r['s']:.1f}" for r in runs)
            print(f"hwgen build {name} ({size}x{size}, 16 PEs): median {s:.1f} s, peak memory {gb:.2f} GB "
                  f"(runs: {times} s)")
            if args.sim:
                r = _run(_SIM, name, os.path.join(tmp, f"{name}_sim"))
                print(f"  verilator build {r['verilator_build_s']:.1f} s; one image {r['cycles_per_image']:,} cycles "
                      f"in {r['simulation_s']:.1f} s = {r['cycles_per_image'] / r['simulation_s']:,.0f} cycles/s "
                      f"through the cocotb testbench; mismatches {r['mismatches']}")
    print(f"resnet18_build_s: {medians['resnet18']:.1f}")


if __name__ == "__main__":
    main()
