"""ResNet-18 at 224x224 in the memory plan for the ULX3S-85F: weights and maps where the planner puts them
within 90% of the LFE5U-85F's block RAMs (DP16KD, counted as Yosys maps each memory), built and run through
Verilator on one image against the deterministic DRAM (docs/dram.md), bit-exact on all 1,000 logits.

    python bench/resnet18_dram.py [--pe 16] [--part LFE5U-85F] [--out DIR] [--no-sim]

It prints the plan, the DRAM traffic per image, the predicted and simulated cycles against the compute-only
design (everything on chip, 5.59 M cycles at 16 PEs), images/s at 100 MHz and the wall times. Last line:
``dram_cycles_ratio: X``, simulated cycles over compute-only cycles (predicted ones with --no-sim).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from hwgen.build.generate import BuildConfig, build
from hwgen.compile.memplan import onchip_memories, plan
from hwgen.fpga.fit import Mem, bram_blocks
from hwgen.fpga.targets import PARTS
from hwgen.frontends import zoo
from hwgen.sim.stream import random_images, simulate

BRAM_SHARE = 0.9  # the target: on-chip memory within 90% of the part's block RAMs
CLOCK_MHZ = 100.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pe", type=int, default=16)
    ap.add_argument("--part", default="LFE5U-85F", choices=sorted(p for p in PARTS if p.startswith("LFE5U")))
    ap.add_argument("--out", type=Path, help="build folder (default: a temporary one)")
    ap.add_argument("--no-sim", action="store_true", help="plan and build only: predicted cycles")
    args = ap.parse_args(argv)

    part = PARTS[args.part]
    budget = int(BRAM_SHARE * part.bram)
    blocks = lambda mems: sum(bram_blocks(Mem(m.kind, m.width, m.depth, m.lanes), part.family)  # noqa: E731
                              for m in mems)
    model = zoo.build("resnet18", pe=args.pe)
    t0 = time.perf_counter()
    p = plan(model, args.pe, 16, 16, budget, cost=blocks, unit="DP16KD")
    c = p.chosen
    t1 = time.perf_counter()
    print(f"ResNet-18 224x224, {args.pe} PEs x 16 lanes, {args.part}: at most {budget} of its {part.bram} DP16KD "
          f"(90%), planned in {t1 - t0:.1f} s")
    print(f"plan: weights {c.weights}, maps {c.maps}; weight cache {c.weight_cache} steps per half, band buffers "
          f"of {c.band_words} input and {c.out_band_words} output words")
    cfg = BuildConfig(args.pe, 16, 16, weights=c.weights, weight_cache=c.weight_cache or None,
                      band_words=c.band_words, out_band_words=c.out_band_words, stem=c.stem)
    print(f"stem: {c.stem}")
    mems = onchip_memories(cfg.lower(model))
    for kind in dict.fromkeys(m.kind for m in mems):
        mine = [m for m in mems if m.kind == kind]
        print(f"  {kind:20s} {blocks(mine):>4} DP16KD {sum(m.width * m.depth for m in mine):>11,} bits")
    print(f"  {'total':20s} {blocks(mems):>4} DP16KD {c.total_bits:>11,} bits")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "resnet18_dram"
        man = build(model, cfg, out)
        t2 = time.perf_counter()
        dram = man["dram"]
        total = dram["weights_bytes"] + dram["map_read_bytes"] + dram["map_write_bytes"]
        print(f"DRAM traffic per image: {total / 1e6:.2f} MB (weights {dram['weights_bytes'] / 1e6:.2f}, maps read "
              f"{dram['map_read_bytes'] / 1e6:.2f}, written {dram['map_write_bytes'] / 1e6:.2f}) over a "
              f"{dram['data_bits']}-bit port, {dram['model_latency']} cycles latency; built in {t2 - t1:.1f} s")
        predicted = man["predicted_cycles"]
        print(f"predicted cycles {predicted:,} against compute-only {p.compute_cycles:,} "
              f"({predicted / p.compute_cycles:.3f}x); {CLOCK_MHZ * 1e6 / predicted:.1f} images/s at {CLOCK_MHZ:g} MHz")
        shared = dram["shared_bus_estimate"]
        print(f"on one data bus for both directions, as the board's SDR SDRAM has: about {shared:,} cycles "
              f"({shared / p.compute_cycles:.3f}x; per layer its predicted cycles or its DRAM beats, whichever is more)")
        cycles = predicted
        if not args.no_sim:
            result = simulate(model, out, random_images(model, 1, seed=1),
                              progress=lambda message: print(f"  {message}", flush=True))
            cycles = result["cycles_per_image"]
            print(f"Verilator: {result['images'] - result['mismatches']}/{result['images']} images bit-exact on "
                  f"{result['outputs_checked']:,} logits, {cycles:,} cycles (predicted {predicted:,}, "
                  f"{'equal' if result['cycles_match'] else 'DIFFERENT'}); model built in "
                  f"{result['verilator_build_s']:.0f} s, image simulated in {result['simulation_s']:.0f} s")
            if result["mismatches"] or not result["cycles_match"]:
                print(f"  {result['mismatch_detail']} {result['first_difference']}")
                return 1
    print(f"dram_cycles_ratio: {cycles / p.compute_cycles:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
