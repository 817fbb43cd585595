"""Read-only memories whose contents live in ``$readmemh`` image files, not in the Verilog.

Conversion time and Verilog size then do not grow with the weights (DESIGN.md §7): the generated netlist
instantiates one small hand-written module, ``hwgen_rom``, with the image file name as a parameter.
"""
from __future__ import annotations

from amaranth import ClockSignal, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

ROM_MODULE = "hwgen_rom"

ROM_VERILOG = f"""\
// Synchronous ROM initialised from a hex image (one word per line); read latency one cycle.
module {ROM_MODULE} #(
    parameter WIDTH = 1,
    parameter DEPTH = 1,
    parameter ADDR_WIDTH = 1,
    parameter INIT_FILE = ""
) (
    input  wire                  clk,
    input  wire [ADDR_WIDTH-1:0] addr,
    output reg  [WIDTH-1:0]      data
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    initial $readmemh(INIT_FILE, mem);
    always @(posedge clk) data <= mem[addr];
endmodule
"""


def addr_width(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


class ImageROM(wiring.Component):
    """Ports: ``addr`` (in), ``data`` (out, valid the cycle after ``addr``). Latency 1."""

    def __init__(self, width: int, depth: int, init_file: str):
        if width < 1 or depth < 1:
            raise ValueError(f"ROM width and depth must be >= 1, found {width} x {depth}")
        if "/" in init_file or not init_file.endswith(".hex"):
            raise ValueError(f"ROM image must be a bare .hex file name, found {init_file!r}")
        self.width, self.depth, self.init_file = width, depth, init_file
        super().__init__({"addr": In(addr_width(depth)), "data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = Instance(
            ROM_MODULE, p_WIDTH=self.width, p_DEPTH=self.depth, p_ADDR_WIDTH=addr_width(self.depth),
            p_INIT_FILE=self.init_file, i_clk=ClockSignal(), i_addr=self.addr, o_data=self.data)
        return m


def hex_image(words: list[int], width: int) -> str:
    """The text of a ``$readmemh`` image: one zero-padded word per line."""
    digits = max(1, -(-width // 4))
    limit = 1 << width
    for i, w in enumerate(words):
        if not 0 <= w < limit:
            raise ValueError(f"ROM word {i} is {w}, outside {width} unsigned bits")
    return "".join(f"{w:0{digits}x}\n" for w in words) or "0\n"
