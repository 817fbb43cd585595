"""Memories (and one register) as small hand-written Verilog modules, instantiated from Amaranth.

- ``hwgen_rom``: contents in a ``$readmemh`` image file named by a parameter, so conversion time and
  Verilog size do not grow with the weights (docs/design.md §7);
- ``hwgen_ram``: activation buffers with per-lane write enables and no initial contents (Amaranth writes
  an initial value for every word of a Memory: 9 MB of Verilog for ResNet-18's 224x224 buffers);
- ``hwgen_copy_reg``: a register that Yosys may not merge with an identical one (``keep_hierarchy``), so a
  word broadcast to many PEs can be copied per PE and each copy placed next to its PE (docs/synthesis.md).
"""
from __future__ import annotations

from amaranth import ClockSignal, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..contract.hardware import addr_width, rom_layout

ROM_MODULE = "hwgen_rom"
RAM_MODULE = "hwgen_ram"
COPY_REG_MODULE = "hwgen_copy_reg"

MEM_VERILOG = f"""\
// Synchronous ROM initialised from a hex image; read latency one cycle, or two with OUT_REG = 1.
// With BANKS = 1 the image holds one word per line. A ROM deeper than one block RAM would have a
// multiplexer between its block RAMs and any register after them, so with BANKS > 1 (and OUT_REG) it is
// stored as BANKS words side by side: line r of the image holds words r, r + 2**ROW_BITS, ..., lowest bits
// first (extmem.rom_layout). Each block RAM then feeds only its register, and the bank is selected after.
module {ROM_MODULE} #(
    parameter WIDTH = 1,
    parameter DEPTH = 1,
    parameter ADDR_WIDTH = 1,
    parameter INIT_FILE = "",
    parameter OUT_REG = 0,
    parameter BANKS = 1,
    parameter ROW_BITS = ADDR_WIDTH
) (
    input  wire                  clk,
    input  wire [ADDR_WIDTH-1:0] addr,
    output reg  [WIDTH-1:0]      data
);
    localparam ROWS = BANKS > 1 ? (1 << ROW_BITS) : DEPTH;
    reg [BANKS*WIDTH-1:0] mem [0:ROWS-1];
    reg [BANKS*WIDTH-1:0] row;
    initial $readmemh(INIT_FILE, mem);
    always @(posedge clk) row <= mem[addr[ROW_BITS-1:0]];
    generate
        if (BANKS > 1) begin : banked
            reg [BANKS*WIDTH-1:0] row_q;
            reg [ADDR_WIDTH-1:0] bank_d1, bank_d2;
            integer b;
            always @(posedge clk) begin
                row_q <= row;
                bank_d1 <= addr >> ROW_BITS;
                bank_d2 <= bank_d1;
            end
            always @(*) begin
                data = row_q[WIDTH-1:0];
                for (b = 1; b < BANKS; b = b + 1)
                    if (bank_d2 == b) data = row_q[b*WIDTH +: WIDTH];
            end
        end else if (OUT_REG) begin : out_reg
            always @(posedge clk) data <= row;
        end else begin : no_out_reg
            always @(*) data = row;
        end
    endgenerate
endmodule

// Simple dual-port RAM of LANES lanes per word, a write enable per lane, no initial contents.
// OUT_REG = 1 adds a register after the read (read latency 2): a block RAM's clock-to-output then feeds
// nothing but that register.
// The design never reads (ren high) the address it writes in the same cycle, so the memory is marked
// no_rw_check: otherwise Yosys emulates read-first with a delayed write and a bypass multiplexer after the
// block RAM, which was the critical path on ECP5 (docs/synthesis.md). Simulation stops on such a collision.
module {RAM_MODULE} #(
    parameter LANES = 1,
    parameter LANE_WIDTH = 1,
    parameter DEPTH = 1,
    parameter ADDR_WIDTH = 1,
    parameter OUT_REG = 0
) (
    input  wire                        clk,
    input  wire [ADDR_WIDTH-1:0]       waddr,
    input  wire [LANES*LANE_WIDTH-1:0] wdata,
    input  wire [LANES-1:0]            wen,
    input  wire [ADDR_WIDTH-1:0]       raddr,
    input  wire                        ren,
    output reg  [LANES*LANE_WIDTH-1:0] rdata
);
    (* no_rw_check *) reg [LANES*LANE_WIDTH-1:0] mem [0:DEPTH-1];
    reg [LANES*LANE_WIDTH-1:0] word;
    integer i;
    always @(posedge clk) begin
        for (i = 0; i < LANES; i = i + 1)
            if (wen[i]) mem[waddr][i*LANE_WIDTH +: LANE_WIDTH] <= wdata[i*LANE_WIDTH +: LANE_WIDTH];
        if (ren) word <= mem[raddr];
    end
`ifndef SYNTHESIS
    always @(posedge clk)
        if (ren && wen != 0 && raddr == waddr)
            $fatal(1, "{RAM_MODULE} %m: read and write of address %0d in the same cycle", raddr);
`endif
    generate
        if (OUT_REG) begin : out_reg
            always @(posedge clk) rdata <= word;
        end else begin : no_out_reg
            always @(*) rdata = word;
        end
    endgenerate
endmodule

// One register. Kept as its own hierarchy: Yosys merges identical flip-flops inside a module, which would
// fold the per-PE copies of a broadcast word back into one flip-flop with a chip-wide fan-out.
(* keep_hierarchy *)
module {COPY_REG_MODULE} #(
    parameter WIDTH = 1
) (
    input  wire             clk,
    input  wire [WIDTH-1:0] d,
    output reg  [WIDTH-1:0] q
);
    always @(posedge clk) q <= d;
endmodule
"""


