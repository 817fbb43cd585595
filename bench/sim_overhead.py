"""Testbench overhead: clock cycles simulated per second by one Verilator model of one build, driven by the
cocotb testbench (hwgen.sim.stream, sim/tb_top.py) and free-running under a C++ harness
(bench/freerun_main.cpp) that sends the same input beats with no Python in the loop.

    python bench/sim_overhead.py [--model resnet20] [--pe 16] [--images 10] [--repeats 3] [--out DIR]

Both runs are checked: every output value equal to hwgen.contract.reference, `cycles` equal to the prediction.
Rates are medians over the repeats of clock cycles simulated (reset, input, engine, output: the stream
sequence is the testbench's, so both simulate the same count) over the wall time of the simulator process.
Last line: ``testbench_overhead: <ratio>x`` (free-running cycles/s over cocotb cycles/s).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hwgen.contract import encoding
from hwgen.build.generate import VERILOG_FILES
from hwgen.sim.runner import simulator_env

HARNESS = Path(__file__).resolve().with_name("freerun_main.cpp")
FREERUN_BUILD = "freerun_build"  # the harness's Verilator folder inside a build folder


def build_freerun(build_dir: Path, *, jobs: int = 2, extra_args: tuple[str, ...] = ()) -> Path:
    """Verilate the design in ``build_dir`` (written by hwgen.build.generate) with the harness as its main; the same
    Verilator and C++ options as hwgen.sim.stream.compile_model, less cocotb's VPI and public signals.
    Returns the executable, which reads the ROM images from the folder it runs in."""
    build_dir = Path(build_dir).resolve()
    top = json.loads((build_dir / "manifest.json").read_text())["top"]
    mdir = build_dir / FREERUN_BUILD
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(jobs), "-Wno-fatal", "--top-module", top,
           "--prefix", "Vtop", "--timescale", "1ns/1ps", "-Mdir", str(mdir), "-o", "freerun", *extra_args,
           str(HARNESS), *(str(build_dir / f) for f in VERILOG_FILES)]
    env = simulator_env(dict(os.environ))  # verilator on PATH and the make overrides, for this run only
    log = build_dir / "freerun_build.log"
    with open(log, "w") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"the free-running harness did not build (exit {done.returncode}); see {log}")
    return mdir / "freerun"


def input_payloads(manifest: dict, image) -> list[int]:
    """The input port's payloads for one image: hwgen.contract.encoding.pack_input's beats with ``last`` above the
    data on the final one (docs/stream.md)."""
    beats = encoding.pack_input(image, manifest["lanes"], manifest["act_bits"], manifest["im2col"])
    data_bits = manifest["lanes"] * manifest["act_bits"]
    return [b | (int(i == len(beats) - 1) << data_bits) for i, b in enumerate(beats)]


def run_freerun(binary: Path, build_dir: Path, images) -> dict:
    """Run the harness on ``images`` [K, C, H, W] in ``build_dir``. Returns per image the output values
    (decoded as the testbench decodes them), the ``last`` flags and the ``cycles`` port; the clock cycles
    simulated; the wall time of the process and of the harness's simulation loop alone."""
    build_dir = Path(build_dir).resolve()
    manifest = json.loads((build_dir / "manifest.json").read_text())
    limit = 4 * (manifest["predicted_cycles"] + manifest["input_beats"] + 2 * manifest["output_beats"]) + 10_000
    beats_file, outputs_file = build_dir / "freerun_beats.txt", build_dir / "freerun_outputs.txt"
    lines = [f"{len(images)} {manifest['input_beats']} {manifest['output_beats']} {limit}"]
    lines += [f"{p:x}" for image in images for p in input_payloads(manifest, image)]
    beats_file.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    done = subprocess.run([str(binary), str(beats_file), str(outputs_file)], cwd=build_dir, capture_output=True,
                          text=True)
    process_s = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"the free-running harness failed (exit {done.returncode}): {done.stderr.strip()}")
    stats = dict(line.split() for line in done.stdout.splitlines())
    bits, signed = manifest["out_bits"], manifest["out_signed"]
    outputs, lasts, cycles = [], [], []
    for line in outputs_file.read_text().splitlines():
        count, *raw = (int(word, 16) for word in line.split())
        cycles.append(count)
        outputs.append([encoding.unpack_value(r, bits, signed) for r in raw])
        lasts.append([r >> bits for r in raw])
    return {"outputs": outputs, "lasts": lasts, "cycles": cycles, "clock_cycles": int(stats["clock_cycles"]),
            "loop_s": float(stats["loop_s"]), "process_s": process_s}


