"""A CSR write sequencer on a Wishbone (classic) master port: it plays a fixed program of (byte address,
value, cycles to wait after) once after reset, then raises ``done``. The memory tier uses it to bring
LiteDRAM's SDRAM out of reset without a CPU (``fpga.litedram.init_program``)."""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

WB_DATA = 32  # LiteDRAM's control port: 32-bit words, word addresses


def wishbone_bus(addr_width: int = 30) -> wiring.Signature:
    return wiring.Signature({"cyc": Out(1), "stb": Out(1), "we": Out(1), "adr": Out(addr_width),
                             "dat_w": Out(WB_DATA), "sel": Out(WB_DATA // 8), "ack": In(1)})


def check_program(program: list[tuple[int, int, int]], addr_width: int = 30) -> None:
    if not program:
        raise ValueError("expected a program of at least one write, found none")
    for addr, value, wait in program:
        if addr % 4 or addr >> 2 >= 1 << addr_width or not 0 <= value < 1 << WB_DATA or wait < 0:
            raise ValueError(f"a step must be a word-aligned address within {addr_width} word bits, a "
                             f"32-bit value and a wait >= 0, found ({addr:#x}, {value:#x}, {wait})")


class CsrSequencer(wiring.Component):
    def __init__(self, program: list[tuple[int, int, int]], addr_width: int = 30):
        check_program(program, addr_width)
        self.program, self.addr_width = program, addr_width
        self.step_layout = data.StructLayout({"adr": addr_width, "value": WB_DATA,
                                              "wait": range(max(w for *_, w in program) + 1)})
        super().__init__({"bus": Out(wishbone_bus(addr_width)), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        steps = [{"adr": a >> 2, "value": v, "wait": w} for a, v, w in self.program]
        rom = m.submodules.rom = Memory(shape=self.step_layout, depth=len(steps), init=steps)
        read = rom.read_port(domain="comb")
        index = Signal(range(len(steps) + 1))
        wait = Signal.like(read.data.wait)
        m.d.comb += [read.addr.eq(index), self.bus.adr.eq(read.data.adr), self.bus.dat_w.eq(read.data.value),
                     self.bus.sel.eq(-1), self.bus.we.eq(1)]
        with m.FSM():
            with m.State("WRITE"):
                m.d.comb += [self.bus.cyc.eq(1), self.bus.stb.eq(1)]
                with m.If(self.bus.ack):
                    m.d.sync += wait.eq(read.data.wait)
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(wait != 0):
                    m.d.sync += wait.eq(wait - 1)
                with m.Elif(index == len(steps) - 1):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += index.eq(index + 1)
                    m.next = "WRITE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
        return m
