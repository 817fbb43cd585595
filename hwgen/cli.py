"""Command line: ``python -m hwgen build|sim|synth|run|report ...``. Arguments are parsed and checked here, once."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .contract import ir, mapping
from .build import outdir
from .frontends import zoo
from .build.generate import WEIGHT_PLACES, BuildConfig, build
from .contract.encoding import PE_KINDS
from .compile.lower import UnsupportedError
from .frontends.zoo import PAPER_GROUP_DENSITY

MAX_LANES = 1024  # the widest array built here (digits: 37 s to generate); the papers use 16 and 64


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line on stderr and exit status 2 (argparse would print the usage too)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _integer(low: int, high: int | None = None):
    """An argparse type: an integer from ``low`` (0 or 1) up to ``high``."""
    expected = ("a non-negative" if low == 0 else "a positive") + " integer" + (f" up to {high}" if high else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {value}")
        return value
    return parse


_positive = _integer(1)


def _common(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ir", type=Path, help="trained model (an IR file written by `python -m train`)")
    src.add_argument("--model", choices=zoo.NAMES,
                     help="build a seeded synthetic ternary network of this shape instead of a trained one")
    p.add_argument("--input-size", type=_positive, help="input height and width of a --model network "
                   "(default 224 for resnet18, 32 for the CIFAR ResNets, 8 for digits)")
    p.add_argument("--pe", type=_positive, required=True, help="number of PEs (a divisor of --lanes)")
    p.add_argument("--lanes", type=_integer(1, MAX_LANES), default=16,
                   help="input channels one PE adds per cycle (default 16)")
    p.add_argument("--tile", type=_positive, default=16, help="output pixels per tile, a power of two (default 16)")
    p.add_argument("--pe-kind", choices=PE_KINDS, default="ternary", help="ternary (add/subtract PEs, the design; "
                   "default) or mac (int8 multiply-accumulate PEs in the same array: a baseline for comparison)")
    p.add_argument("--seed", type=_integer(0), default=0, help="seed of the synthetic network and random images")
    p.add_argument("--weights", choices=WEIGHT_PLACES, default="rom", help="rom (on-chip weight ROMs; default) or "
                   "dram (step words streamed from external memory over an AXI4 read port into a weight cache, "
                   "docs/dram.md)")
    p.add_argument("--weight-cache", type=_positive, help="with --weights dram: step words per half of the weight "
                   "cache (default: the largest layer's); a larger layer runs in passes over its output channels")
    p.add_argument("--maps", choices=("chip", "dram"), default="chip", help="chip (whole-map buffers; default) or "
                   "dram (feature maps through DRAM in bands of rows, with --weights dram)")
    p.add_argument("--band-words", type=_positive, default=1024, help="with --maps dram: words (of --lanes "
                   "activations) in each of the six band buffers (default 1024)")
    p.add_argument("--onchip-kbits", type=_positive, help="plan where weights and maps live within this many "
                   "kbit of on-chip memory, for the fewest predicted cycles (instead of --weights and --maps)")
    p.add_argument("--out", type=Path, help="output folder (default rtl_out/<model>_pe<N>)")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m hwgen", description=__doc__)
    verbs = top.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="IR -> Verilog, ROM images, manifest.json")
    _common(b)
    s = verbs.add_parser("sim", help="build, then run K images in Verilator and compare with the reference")
    _common(s)
    s.add_argument("--images", type=_positive, default=20, help="number of images to simulate (default 20)")
    s.add_argument("--inputs", type=Path, help=".npy of integer images [K, C, H, W]; random ones otherwise")
    s.add_argument("--stall", type=float, default=0.0,
                   help="probability of an input gap / output stall per cycle (default 0)")
    s.add_argument("--verbose", action="store_true", help="show Verilator and cocotb output")
    s.add_argument("--waves", action="store_true", help="write a waveform to <out>/waves.fst (waves.vcd when "
                   "lz4.h, which Verilator's FST writer needs, is not installed); a separate, slower build")
    from .fpga import flow, synth_cli

    y = verbs.add_parser("synth", help="synthesize for an FPGA board or part: bitstream and synth_report.json, "
                         "or a vendor build plan")
    _common(y)
    synth_cli.add_arguments(y)
    h = verbs.add_parser("run", help="send images to the accelerator on a board over its UART, read the logits")
    _common(h)
    h.add_argument("--port", required=True, help="serial device of the board's UART (e.g. /dev/ttyUSB0) or a "
                   "pyserial URL (socket://host:port)")
    h.add_argument("--images", type=Path, required=True, help=".npy of integer images [K, C, H, W]")
    h.add_argument("--count", type=_positive, help="send only the first COUNT images")
    h.add_argument("--board", choices=sorted(flow.BOARDS), help="the board the bitstream was built for with "
                   "`hwgen synth --board`: its default baud rate, and the same memory plan for a design too "
                   "large for its chip")
    h.add_argument("--baud", type=int, help="UART baud rate of the bitstream (default: hwgen synth's for --board, "
                   "3000000 on the ULX3S; else 115200)")
    h.add_argument("--clock-mhz", type=float, default=100.0, help="accelerator clock of the bitstream, for the "
                   "compute time against the link time (default 100)")
    h.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
    r = verbs.add_parser("report", help="render DIR/report.html (plots) from a build folder's manifest.json, "
                         "and sim_result.json / synth_report.json when present")
    r.add_argument("dir", type=Path, help="a folder written by `hwgen build`, `sim` or `synth`")
    return top


def build_config(args, model: ir.Model) -> BuildConfig:
    if args.onchip_kbits is not None:
        return _planned(args, model)
    if args.weight_cache is not None and args.weights != "dram":
        raise UsageError(f"--weight-cache needs --weights dram, found --weights {args.weights}")
    if args.maps == "dram" and args.weights != "dram":
        raise UsageError(f"--maps dram needs --weights dram, found --weights {args.weights}")
    return BuildConfig(args.pe, args.lanes, args.tile, pe_kind=args.pe_kind, weights=args.weights,
                       weight_cache=args.weight_cache, band_words=args.band_words if args.maps == "dram" else 0)


def _chosen_by_hand(args) -> list[str]:
    return [flag for flag, given in (("--weights", args.weights != "rom"), ("--maps", args.maps != "chip"),
                                     ("--weight-cache", args.weight_cache is not None)) if given]


def _planned(args, model: ir.Model, part=None, blocks: int = 0) -> BuildConfig:
    """The configuration of the memory planner's choice within ``--onchip-kbits``, or within ``blocks``
    block RAMs of ``part`` (``hwgen synth`` of a design too large for it)."""
    from .compile.memplan import PlanError, plan
    from .fpga.fit import Mem, bram_blocks

    if _chosen_by_hand(args):
        raise UsageError(f"--onchip-kbits plans the memories itself: drop {', '.join(_chosen_by_hand(args))}")
    if part is None:
        budget, unit, extra = args.onchip_kbits * 1000, "bits", {}
        print(f"planning the memories within {args.onchip_kbits:,} kbit on chip", flush=True)
    else:
        budget, unit, extra = blocks, part.family.bels["bram"], {"maps_with_weights": True}
        extra["cost"] = lambda mems: sum(bram_blocks(Mem(m.kind, m.width, m.depth, m.lanes), part.family)
                                         for m in mems)
        print(f"the design does not fit {part.name} on chip: planning the memories within {blocks} of its "
              f"{part.bram} {unit} (the rest for the SDRAM controller)", flush=True)
    try:
        p = plan(model, args.pe, args.lanes, args.tile, budget, args.pe_kind, unit=unit, **extra)
    except PlanError as e:
        raise UsageError(str(e)) from None
    c = p.chosen
    where = ("weights and maps on chip" if c.weights == "rom" else
             f"weights from DRAM (cache of {c.weight_cache} steps per half), maps "
             + (f"through DRAM in bands of {c.band_words} input and {c.out_band_words} output words" if c.band_words
                else "on chip")) + (", space-to-depth stem" if c.stem == "space_to_depth" else "")
    print(f"  {where}: {c.cycles:,} predicted cycles ({c.cycles / p.compute_cycles:.3f}x the on-chip design), "
          f"{c.total_bits:,} bits on chip" + (f" in {c.cost} {unit}" if part is not None else ""), flush=True)
    return BuildConfig(args.pe, args.lanes, args.tile, pe_kind=args.pe_kind, weights=c.weights,
                       weight_cache=c.weight_cache or None, band_words=c.band_words, out_band_words=c.out_band_words,
                       stem=c.stem)


def load_model(args) -> ir.Model:
    if args.ir is not None:
        if args.input_size is not None:
            raise UsageError("--input-size applies to --model networks; a trained IR fixes its own input size")
        return ir.load(args.ir)
    return zoo.build(args.model, pe=args.pe, lanes=args.lanes, input_size=args.input_size, seed=args.seed)


def _images(args, model: ir.Model) -> np.ndarray:
    from .sim.stream import random_images

    if args.inputs is None:
        try:
            return random_images(model, args.images, args.seed)
        except MemoryError:
            raise UsageError(f"--images {args.images}: that many random {list(model.input.shape)} images do not "
                             "fit in memory") from None
    images = _read_images(args.inputs, model, "--inputs")
    if len(images) < args.images:
        raise UsageError(f"--images {args.images} asked, but --inputs holds only {len(images)}")
    return _in_range(images[:args.images], model, "--inputs")


def _read_images(path: Path, model: ir.Model, flag: str, single: bool = False) -> np.ndarray:
    """Integer images [K, C, H, W] of ``model``'s input shape from the .npy ``path`` (also one [C, H, W] image
    when ``single``), as stored."""
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"{flag} {path}: not a readable .npy file ({e})") from None
    if single and images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.input.shape):
        raise UsageError(f"{flag} must hold [K, {', '.join(map(str, model.input.shape))}] images, "
                         f"found shape {list(images.shape)}")
    if not np.issubdtype(images.dtype, np.integer):
        raise UsageError(f"{flag} must hold integers, found {images.dtype}")
    return images


def _in_range(images: np.ndarray, model: ir.Model, flag: str) -> np.ndarray:
    """``images`` as int64, refused unless every value fits the IR's input (checked before the cast, which
    wraps large uint64)."""
    lo, hi = ir.value_range(model.input.bits, model.input.signed)
    if images.size and (images.min() < lo or images.max() > hi):
        kind = "signed" if model.input.signed else "unsigned"
        raise UsageError(f"{flag} values must be in [{lo}, {hi}] (the IR's {model.input.bits}-bit {kind} input), "
                         f"found [{images.min()}, {images.max()}]")
    return images.astype(np.int64)


def run(args) -> int:
    mapping.check_pe_lanes(args.pe, args.lanes)
    if args.verb == "sim" and not 0.0 <= args.stall < 1.0:
        raise UsageError(f"--stall must be a probability in [0, 1), not {args.stall}")
    if args.tile & (args.tile - 1):
        raise UsageError(f"--tile must be a power of two, not {args.tile}")
    model = load_model(args)
    out = args.out or Path("rtl_out") / f"{model.name}_pe{args.pe}"
    if args.verb in ("synth", "run"):
        return _board_verb(args, model, out)
    images = _images(args, model) if args.verb == "sim" else None
    t0 = time.perf_counter()
    synthetic = "" if args.ir else (f" (synthetic seeded weights, group density {PAPER_GROUP_DENSITY}; "
                                    "pass --ir for a trained model)")
    note = (f"Trained model from `{args.ir}`." if args.ir else
            f"**These weights are synthetic**: a seeded ternary network (seed {args.seed}) pruned PE-balanced to "
            f"group density {PAPER_GROUP_DENSITY}, the density of the paper's ResNet-18. The hardware, cycles and "
            f"memory sizes are those of a trained model of this shape; its outputs are not meaningful. "
            f"Pass `--ir FILE` for trained weights.")
    outdir.check(out, outdir.HWGEN)  # before the memory plan, which may take a while (build checks again)
    man = build(model, build_config(args, model), out, note,
                compare_unbalanced=args.ir is None)
    print(f"built {model.name}{synthetic} for {args.pe} PEs x {args.lanes} lanes in "
          f"{time.perf_counter() - t0:.1f} s -> {out}")
    print(f"  predicted cycles {man['predicted_cycles']:,}, utilization {man['utilization']:.4f}, kept groups "
          f"{man['kept_groups']}/{man['total_groups']}, {'weight bits in DRAM' if 'dram' in man else 'ROM bits'} {man['rom_bits']:,}; "
          f"report: {out / 'report.md'}")
    if args.verb == "build":
        return 0
    from .sim.stream import simulate

    t0 = time.perf_counter()
    result = simulate(model, out, images, stall=args.stall, seed=args.seed, verbose=args.verbose, waves=args.waves,
                      progress=lambda message: print(f"  {message}", flush=True))
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    (out / "sim_result.json").write_text(json.dumps(result, indent=1) + "\n")
    # cycles are predicted for the deterministic memory: a DRAM with random pauses (--stall) only adds some
    ok = result["mismatches"] == 0 and result["cycles_match"] is not False and not result["stream_problems"]
    print(f"  {result['images'] - result['mismatches']}/{result['images']} images bit-exact, cycles "
          f"{result['cycles_per_image']} (predicted {result['predicted_cycles']}"
          f"{'' if result['cycles_match'] is not None else ' with a memory without pauses'}) -> {out / 'sim_result.json'}")
    for line in result["mismatch_detail"] + result["stream_problems"][:5]:
        print(f"  mismatch: {line}")
    if result["first_difference"]:
        print(f"  first differing layer: {result['first_difference']}")
    return 0 if ok else 1


def _board_verb(args, model: ir.Model, out: Path) -> int:
    from .fpga import flow, synth_cli
    from .host.protocol import HostError

    cfg = build_config(args, model)
    if cfg.weights == "dram" and not cfg.band_words:
        raise UsageError(f"{'the plan puts' if args.onchip_kbits else '--weights dram puts'} the weights alone in "
                         f"DRAM, and on a board the host loads them through the maps' write port: add --maps dram "
                         "(docs/dram.md)")
    try:
        if args.verb == "synth":
            flow.check_out(synth_cli.synth_out(args, out))  # before the memory plan
        else:
            args.baud = args.baud or synth_cli.default_baud(args.board)
        if args.onchip_kbits is None and not _chosen_by_hand(args) and args.board:
            target = synth_cli.synth_config(args) if args.verb == "synth" else flow.SynthConfig(args.board)
            budget = flow.dram_budget(model, cfg, target)
            if budget is not None:  # the plan `hwgen synth` makes for this board, and so `hwgen run`
                cfg = _planned(args, model, *budget)
        if args.verb == "synth":
            return synth_cli.main(args, model, cfg, out)
        return _run_on_board(args, model, cfg)
    except (flow.SynthError, flow.FitError, HostError) as e:
        raise UsageError(str(e)) from None


def _board_images(path: Path, model: ir.Model) -> np.ndarray:
    """The images of ``hwgen run --images``: one [C, H, W] image or [K, C, H, W]."""
    images = _read_images(path, model, "--images", single=True)
    if len(images) == 0:
        raise UsageError(f"--images must hold at least one image, found none in {path}")
    return _in_range(images, model, "--images")


def _run_on_board(args, model: ir.Model, cfg: BuildConfig) -> int:
    from .host.serial_runner import run_board
    from .host.protocol import Link

    images = _board_images(args.images, model)[:args.count]
    link = Link.of(cfg.lower(model))
    print(f"sending {len(images)} images to {args.port} at {args.baud} baud "
          f"({len(link.frame(images[0]))} bytes each, {link.answer_bytes} back)", flush=True)
    result = run_board(model, link, images, args.port, args.baud, args.timeout, args.clock_mhz * 1e6,
                       lambda message: print(f"  {message}", flush=True))
    t = result["per_image"]
    print(f"  per image: {t['link_s'] * 1e3:.1f} ms on the link against {t['compute_s'] * 1e3:.1f} ms of compute "
          f"at {args.clock_mhz:g} MHz ({t['bound']}-bound)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "run_result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"  {len(images) - result['mismatches']}/{len(images)} images equal to the reference")
    for line in result["mismatch_detail"]:
        print(f"  mismatch: {line}")
    return 0 if not result["mismatches"] else 1


def _report(args) -> int:
    from .build import report_html

    print(f"report: {report_html.write(str(args.dir))}")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .build.report_html import ReportError

    try:
        return _report(args) if args.verb == "report" else run(args)
    except (ir.IRError, UnsupportedError, UsageError, mapping.ConfigError, ReportError, outdir.OutDirError,
            zoo.ZooError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (hwgen synth): outputs were already cleaned up
        print(f"interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return 130
