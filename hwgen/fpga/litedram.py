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

from amaranth import ClockDomain, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..rtl.axi import DmaPair
from ..rtl.csr_init import CsrSequencer

CORE_TOP = "litedram_core"
AXI_PORT = "user_port_axi_0"  # the name litedram.gen gives the first user port

# The SDRAM chips of the boards hwgen targets, as LiteDRAM's module classes name them, and their size. The
# ULX3S carries one of two 16-bit chips, depending on its revision.
SDRAM_CHIPS = {"IS42S16160": 32 << 20, "AS4C32M16": 64 << 20}


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


# The BIOS's cdelay(n) spins n loop iterations of a few CPU cycles each; without the CPU each counts as
# this many controller cycles, which errs long (the SDRAM's waits are minimums).
CDELAY_CYCLES = 8


def _csr_addresses(build: Path) -> dict[str, int]:
    rows = [line.split(",") for line in (build / "csr.csv").read_text().splitlines()]
    return {r[1]: int(r[2], 16) for r in rows if r[0] == "csr_register"}


def init_program(core: Core) -> list[tuple[int, int, int]]:
    """The SDRAM's bring-up as CSR writes (byte address, value, controller cycles to wait after), in the
    order LiteX's BIOS runs it (``sdram_init``): software control of the DFI, ``init_done`` and
    ``init_error`` cleared, the generated ``init_sequence`` of the core's own header, hardware control,
    ``init_done`` set. A statement of the header this does not know is refused, never skipped."""
    build = core.verilog.parent.parent
    header = (build / "software" / "include" / "generated" / "sdram_phy.h").read_text()
    csr = _csr_addresses(build)
    defines = {n: int(v, 0) for n, v in re.findall(r"#define\s+(DFII_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", header)}

    def value(expr: str) -> int:
        total = 0
        for term in expr.split("|"):
            term = term.strip()
            if term not in defines and not re.fullmatch(r"0x[0-9a-fA-F]+|\d+", term):
                raise LiteDramError(f"sdram_phy.h: expected a number or a DFII_ constant, found {term!r}")
            total |= defines[term] if term in defines else int(term, 0)
        return total

    software = defines["DFII_CONTROL_CKE"] | defines["DFII_CONTROL_ODT"] | defines["DFII_CONTROL_RESET_N"]
    program = [[csr["sdram_dfii_control"], software, 0], [csr["ddrctrl_init_done"], 0, 0],
               [csr["ddrctrl_init_error"], 0, 0]]
    body = re.search(r"static inline void init_sequence\(void\)\s*\{(.*?)\n\}", header, re.S)
    if body is None:
        raise LiteDramError("sdram_phy.h: expected an init_sequence function, found none")
    for statement in re.sub(r"/\*.*?\*/", "", body[1], flags=re.S).split(";"):
        statement = statement.strip()
        if not statement:
            continue
        if m := re.fullmatch(r"(sdram_\w+)_write\((.*)\)", statement):
            program.append([csr[m[1]], value(m[2]), 0])
        elif m := re.fullmatch(r"command_p0\((.*)\)", statement):
            program += [[csr["sdram_dfii_pi0_command"], value(m[1]), 0], [csr["sdram_dfii_pi0_command_issue"], 1, 0]]
        elif m := re.fullmatch(r"cdelay\((\d+)\)", statement):
            program[-1][2] += int(m[1]) * CDELAY_CYCLES
        else:
            raise LiteDramError(f"sdram_phy.h: init_sequence has a statement hwgen does not know: {statement!r}")
    program += [[csr["sdram_dfii_control"], defines["DFII_CONTROL_SEL"], 0], [csr["ddrctrl_init_done"], 1, 0]]
    return [tuple(step) for step in program]


class DmaOnSdram(wiring.Component):
    """A small DRAM design: the accelerator's AXI4 DMA pair (rtl/axi.py) on the core's user port and the
    bring-up sequencer (rtl/csr_init.py, ``init_program``) on its control port, in the core's clock domain.
    The top's ports are the core's SDRAM pins, oscillator and reset, ``init_done``/``init_error``, and the
    DMA's command and data streams."""

    def __init__(self, core: Core):
        self.core, self.program = core, init_program(core)
        self.dma = DmaPair(*core.axi_widths())
        self.pins = {n: p for n, p in core.ports.items() if not n.startswith((AXI_PORT, "wb_ctrl_"))
                     and n not in ("clk", "rst", "user_clk", "user_rst")}
        members = {n: m for n, m in self.dma.signature.members.items() if n != "m_axi"}
        members |= {f"core_{n}": (In if d == "input" else Out)(w) for n, (d, w) in self.pins.items()}
        super().__init__({"osc": In(1), "osc_rst": In(1), **members})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = self.dma
        m.domains.sync = ClockDomain("sync")
        ports = {"i_clk": self.osc, "i_rst": self.osc_rst, "o_user_clk": ClockSignal("sync"),
                 "o_user_rst": ResetSignal("sync")}
        for name, (direction, _) in self.pins.items():
            ports[f"{'i' if direction == 'input' else 'o'}_{name}"] = getattr(self, f"core_{name}")
        # the AXI signals at the core's widths (its IDs are 4 bits, its arsize/awsize 4): zero-extended
        # from the master, truncated back to it
        axi = self.dma.m_axi
        for name, member in axi.signature.members.items():
            direction, width = self.core.ports[f"{AXI_PORT}_{name}"]
            wire = Signal(width, name=f"core_axi_{name}")
            ours = getattr(axi, name)
            m.d.comb += wire.eq(ours) if member.flow == Out else ours.eq(wire)
            ports[f"{'i' if direction == 'input' else 'o'}_{AXI_PORT}_{name}"] = wire
        seq = m.submodules.init = CsrSequencer(self.program, self.core.ports["wb_ctrl_adr"][1])
        for name in ("cyc", "stb", "we", "adr", "dat_w", "sel"):
            ports[f"i_wb_ctrl_{name}"] = getattr(seq.bus, name)
        ports |= {"o_wb_ctrl_ack": seq.bus.ack, "i_wb_ctrl_cti": 0, "i_wb_ctrl_bte": 0,
                  "o_wb_ctrl_dat_r": Signal(32, name="wb_ctrl_dat_r"), "o_wb_ctrl_err": Signal(name="wb_ctrl_err")}
        m.submodules.core = Instance(CORE_TOP, **ports)
        for outer, inner in [(self.rcmd, self.dma.rcmd), (self.wcmd, self.dma.wcmd), (self.wdata, self.dma.wdata)]:
            wiring.connect(m, wiring.flipped(outer), inner)
        wiring.connect(m, self.dma.rdata, wiring.flipped(self.rdata))
        m.d.comb += [self.r_busy.eq(self.dma.r_busy), self.w_busy.eq(self.dma.w_busy),
                     self.r_error.eq(self.dma.r_error), self.w_error.eq(self.dma.w_error)]
        return m
