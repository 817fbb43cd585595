"""Synthesis targets: FPGA parts (capacities), boards (amaranth-boards platforms), and the design that
puts the accelerator on them (the UART link, a clock from the board's oscillator or a PLL)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from amaranth import ClockDomain, Module, Signal
from amaranth.build import Attrs, Clock, Pins, Resource, Subsignal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer

from ..compile.lower import Program
from ..rtl.uart import UARTLink
from . import ecp5, ice40
from .family import Family
from .litedram import Core, attach_sdram

FAMILIES = {f.name: f for f in (ecp5.FAMILY, ice40.FAMILY)}  # built here; xilinx and intel: build plans only


@dataclass(frozen=True)
class Part:
    """Capacities as nextpnr's ``--report`` lists them (``available``): LUT4 = TRELLIS_COMB / ICESTORM_LC,
    block RAMs (DP16KD, 18 Kbit; SB_RAM40_4K, 4 Kbit) and 18x18 multipliers (MULT18X18D; SB_MAC16)."""
    name: str
    family: Family
    lut: int = 0
    ff: int = 0
    bram: int = 0
    dsp: int = 0
    package: str = ""
    speed: str = ""


# ECP5: read from nextpnr-ecp5 0.11 --report on each die; the 12F is sold as the 25F die limited to the
# datasheet's 12K LUTs, 32 EBR (Lattice DS1044, table 1.1), which nextpnr does not enforce.
# iCE40: from nextpnr-ice40 --report.
PARTS = {p.name: p for p in [
    Part("LFE5U-12F", ecp5.FAMILY, 12096, 12096, 32, 28, "BG381", "6"),
    Part("LFE5U-25F", ecp5.FAMILY, 24288, 24288, 56, 28, "BG381", "6"),
    Part("LFE5U-45F", ecp5.FAMILY, 43848, 43848, 108, 72, "BG381", "6"),
    Part("LFE5U-85F", ecp5.FAMILY, 83640, 83640, 208, 156, "BG381", "6"),
    Part("iCE40UP5K", ice40.FAMILY, 5280, 5280, 30, 8, "SG48"),
    Part("iCE40HX8K", ice40.FAMILY, 7680, 7680, 32, 0, "CT256"),
    Part("iCE40HX1K", ice40.FAMILY, 1280, 1280, 16, 0, "VQ100"),
]}


@dataclass(frozen=True)
class Board:
    name: str
    module: str  # in amaranth_boards
    platform: str
    part: str  # a key of PARTS, or the vendor's device name
    family: str  # a key of FAMILIES, or xilinx | intel
    baud: int = 115200  # the UART's default: the highest rate the board's USB bridge takes, where known


FT231X_BAUD = 3_000_000  # the ULX3S's USB-serial bridge (FTDI FT231X datasheet: up to 3 Mbaud)

BOARDS = {b.name: b for b in [
    Board("ulx3s-12f", "ulx3s", "ULX3S_12F_Platform", "LFE5U-12F", "ecp5", FT231X_BAUD),
    Board("ulx3s-25f", "ulx3s", "ULX3S_25F_Platform", "LFE5U-25F", "ecp5", FT231X_BAUD),
    Board("ulx3s-45f", "ulx3s", "ULX3S_45F_Platform", "LFE5U-45F", "ecp5", FT231X_BAUD),
    Board("ulx3s-85f", "ulx3s", "ULX3S_85F_Platform", "LFE5U-85F", "ecp5", FT231X_BAUD),
    Board("icebreaker", "icebreaker", "ICEBreakerPlatform", "iCE40UP5K", "ice40"),
    Board("arty-a7-35", "arty_a7", "ArtyA7_35Platform", "xc7a35ti", "xilinx"),
    Board("arty-a7-100", "arty_a7", "ArtyA7_100Platform", "xc7a100ti", "xilinx"),
    Board("de10-nano", "de10_nano", "DE10NanoPlatform", "5CSEBA6", "intel"),
    Board("de10-lite", "de10_lite", "DE10LitePlatform", "10M50DA", "intel"),
]}


def board_platform(board: Board):
    return getattr(importlib.import_module(f"amaranth_boards.{board.module}"), board.platform)()


def device_platform(part: Part, clk_hz: int):
    """A platform for a bare part: a clock input and a UART. The pins are placeholders; the build drops
    their locations and lets nextpnr choose (the user's own board file fixes them)."""
    pins, attrs = part.family.pins[part.package], Attrs(**part.family.io_attrs)

    class DevicePlatform(part.family.platform):
        device, package, speed = part.name, part.package, part.speed
        default_clk = "clk"
        resources = [Resource("clk", 0, Pins(pins[0], dir="i"), Clock(clk_hz), attrs),
                     Resource("uart", 0, Subsignal("rx", Pins(pins[1], dir="i")),
                              Subsignal("tx", Pins(pins[2], dir="o")), attrs)]
        connectors = []

    return DevicePlatform()


class OnBoard(wiring.Component):
    """The accelerator's UART link on a platform: ``sync`` runs at ``clk_hz``, straight from the platform's
    default clock, or from the PLL that ``pll(clk_in, locked)`` makes (a family's ``pll_instance`` with its
    parameters); reset is held until the PLL locks.

    A design with the maps in DRAM runs on the board's SDRAM through LiteDRAM's ``core``
    (``litedram.attach_sdram``), in the same clock domain. The UART's line reads idle until the SDRAM is
    initialised, and LEDs 0 and 1 show ``init_done`` and an error (the core's bring-up or the DMA's AXI)."""

    def __init__(self, prog: Program, clk_hz: int, baud: int, pll: Callable | None = None, core: Core | None = None):
        if bool(prog.cap.weight_cache) != (core is not None):
            raise ValueError("expected a LiteDRAM core exactly when the weights are in DRAM, found "
                             f"{'a core' if core is not None else 'none'} for weights in "
                             f"{'DRAM' if prog.cap.weight_cache else 'ROM'}")
        self.prog, self.clk_hz, self.baud, self.pll, self.core = prog, clk_hz, baud, pll, core
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        link = m.submodules.link = UARTLink(self.prog, self.clk_hz, self.baud)
        uart = platform.request("uart", 0, dir="-")
        rx = m.submodules.rx_buf = io.Buffer("i", uart.rx)
        tx = m.submodules.tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += tx.o.eq(link.tx)
        if self.core is None:
            m.d.comb += link.rx.eq(rx.i)
        else:
            done, error = attach_sdram(m, platform, self.core, link.m_axi)
            m.d.comb += link.rx.eq(rx.i | ~done)
            for k, status in enumerate((done, error | link.dram_error)):
                led = m.submodules[f"led{k}"] = io.Buffer("o", platform.request("led", k, dir="-"))
                m.d.comb += led.o.eq(status)
        if self.pll is not None:
            clk_in = m.submodules.clk_buf = io.Buffer("i", platform.request(platform.default_clk, 0, dir="-"))
            locked = Signal()
            m.domains.sync = ClockDomain("sync")
            m.submodules.pll = self.pll(clk_in.i, locked)
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return m
