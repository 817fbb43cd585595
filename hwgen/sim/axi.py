"""The AXI4 DMA pair (rtl/axi.py) in Verilator against cocotbext-axi's AxiRam as the DRAM: a case of write
commands with their data and read commands goes in, what the RAM holds and what came back goes out, so the
host compares them with what it wrote (tests/test_axi.py)."""
from __future__ import annotations

import json
from pathlib import Path

from amaranth.back import verilog

from ..rtl.axi import DmaPair
from .runner import VERILATOR_ARGS, build_model, public_signals, run_testbench, verilator_runner

AXI_TOP = "hwgen_axi_pair"
TESTBENCH = "sim.tb_axi"


def simulate_axi(cases: list[dict], out: Path, *, addr_width: int, data_width: int,
                 verbose: bool = False) -> list[dict]:
    """Run each case ({"writes": [[addr, [words]]...], "reads": [[addr, beats]...], "stall", "seed",
    "timeout_cycles"}) on one Verilator model of a DMA pair of this width, in folder ``out``; returns what
    the testbench saw in each."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{AXI_TOP}.v").write_text(verilog.convert(DmaPair(addr_width, data_width), name=AXI_TOP,
                                                       emit_src=False))
    control = public_signals(out / "axi_public.vlt", AXI_TOP, ("*",))
    runner = verilator_runner()
    log = None if verbose else out / "verilator_build.log"
    build_model(runner, sources=[control, out / f"{AXI_TOP}.v"], hdl_toplevel=AXI_TOP, build_dir=out / "sim_build",
                build_args=VERILATOR_ARGS, timescale=("1ns", "1ps"), log_file=log)
    seen = []
    for k, case in enumerate(cases):
        case_file, result_file = out / f"axi_case{k}.json", out / f"axi_result{k}.json"
        case_file.write_text(json.dumps({**case, "addr_width": addr_width, "data_width": data_width}))
        seen.append(run_testbench(runner, result_file, hdl_toplevel=AXI_TOP, test_module=TESTBENCH,
                                  build_dir=out / "sim_build", test_dir=out,
                                  extra_env={"HWGEN_CASE": str(case_file), "HWGEN_RESULT": str(result_file)},
                                  log_file=None if verbose else out / f"sim{k}.log"))
    return seen
