"""The SDRAM controller of the memory tier (docs/dram.md): LiteDRAM's standalone core, generated from PyPI's
``litedram`` with one AXI4 user port, for the SDRAM of a board.

``generate_core`` writes the generator's configuration, runs ``python -m litedram.gen`` in a fresh folder
and returns the core's Verilog and its ports, read from the module header, so that the accelerator's side
is sized from what was generated rather than from what was asked for.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CORE_TOP = "litedram_core"
AXI_PORT = "user_port_axi_0"  # the name litedram.gen gives the first user port

# The SDRAM chips of the boards hwgen targets, as LiteDRAM's module classes name them, and their size. The
# ULX3S carries one of two 16-bit chips, depending on its revision.
SDRAM_CHIPS = {"IS42S16160": 32 << 20, "AS4C32M16": 64 << 20}
BOARD_SDRAM = {"ulx3s": ("IS42S16160", "AS4C32M16")}  # the first is the default


class LiteDramError(RuntimeError):
    pass


@dataclass(frozen=True)
class SdramConfig:
    """What the generator is asked for: the part, the chip, the clocks and the user port's data width."""
    device: str  # e.g. LFE5U-85F-6BG381C
    chip: str = "IS42S16160"
    input_clk_hz: float = 25e6  # the board's oscillator
    sys_clk_hz: float = 50e6  # the controller's clock
    data_width: int = 16  # of the AXI user port (16: the chip's width, one beat per SDRAM word)

    def generator_config(self) -> dict:
        if self.chip not in SDRAM_CHIPS:
            raise LiteDramError(f"SDRAM chip must be one of {', '.join(SDRAM_CHIPS)}, found {self.chip!r}")
        # without a CPU the core leaves the SDRAM's initialisation to its Wishbone port (wb_ctrl)
        return {"cpu": "None", "device": self.device, "memtype": "SDR", "sdram_phy": "GENSDRPHY",
                "sdram_module": self.chip, "sdram_module_nb": 2, "sdram_rank_nb": 1,
                "input_clk_freq": self.input_clk_hz, "sys_clk_freq": self.sys_clk_hz,
                "user_ports": {AXI_PORT[len("user_port_"):]: {"type": "axi", "id_width": 4,
                                                              "data_width": self.data_width}}}


@dataclass(frozen=True)
class Core:
    verilog: Path
    ports: dict[str, tuple[str, int]]  # name -> (input | output, width)

    def axi_widths(self) -> tuple[int, int]:
        """(byte address width, data width) of the AXI user port."""
        return self.ports[f"{AXI_PORT}_araddr"][1], self.ports[f"{AXI_PORT}_rdata"][1]


def module_ports(verilog: str, module: str) -> dict[str, tuple[str, int]]:
    header = re.search(rf"module\s+{module}\s*\((.*?)\);", verilog, re.S)
    if header is None:
        raise LiteDramError(f"expected a module {module} in the generated core, found none")
    ports = {}
    for direction, msb, name in re.findall(r"(input|output|inout)\s+wire\s*(?:\[(\d+):0\])?\s*(\w+)", header[1]):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


def generate_core(cfg: SdramConfig, out: Path, timeout_s: int = 300) -> Core:
    """The LiteDRAM core for ``cfg``, generated into ``out`` (which must not exist yet)."""
    out = Path(out)
    out.mkdir(parents=True)
    (out / "litedram.yml").write_text(json.dumps(cfg.generator_config(), indent=1) + "\n")  # JSON is YAML
    run = subprocess.run([sys.executable, "-m", "litedram.gen", "litedram.yml"], cwd=out, capture_output=True,
                         text=True, timeout=timeout_s)
    verilog = out / "build" / "gateware" / f"{CORE_TOP}.v"
    if run.returncode != 0 or not verilog.exists():
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        raise LiteDramError(f"litedram.gen exited with status {run.returncode} and wrote no {verilog.name} "
                            f"(expected litedram and litex from PyPI): {' / '.join(tail)}")
    return Core(verilog, module_ports(verilog.read_text(), CORE_TOP))


def dma_on_sdram(core: Core):
    """A small DRAM design: the accelerator's AXI4 DMA pair (rtl/axi.py) on the core's user port, in the
    core's clock domain. The top's ports are the core's SDRAM pins, oscillator and reset, initialisation
    status and control port, and the DMA's command and data streams."""
    from amaranth import ClockDomain, ClockSignal, Instance, Module, ResetSignal, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from ..rtl.axi import DmaPair

    addr_width, data_width = core.axi_widths()
    pins = {n: p for n, p in core.ports.items()
            if not n.startswith(AXI_PORT) and n not in ("clk", "rst", "user_clk", "user_rst")}

    class DmaOnSdram(wiring.Component):
        def __init__(self):
            self.dma = DmaPair(addr_width, data_width)
            members = {n: m for n, m in self.dma.signature.members.items() if n != "m_axi"}
            members |= {f"core_{n}": (In if d == "input" else Out)(w) for n, (d, w) in pins.items()}
            super().__init__({"osc": In(1), "osc_rst": In(1), **members})

        def elaborate(self, platform):
            m = Module()
            m.submodules.dma = self.dma
            m.domains.sync = ClockDomain("sync")
            ports = {"i_clk": self.osc, "i_rst": self.osc_rst, "o_user_clk": ClockSignal("sync"),
                     "o_user_rst": ResetSignal("sync")}
            for name, (direction, _) in pins.items():
                ports[f"{'i' if direction == 'input' else 'o'}_{name}"] = getattr(self, f"core_{name}")
            # the AXI signals at the core's widths (its IDs are 4 bits, its arsize/awsize 4): zero-extended
            # from the master, truncated back to it
            axi = self.dma.m_axi
            for name, member in axi.signature.members.items():
                direction, width = core.ports[f"{AXI_PORT}_{name}"]
                wire = Signal(width, name=f"core_axi_{name}")
                ours = getattr(axi, name)
                m.d.comb += wire.eq(ours) if member.flow == Out else ours.eq(wire)
                ports[f"{'i' if direction == 'input' else 'o'}_{AXI_PORT}_{name}"] = wire
            m.submodules.core = Instance(CORE_TOP, **ports)
            for outer, inner in [(self.rcmd, self.dma.rcmd), (self.wcmd, self.dma.wcmd), (self.wdata, self.dma.wdata)]:
                wiring.connect(m, wiring.flipped(outer), inner)
            wiring.connect(m, self.dma.rdata, wiring.flipped(self.rdata))
            m.d.comb += [self.r_busy.eq(self.dma.r_busy), self.w_busy.eq(self.dma.w_busy),
                         self.r_error.eq(self.dma.r_error), self.w_error.eq(self.dma.w_error)]
            return m

    return DmaOnSdram()