def check_read_latency(read_latency: int) -> None:
    if read_latency not in (1, 2):
        raise ValueError(f"read_latency must be 1 or 2 (2 with an output register), not {read_latency}")


class ImageROM(wiring.Component):
    """Ports: ``addr`` (in), ``data`` (out, valid ``read_latency`` cycles after ``addr``: 1, or 2 with an
    output register)."""

    def __init__(self, width: int, depth: int, init_file: str, read_latency: int = 1):
        if width < 1 or depth < 1:
            raise ValueError(f"ROM width and depth must be >= 1, found {width} x {depth}")
        if "/" in init_file or not init_file.endswith(".hex"):
            raise ValueError(f"ROM image must be a bare .hex file name, found {init_file!r}")
        check_read_latency(read_latency)
        self.width, self.depth, self.init_file, self.read_latency = width, depth, init_file, read_latency
        super().__init__({"addr": In(addr_width(depth)), "data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        banks, row_bits = rom_layout(self.depth, self.read_latency)
        m.submodules.rom = Instance(
            ROM_MODULE, p_WIDTH=self.width, p_DEPTH=self.depth, p_ADDR_WIDTH=addr_width(self.depth),
            p_INIT_FILE=self.init_file, p_OUT_REG=self.read_latency - 1, p_BANKS=banks, p_ROW_BITS=row_bits,
            i_clk=ClockSignal(), i_addr=self.addr, o_data=self.data)
        return m


class LaneRAM(wiring.Component):
    """Ports: ``waddr``, ``wdata``, ``wen`` (one bit per lane); ``raddr``, ``ren``, ``rdata`` (valid
    ``read_latency`` cycles after ``raddr`` with ``ren`` high: 1, or 2 with an output register). Reading
    (``ren`` high) the address written in the same cycle is not allowed: its result is undefined in the
    synthesized memory, and simulation stops on it."""

    def __init__(self, lanes: int, lane_width: int, depth: int, read_latency: int = 1):
        check_read_latency(read_latency)
        self.lanes, self.lane_width, self.depth = lanes, lane_width, max(1, depth)
        self.read_latency = read_latency
        aw = addr_width(self.depth)
        super().__init__({"waddr": In(aw), "wdata": In(lanes * lane_width), "wen": In(lanes),
                          "raddr": In(aw), "ren": In(1, init=1), "rdata": Out(lanes * lane_width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = Instance(
            RAM_MODULE, p_LANES=self.lanes, p_LANE_WIDTH=self.lane_width, p_DEPTH=self.depth,
            p_ADDR_WIDTH=addr_width(self.depth), p_OUT_REG=self.read_latency - 1, i_clk=ClockSignal(),
            i_waddr=self.waddr, i_wdata=self.wdata,
            i_wen=self.wen, i_raddr=self.raddr, i_ren=self.ren, o_rdata=self.rdata)
        return m


class CopyRegister(wiring.Component):
    """Ports: ``d`` (in), ``q`` (out, ``d`` one cycle later). A register that synthesis keeps apart from its
    identical siblings."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({"d": In(width), "q": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.reg = Instance(COPY_REG_MODULE, p_WIDTH=self.width, i_clk=ClockSignal(), i_d=self.d,
                                    o_q=self.q)
        return m


class CacheRAM(wiring.Component):
    """A ROM's read port (``addr``, ``data`` ``read_latency`` cycles later, read while ``ren`` is high) on a
    memory written through ``waddr``, ``wdata`` and ``wen``: the weight cache when weights stream from DRAM
    (rtl/dma.py). The address being written may not be read in the same cycle (``LaneRAM``)."""

    def __init__(self, width: int, depth: int, read_latency: int = 1):
        check_read_latency(read_latency)
        self.width, self.depth, self.read_latency = width, depth, read_latency
        aw = addr_width(depth)
        super().__init__({"addr": In(aw), "data": Out(width), "ren": In(1, init=1),
                          "waddr": In(aw), "wdata": In(width), "wen": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = Instance(
            RAM_MODULE, p_LANES=1, p_LANE_WIDTH=self.width, p_DEPTH=self.depth, p_ADDR_WIDTH=addr_width(self.depth),
            p_OUT_REG=self.read_latency - 1, i_clk=ClockSignal(), i_waddr=self.waddr, i_wdata=self.wdata,
            i_wen=self.wen, i_raddr=self.addr, i_ren=self.ren, o_rdata=self.data)
        return m
