"""Lattice iCE40: SB_RAM40_4K block RAMs, SB_MAC16 DSPs, nextpnr-ice40 and icepack; no PLL is generated."""
from __future__ import annotations

from amaranth.vendor import SiliconBluePlatform

from .family import Family

FAMILY = Family(
    name="ice40", title="iCE40",
    bram_shapes=((16, 256), (8, 512), (4, 1024), (2, 2048)), bram_byte=1,  # SB_RAM40_4K, a mask per bit
    lutram_max_depth=0,  # no distributed RAM: a shallow memory is logic
    lut_cells={"SB_LUT4": 1},
    ff_cells=("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFSS", "SB_DFFR", "SB_DFFS", "SB_DFFER", "SB_DFFES",
              "SB_DFFESR", "SB_DFFESS"),
    bram_cells=("SB_RAM40_4K",), dsp_cells=("SB_MAC16",),
    bels={"lut": "ICESTORM_LC", "ff": "ICESTORM_LC", "bram": "ICESTORM_RAM", "dsp": "ICESTORM_DSP"},
    lut_ff_share_cell=True,
    place_and_route="nextpnr-ice40", packer="icepack", bitstream="bin", constraints="pcf", pin_location="set_io",
    platform=SiliconBluePlatform,
    pins={"SG48": ("35", "6", "9"), "CT256": ("J3", "B10", "B12"), "VQ100": ("15", "9", "8")},
    io_attrs={"IO_STANDARD": "SB_LVCMOS"},
    default_clock_hz=12_000_000,
)
