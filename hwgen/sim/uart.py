"""The UART link's Verilog in Verilator (cocotb, sim/tb_uart.py): the host's frames go in bit by bit on
``rx``, the answers are read bit by bit from ``tx`` and parsed by the host code (``hwgen.host.protocol``). The
Verilator build and run are runner.py's; only the sources, ports and testbench differ."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..build.generate import BuildConfig, images as rom_images
from ..contract.ir import Model
from ..rtl.extmem import MEM_VERILOG
from ..rtl.uart import UARTLink
from ..compile.dram import MODEL_LATENCY
from ..compile.units import dram_map
from .runner import VERILATOR_ARGS, build_model, public_signals, run_testbench, verilator_runner
from .stream import DRAM_PORTS
from ..host.protocol import Link, check

UART_TOP = "hwgen_uart"
TESTBENCH = "sim.tb_uart"
PUBLIC_PORTS = ("clk", "rst", "rx", "tx")


def simulate_uart(model: Model, build_cfg: BuildConfig, images: np.ndarray, out: Path, *, clk_hz: int = 8_000_000,
                  baud: int = 1_000_000, verbose: bool = False) -> dict:
    """Runs ``images`` through the UART link of ``model`` in folder ``out``; returns what it saw and the
    mismatches."""
    from amaranth.back import verilog

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    prog = build_cfg.lower(model)
    link_rtl = UARTLink(prog, clk_hz, baud)
    files = rom_images(prog)  # the Verilog is the link's, below, with the top inside
    files["hwgen_mem.v"] = MEM_VERILOG
    files[f"{UART_TOP}.v"] = verilog.convert(link_rtl, name=UART_TOP, emit_src=False)
    for name, text in files.items():
        (out / name).write_text(text)
    link = Link.of(prog)
    case, result_file = out / "uart_case.json", out / "uart_outputs.json"
    content = {"frames": [link.frame(img).hex() for img in images], "answer_bytes": link.answer_bytes,
               "divisor": link_rtl.divisor}
    if link.weights is not None:  # the DRAM starts empty: the weights frame goes first, over the line
        where = dram_map(prog)
        content |= {"weights": link.weights.hex(),
                    "dram": {"image": None, "data_bits": prog.cap.dram_data_bits, "latency": MODEL_LATENCY,
                             "pause": 0, "writes": True, "size": where.end}}
    case.write_text(json.dumps(content))
    control = public_signals(out / "uart_public.vlt", UART_TOP, PUBLIC_PORTS + (DRAM_PORTS if link.weights else ()))
    runner = verilator_runner()
    build_model(runner, sources=[control, out / "hwgen_mem.v", out / f"{UART_TOP}.v"],
                hdl_toplevel=UART_TOP, build_dir=out / "sim_build", build_args=VERILATOR_ARGS,
                timescale=("1ns", "1ps"), log_file=None if verbose else out / "verilator_build.log")
    seen = run_testbench(runner, result_file, hdl_toplevel=UART_TOP, test_module=TESTBENCH,
                         build_dir=out / "sim_build", test_dir=out,
                         extra_env={"HWGEN_CASE": str(case), "HWGEN_RESULT": str(result_file),
                                    "COCOTB_REWRITE_ASSERTION_FILES": "tb_uart.py"},
                         log_file=None if verbose else out / "sim.log")
    answers = [bytes.fromhex(a) for a in seen["answers"]]
    parsed = [link.parse(a) for a in answers]
    outputs = [values for values, _ in parsed]
    return {"images": len(images), "answers": len(answers), "outputs": outputs,
            "cycles": [n for _, n in parsed], "mismatches": check(model, images[:len(outputs)], outputs),
            "weights_answer": seen.get("weights_answer")}
