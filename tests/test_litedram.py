"""The memory tier's SDRAM controller: LiteDRAM's core generates from PyPI for both ULX3S SDRAM chips with
the native port the accelerator's bridge expects, and a small DRAM design on the ULX3S-85F (the board
design `hwgen synth` builds: the UART link, the accelerator, the bridge and the core) synthesizes with
Yosys."""
import json
import random

import pytest
from amaranth.sim import Simulator

from hwgen.build.generate import BuildConfig, generate
from hwgen.fpga import flow
from hwgen.fpga.fit import dsp_by_unit, yosys_counts
from hwgen.fpga.litedram import (CDELAY_CYCLES, SDRAM_CHIPS, SDRAM_PINS, USER_PORT, LiteDramError, SdramConfig,
                                 generate_core, init_program)
from hwgen.rtl.csr_init import CsrSequencer, check_program

DEVICE = "LFE5U-85F-6BG381C"


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    return generate_core(SdramConfig(DEVICE), tmp_path_factory.mktemp("ld") / "core")


@pytest.mark.parametrize("chip", sorted(SDRAM_CHIPS))
def test_the_core_has_a_native_port_over_the_whole_chip(chip, core, tmp_path):
    c = core if chip == "IS42S16160" else generate_core(SdramConfig(DEVICE, chip), tmp_path / "core")
    assert c.port_widths()[1] == 16 and c.bytes == SDRAM_CHIPS[chip]  # 16-bit words over the whole chip
    for name in ("cmd_we", "wdata_we", "rdata_valid", "wdata_ready"):
        assert f"{USER_PORT}_{name}" in c.ports, name
    assert c.ports["sdram_dq"][1] == 16 and c.ports["init_done"] == ("output", 1)
    assert set(SDRAM_PINS) <= set(c.ports)


def test_an_unknown_chip_is_refused(tmp_path):
    with pytest.raises(LiteDramError, match="SDRAM chip must be one of IS42S16160, AS4C32M16, found 'MT48LC'"):
        generate_core(SdramConfig(DEVICE, "MT48LC"), tmp_path / "core")


def test_a_dram_design_on_the_ulx3s_synthesizes(tiny, tmp_path):
    """What `hwgen synth --board ulx3s-85f` builds for a design with the maps in DRAM, up to Yosys: the
    core's I/O registers and the SDRAM pins are in, and the only multipliers are the requant units'."""
    cfg = flow.SynthConfig(board="ulx3s-85f", baud=3_000_000)
    build = BuildConfig(2, 4, 2, weights="dram", band_words=32)
    part, _, family, platform, clk, pll = flow.target(cfg)
    prog = build.lower(tiny)
    core = flow._sdram_core(prog, cfg, family, platform, clk, tmp_path / "litedram")
    flow._plan(prog, family, platform, clk, pll, cfg, generate(tiny, build, prog=prog), core).extract(tmp_path)
    commands = flow.build_commands(json.loads((tmp_path / f"build_{flow.NAME}.json").read_text())["commands"])
    assert commands[0][0] == "yosys"
    flow.run_stage("yosys", commands[0], tmp_path, lambda message: None)
    counts = yosys_counts(tmp_path / f"{flow.NAME}.stat.json", family)
    cells = counts["cells"]
    ports = json.loads((tmp_path / f"{flow.NAME}.json").read_text())["modules"][flow.NAME]["ports"]
    sdram = {name.split("__")[1]: (p["direction"], len(p["bits"])) for name, p in ports.items()
             if name.startswith("sdram_0__")}
    assert sdram == {"clk": ("output", 1), "a": ("output", 13), "ba": ("output", 2), "ras": ("output", 1),
                     "cas": ("output", 1), "we": ("output", 1), "cs": ("output", 1), "clk_en": ("output", 1),
                     "dqm": ("output", 2), "dq": ("inout", 16)}  # the board's pins, straight from the core
    assert cells["TRELLIS_IO"] >= 16 and cells["ODDRX1F"] == 1  # the core's dq buffers; the SDRAM's clock
    assert counts["bram"] > 0
    assert set(dsp_by_unit(tmp_path / f"{flow.NAME}.json", flow.NAME, family.dsp_cells)) <= {"requant"}


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
