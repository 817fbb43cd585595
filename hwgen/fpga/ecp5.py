"""Lattice ECP5: DP16KD block RAMs, MULT18X18D multipliers, nextpnr-ecp5 and ecppack, and its EHXPLLL."""
from __future__ import annotations

from amaranth import ClockSignal, Instance
from amaranth.vendor import LatticeECP5Platform

from .family import Family


def ecp5_pll(fin_hz: float, fout_hz: float) -> tuple[dict, float]:
    """EHXPLLL dividers for CLKOP fed back to itself: f_pfd = fin/CLKI_DIV in [3.125, 400] MHz,
    f_vco = f_pfd*CLKFB_DIV*CLKOP_DIV in [400, 800] MHz, fout = f_pfd*CLKFB_DIV (the limits of
    project Trellis' ecppll). Returns the parameters and the frequency they give."""
    best = None
    fin = fin_hz / 1e6
    for ref in range(1, 129):
        pfd = fin / ref
        if not 3.125 <= pfd <= 400:
            continue
        for fb in range(1, 81):
            fout = pfd * fb
            for od in range(1, 129):
                if 400 <= fout * od <= 800:  # among equal errors, the VCO nearest the middle of its range
                    key = (round(abs(fout - fout_hz / 1e6), 9), abs(fout * od - 600))
                    if best is None or key < best[0]:
                        best = (key, ref, fb, od, fout)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {fout_hz / 1e6:g} MHz from {fin:g} MHz")
    _, ref, fb, od, fout = best
    return {"CLKI_DIV": ref, "CLKFB_DIV": fb, "CLKOP_DIV": od, "CLKOP_CPHASE": od - 1}, fout * 1e6


def ehxplll(params: dict, clk_in, locked) -> Instance:
    """The EHXPLLL with the parameters of :func:`ecp5_pll`: ``clk_in`` in, the ``sync`` clock out."""
    return Instance(
        "EHXPLLL", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
        p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", **{f"p_{k}": v for k, v in params.items()},
        i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=ClockSignal("sync"), i_CLKFB=ClockSignal("sync"),
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)


FAMILY = Family(
    name="ecp5", title="ECP5",
    # DP16KD: 36 bits wide in pseudo dual-port mode, data bytes of 9 bits
    bram_shapes=((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)), bram_byte=9,
    lutram_max_depth=64,
    lut_cells={"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 2}, ff_cells=("TRELLIS_FF",), bram_cells=("DP16KD",),
    dsp_cells=("MULT18X18D",),
    bels={"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D"},
    lut_ff_share_cell=False,
    place_and_route="nextpnr-ecp5", packer="ecppack", bitstream="bit", constraints="lpf",
    pin_location="LOCATE COMP",
    platform=LatticeECP5Platform, pins={"BG381": ("G2", "M1", "L4")}, io_attrs={"IO_TYPE": "LVCMOS33"},
    default_clock_hz=100_000_000, pll=ecp5_pll, pll_instance=ehxplll,
)
