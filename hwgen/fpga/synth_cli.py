"""The command line of ``hwgen synth``: its options, checked at the edge, and the run that prints its
progress and summary (the flow itself: ``fpga/flow.py``)."""
from __future__ import annotations

import argparse
import math
import signal
import time
from pathlib import Path

from ..build import outdir
from ..build.generate import BuildConfig
from ..contract.ir import Model
from .fit import FitError
from .flow import SynthConfig, SynthError, _raise_on_sigterm, check_out, failed_path, summary, synthesize
from .litedram import SDRAM_CHIPS
from .targets import BOARDS, FAMILIES, FT231X_BAUD, PARTS


MAX_CLOCK_MHZ = 1000  # well above what any FPGA fabric here reaches (ECP5: a few hundred MHz)


def _clock_mhz(text: str) -> float:
    try:
        mhz = float(text)
    except ValueError:
        mhz = math.nan
    if not 0 < mhz <= MAX_CLOCK_MHZ:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a clock in MHz above 0 and at most {MAX_CLOCK_MHZ}, "
                                         f"found {text!r}")
    return mhz


def _baud(text: str) -> int:
    try:
        baud = int(text)
    except ValueError:
        baud = 0
    if baud < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer baud rate, found {text!r}")
    return baud


def add_arguments(p) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--board", choices=sorted(BOARDS), help="an amaranth-boards board: ECP5 and iCE40 boards "
                       "are built here; Xilinx and Intel boards get the vendor build plan, not run")
    where.add_argument("--device", choices=sorted(PARTS), help="a bare part: nextpnr places the I/O")
    defaults = "; ".join(f"{f.default_clock_hz / 1e6:g} MHz on {f.title}" + (
        ", from a board's oscillator through a PLL" if f.pll else " (a bare part: a board runs at its oscillator's)")
        for f in FAMILIES.values())
    p.add_argument("--clock-mhz", type=_clock_mhz, help=f"accelerator clock (default {defaults})")
    fast = ", ".join(sorted({b.name.split("-")[0] for b in BOARDS.values() if b.baud != 115200}))
    p.add_argument("--baud", type=_baud, help=f"UART baud rate (default: the board's USB bridge's highest, "
                   f"{FT231X_BAUD:,} on {fast}; else 115200)")
    p.add_argument("--sdram-chip", choices=sorted(SDRAM_CHIPS), default="IS42S16160",
                   help="with weights in DRAM: the board's SDRAM chip, which differs between ULX3S revisions "
                   "(default IS42S16160, 32 MB; AS4C32M16 is 64 MB)")
    p.add_argument("--pnr-seed", type=int, default=1, help="nextpnr placement seed (default 1)")


def default_baud(board: str | None) -> int:
    """The UART rate when none is given: the board's (``Board.baud``), else SynthConfig's."""
    return BOARDS[board].baud if board else SynthConfig.baud


def synth_config(args) -> SynthConfig:
    return SynthConfig(args.board, args.device, None if args.clock_mhz is None else round(args.clock_mhz * 1e6),
                       args.baud or default_baud(args.board), args.pnr_seed, args.sdram_chip)


def synth_out(args, out: Path) -> Path:
    """The output folder: ``--out``, else the default one named after the target."""
    return out if args.out is not None else out.with_name(f"{out.name}_{(args.board or args.device).lower()}")


def main(args, model: Model, build_cfg: BuildConfig, out: Path) -> int:
    cfg = synth_config(args)
    out = synth_out(args, out)
    check_out(out)  # a refused --out prints its error alone
    t0 = time.monotonic()
    # a terminated run (kill, a CI timeout) unwinds like Ctrl-C: the running tool is stopped and the
    # half-built folder moved to <out>.failed, never left beside the results
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    progress = lambda message: print(f"  {message}", flush=True)
    print(f"synthesizing {model.name} for {build_cfg.pe} PEs x {build_cfg.lanes} lanes on {cfg.board or cfg.device} "
          f"-> {out} (this takes minutes; the tool logs are named below)", flush=True)
    try:
        r = synthesize(model, build_cfg, cfg, out, progress)
    except (SynthError, FitError) as e:
        failed = failed_path(out)
        kept = failed.exists() and outdir.foreign(failed, outdir.HWGEN) is None
        raise type(e)(f"{e}{f' (files of the failed run: {failed})' if kept else ''}") from None
    print(summary(r).split("\n", 2)[2].rstrip())
    print(f"done in {time.monotonic() - t0:.0f} s -> {out / 'synth_report.json'}, {out / 'synth_summary.md'}")
    return 0 if not r["built"] or r["timing_passed"] else 1