def cocotb_clock_cycles(build_dir: Path, period_ns: int = 10) -> int | None:
    """Rising clock edges of the last cocotb run (the first at 0 ns, the last where the test ends), from the
    SIM TIME of the summary in its sim.log; None if the log has none."""
    found = re.findall(r"stream_images\s+PASS\s+([0-9.]+)", (Path(build_dir) / "sim.log").read_text())
    return round(float(found[-1]) / period_ns) + 1 if found else None


def main() -> int:
    from hwgen.build.generate import BuildConfig, build
    from hwgen.cli import load_model
    from hwgen.frontends.zoo import NAMES
    from hwgen.contract.reference import expected_beats
    from hwgen.sim.stream import compile_model, random_images, simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=NAMES, default="resnet20")
    ap.add_argument("--input-size", type=int, help="as `hwgen build --input-size` (default: the model's)")
    ap.add_argument("--pe", type=int, default=16)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="build folder (default rtl_out/sim_overhead_<model>_pe<N>)")
    args = ap.parse_args()
    model = load_model(argparse.Namespace(ir=None, model=args.model, input_size=args.input_size, lanes=16,
                                          pe=args.pe, seed=0))
    out = (args.out or Path("rtl_out") / f"sim_overhead_{args.model}_pe{args.pe}").resolve()
    man = build(model, BuildConfig(args.pe), out)
    images = random_images(model, args.images, seed=0)
    expected = expected_beats(model, images)
    t0 = time.perf_counter()
    compiled = compile_model(out)
    t1 = time.perf_counter()
    harness = build_freerun(out)
    t2 = time.perf_counter()
    print(f"{model.name}, {args.pe} PEs, {args.images} images; predicted {man['predicted_cycles']:,} cycles per image")
    print(f"Verilator builds: cocotb model {t1 - t0:.1f} s, free-running harness {t2 - t1:.1f} s")
    cocotb_rates, free_rates, loop_rates = [], [], []
    for r in range(args.repeats):  # interleaved, so that both see the same load
        res = simulate(model, out, images, compiled=compiled)
        if res["mismatches"] or not res["cycles_match"]:
            raise SystemExit(f"cocotb run: {res['mismatches']} mismatches, cycles {res['cycles_per_image']}")
        free = run_freerun(harness, out, images)
        if free["outputs"] != expected:
            bad = next(i for i, (g, e) in enumerate(zip(free["outputs"], expected)) if g != e)
            raise SystemExit(f"free-running harness: image {bad} differs from the reference")
        if any(l != [0] * (len(l) - 1) + [1] for l in free["lasts"]):
            raise SystemExit("free-running harness: `last` not on the final output beat only")
        if free["cycles"] != [man["predicted_cycles"]] * args.images:
            raise SystemExit(f"free-running harness: cycles {free['cycles']}, predicted {man['predicted_cycles']}")
        clocks = free["clock_cycles"]
        cocotb_clocks = cocotb_clock_cycles(out) or clocks
        if cocotb_clocks != clocks:
            print(f"  note: the cocotb run simulated {cocotb_clocks:,} clock cycles, the harness {clocks:,}")
        cocotb_rates.append(cocotb_clocks / res["simulation_s"])
        free_rates.append(clocks / free["process_s"])
        loop_rates.append(clocks / free["loop_s"])
        print(f"  run {r + 1}: {clocks:,} clock cycles; cocotb {res['simulation_s']:.2f} s, free-running "
              f"{free['process_s']:.3f} s (loop {free['loop_s']:.3f} s)")
    cocotb_rate, free_rate = statistics.median(cocotb_rates), statistics.median(free_rates)
    print(f"cycles per image (`cycles` port): cocotb {res['cycles_per_image']:,}, free-running {free['cycles'][0]:,}, "
          f"predicted {man['predicted_cycles']:,}; bit-exact both ({len(expected) * len(expected[0]):,} values)")
    print(f"clock cycles simulated: {clocks:,} ({clocks / args.images:,.0f} per image, reset, input and output "
          f"beats included)")
    print(f"cocotb testbench: median {cocotb_rate:,.0f} cycles/s (simulator process)")
    print(f"free-running:     median {free_rate:,.0f} cycles/s (process), {statistics.median(loop_rates):,.0f} "
          f"cycles/s (loop alone)")
    print(f"testbench_overhead: {free_rate / cocotb_rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
