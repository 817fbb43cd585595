"""The memory plan of ResNet-18 at 224x224 for the ULX3S-85F: where maps and weights live within 90% of the
LFE5U-85F's block RAM, the DRAM traffic per image, and the roofline estimate of cycles per image against the
compute-only design (docs/dram.md). The stem with and without the host-side im2col, side by side.

    python bench/dram_plan.py [--pe 16] [--part LFE5U-85F] [--bytes-per-cycle 2] [--latency 16]

An estimate from the plan, not a simulation: the DRAM datapath is not built yet.
"""
from __future__ import annotations

import argparse
import sys

from hwgen.compile.lower import lower, predicted_cycles
from hwgen.compile.memplan import Dram, plan
from hwgen.fpga.targets import PARTS
from hwgen.frontends import zoo

# Of an ECP5 DP16KD's 36 x 512 bits, a datapath of whole bytes uses 32 x 512 (the other 4 are parity bits).
BLOCK_DATA_BITS = 32 * 512
BRAM_SHARE = 0.9  # the target: on-chip memory within 90% of the part's block RAMs


def _table(p, clock_mhz: float) -> list[str]:
    rows = [f"{'layer':10s} {'compute':>9s} {'memory':>9s} {'cycles':>9s} {'passes':>6s}  maps in/res/out  "
            f"{'weights':9s} {'read B':>9s} {'write B':>9s}  bound"]
    for l in p.layers:
        where = "/".join("D" if d else "-" for d in (l.input_dram, l.residual_dram, l.output_dram))
        rows.append(f"{l.name:10s} {l.compute_cycles:9,d} {l.memory_cycles:9,d} {l.cycles:9,d} {l.passes:6d}  "
                    f"{where:15s}  {l.weights:9s} {l.read_bytes:9,d} {l.write_bytes:9,d}  {l.bound}")
    onchip = ", ".join(f"{k} {v / 8192:,.0f} KiB" for k, v in p.onchip_bits.items())
    rows += [f"on chip: {onchip} (of {p.budget_bits / 8192:,.0f} KiB)",
             f"DRAM traffic per image: {p.traffic_bytes / 1e6:.2f} MB; "
             f"memory-bound layers: {sum(l.bound == 'memory' for l in p.layers)} of {len(p.layers)}",
             f"cycles per image: {p.cycles:,} (compute-only {p.compute_cycles:,}); "
             f"{clock_mhz * 1e6 / p.cycles:.1f} images/s at {clock_mhz:g} MHz"]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pe", type=int, default=16)
    ap.add_argument("--part", default="LFE5U-85F", choices=sorted(p for p in PARTS if p.startswith("LFE5U")))
    ap.add_argument("--bytes-per-cycle", type=float, default=2.0, help="DRAM bytes per accelerator cycle "
                    "(default 2: 16-bit SDR SDRAM at the accelerator clock, at its peak)")
    ap.add_argument("--latency", type=int, default=16, help="DRAM cycles from request to first data")
    ap.add_argument("--clock-mhz", type=float, default=100.0)
    args = ap.parse_args(argv)

    budget = int(BRAM_SHARE * PARTS[args.part].bram) * BLOCK_DATA_BITS
    dram = Dram(args.bytes_per_cycle, args.latency)
    model = zoo.build("resnet18", pe=args.pe)
    compute_only = None
    for im2col in (True, False):
        prog = lower(model, args.pe, 16, 16, stem_im2col=im2col)
        p = plan(prog, budget, dram)
        if im2col:
            compute_only, chosen = predicted_cycles(prog), p
        print(f"\n== ResNet-18 224x224, {args.pe} PEs x 16 lanes, {args.part} ({budget:,} bits on chip), stem "
              f"{'as a 1x1 conv over the host-side im2col' if im2col else 'as a 7x7 conv over the raw image'}")
        print("\n".join(_table(p, args.clock_mhz)))
    print(f"\nplan with the im2col stem: {chosen.cycles:,} cycles against the compute-only {compute_only:,}")
    print(f"dram_cycles_ratio_estimate: {chosen.cycles / compute_only:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
