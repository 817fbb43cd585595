"""The SDRAM controller of the memory tier (docs/dram.md): LiteDRAM's standalone core, generated from PyPI's
``litedram`` with one native user port, for the SDRAM of a board, with the accelerator's AXI4 master on it
through ``rtl/native.AxiToNative`` (LiteDRAM's own AXI port limited the ECP5 build to 70 MHz).

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

from amaranth import ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In

from ..rtl.csr_init import CsrSequencer
from ..rtl.native import AxiToNative

CORE_TOP = "litedram_core"
USER_PORT = "user_port_native_0"  # the name litedram.gen gives the first user port

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
    data_width: int = 16  # of the user port (16: the chip's width, one beat per SDRAM word)

    def generator_config(self) -> dict:
        if self.chip not in SDRAM_CHIPS:
            raise LiteDramError(f"SDRAM chip must be one of {', '.join(SDRAM_CHIPS)}, found {self.chip!r}")
        # without a CPU the core leaves the SDRAM's initialisation to its Wishbone port (wb_ctrl)
        # cmd_buffer_buffered: a register after each bank machine's command FIFO. Without it the ResNet-18
        # build's critical path (64.5 MHz) ran from one bank machine's command through the multiplexer's
        # choice into another's FIFO level.
        return {"cpu": "None", "device": self.device, "memtype": "SDR", "sdram_phy": "GENSDRPHY",
                "cmd_buffer_buffered": True,
                "sdram_module": self.chip, "sdram_module_nb": 2, "sdram_rank_nb": 1,
                "input_clk_freq": self.input_clk_hz, "sys_clk_freq": self.sys_clk_hz,
                "user_ports": {USER_PORT[len("user_port_"):]: {"type": "native", "data_width": self.data_width}}}


@dataclass(frozen=True)
class Core:
    verilog: Path
    ports: dict[str, tuple[str, int]]  # name -> (input | output, width)

    def port_widths(self) -> tuple[int, int]:
        """(word address width, data width) of the native user port."""
        return self.ports[f"{USER_PORT}_cmd_addr"][1], self.ports[f"{USER_PORT}_rdata_data"][1]

    @property
    def bytes(self) -> int:
        """The SDRAM's size, as the user port addresses it."""
        words, width = self.port_widths()
        return (1 << words) * width // 8


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


def _user_ports(m: Module, axi, core: Core) -> tuple[dict, Signal]:
    """The Instance ports of the core's native user port, behind the bridge from the accelerator's master
    ``axi``, and the bridge's ``overrun``."""
    words, width = core.port_widths()
    bridge = m.submodules.axi_to_native = AxiToNative(len(axi.araddr), words, width)
    wiring.connect(m, axi, bridge.axi)
    return {f"{'o' if member.flow == In else 'i'}_{USER_PORT}_{name}": getattr(bridge.native, name)
            for name, member in bridge.native.signature.members.items()}, bridge.overrun


def _control_ports(m: Module, core: Core) -> dict:
    """The core's Wishbone control port, driven by the bring-up sequencer (``init_program``)."""
    seq = m.submodules.sdram_init = CsrSequencer(init_program(core), core.ports["wb_ctrl_adr"][1])
    ports = {f"i_wb_ctrl_{name}": getattr(seq.bus, name) for name in ("cyc", "stb", "we", "adr", "dat_w", "sel")}
    return ports | {"o_wb_ctrl_ack": seq.bus.ack, "i_wb_ctrl_cti": 0, "i_wb_ctrl_bte": 0,
                    "o_wb_ctrl_dat_r": Signal(32, name="wb_ctrl_dat_r"), "o_wb_ctrl_err": Signal(name="wb_ctrl_err")}


# The core's SDRAM pins and the amaranth-boards SDRAMResource's subsignals. The core drives them from its
# own I/O registers (OFS1P3BX, IFS1P3BX, TRELLIS_IO), so they go to the pins raw: no buffer between, and
# active-low as the core makes them.
SDRAM_PINS = {"sdram_a": "a", "sdram_ba": "ba", "sdram_ras_n": "ras", "sdram_cas_n": "cas", "sdram_we_n": "we",
              "sdram_cs_n": "cs", "sdram_cke": "clk_en", "sdram_dm": "dqm", "sdram_dq": "dq"}


def attach_sdram(m: Module, platform, core: Core, axi) -> tuple[Signal, Signal]:
    """The core on a board's ``sdram`` resource, in the ``sync`` domain, with the accelerator's master ``axi``
    on its user port and the bring-up sequencer on its control port. The SDRAM's clock is ``sync`` inverted
    (a DDR output of 0 then 1): the chip samples the core's registered commands and data half a cycle after
    they leave. Returns (init_done, error: the bring-up's, or a read beat the master missed)."""
    pins = platform.request("sdram", 0, dir="-")
    missing = sorted(set(SDRAM_PINS) - set(core.ports))
    if missing:
        raise LiteDramError(f"expected the core to have SDRAM pins {', '.join(SDRAM_PINS)}, found none for "
                            f"{', '.join(missing)}")
    ports = {"i_clk": ClockSignal("sync"), "i_rst": ResetSignal("sync")}
    for name, sub in SDRAM_PINS.items():
        ports[f"{'io' if sub == 'dq' else 'o'}_{name}"] = getattr(pins, sub).io  # dq: the core's TRELLIS_IO
    clock = m.submodules.sdram_clock = io.DDRBuffer("o", pins.clk)
    m.d.comb += [clock.o[0].eq(0), clock.o[1].eq(1)]
    done, error = Signal(name="sdram_init_done"), Signal(name="sdram_init_error")
    user, overrun = _user_ports(m, axi, core)
    ports |= {"o_init_done": done, "o_init_error": error} | user | _control_ports(m, core)
    m.submodules.sdram = Instance(CORE_TOP, **ports)
    return done, error | overrun
