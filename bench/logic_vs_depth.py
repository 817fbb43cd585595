"""The logic does not grow with network depth: cell counts of the whole top level for ResNet-20 and
ResNet-56 at the same N and L (ROM contents are image files; only a few counter widths change).

Run: python bench/logic_vs_depth.py [--pe 16]
"""
import argparse
import sys

from hwgen.compile.lower import lower
from hwgen.fpga.netlist import cell_counts
from hwgen.rtl.top import Top
from hwgen.frontends.synthetic import resnet_cifar


def counts(depth: int, pe: int) -> tuple[dict, int]:
    prog = lower(resnet_cifar(depth, pe=pe, density=0.765, seed=0, calib_images=1), pe, 16)
    return cell_counts(Top(prog)), sum(l.n_steps for l in prog.layers) * pe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pe", type=int, default=16)
    args = ap.parse_args()
    (c20, rom20), (c56, rom56) = counts(20, args.pe), counts(56, args.pe)
    print(f"{'cell type':<16}{'ResNet-20':>12}{'ResNet-56':>12}")
    for cell in sorted(set(c20) | set(c56)):
        print(f"{cell:<16}{c20.get(cell, 0):>12}{c56.get(cell, 0):>12}")
    print(f"{'(ROM words)':<16}{rom20:>12}{rom56:>12}")
    total20, total56 = sum(c20.values()), sum(c56.values())
    print(f"logic_cells_resnet56_over_resnet20: {total56 / total20:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
