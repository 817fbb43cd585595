"""What differs between the FPGA families that ``hwgen synth`` builds with the open tools: one :class:`Family`
per family, each defined in its own module (``ecp5.py``, ``ice40.py``) and listed in ``targets.FAMILIES``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from amaranth.build import Platform


@dataclass(frozen=True, eq=False)  # one object per family, compared and hashed by identity (it holds dicts)
class Family:
    name: str  # as parts, boards and synth_report.json name it: "ecp5"
    title: str  # as messages name it: "ECP5"

    # block RAM, for the fit estimate before synthesis
    bram_shapes: tuple[tuple[int, int], ...]  # (width, depth) configurations of one block RAM
    bram_byte: int  # write-enable granularity of the block RAM's data bits
    lutram_max_depth: int  # Yosys maps memories this shallow to distributed RAM (0: none)

    # Yosys' cells of the synthesized netlist, for the fit check before place and route
    lut_cells: dict[str, int]  # logic cells and the LUT4 each one counts as
    ff_cells: tuple[str, ...]
    bram_cells: tuple[str, ...]
    dsp_cells: tuple[str, ...]

    # nextpnr's ``--report`` utilization names of LUT4, flip-flops, block RAMs and DSPs
    bels: dict[str, str]  # keys: lut, ff, bram, dsp
    # one logic cell holds a LUT4 and a flip-flop and nextpnr counts cells: LUT4 and FF are Yosys' counts
    lut_ff_share_cell: bool

    # the open flow, as the amaranth-boards build plan runs it (each tool from PyPI as yowasp-<tool>)
    place_and_route: str  # "nextpnr-ecp5"
    packer: str  # "ecppack"; PyPI ships it with the place and route tool
    bitstream: str  # suffix of the packer's output: "bit"
    constraints: str  # suffix of the pin constraints file, also in nextpnr's --<suffix>-allow-unconstrained
    pin_location: str  # how a line of the constraints file that places a pin begins

    # a bare part (``--device``): the vendor platform of Amaranth, placeholder pins (clock, UART rx, tx)
    # per package and their I/O attributes; the build drops the locations, nextpnr places the I/O
    platform: type[Platform]
    pins: dict[str, tuple[str, str, str]]
    io_attrs: dict[str, str]

    # the accelerator clock without --clock-mhz: a bare part's, and a board's when the family has a PLL
    # (without one a board runs at its oscillator's frequency)
    default_clock_hz: int
    # (input Hz, output Hz) -> (PLL parameters, the Hz they give); raises ValueError when none fits
    pll: Callable[[float, float], tuple[dict, float]] | None = None
    # (parameters, input clock, lock signal) -> the PLL instance driving the ``sync`` clock
    pll_instance: Callable | None = None
