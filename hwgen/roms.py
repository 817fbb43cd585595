"""ROM images of a lowered program: schedule entries, PE weight words, requant words and layer descriptors,
with the field widths they share (derived from the hardware capacity, so one compiled model reads the images
of any program fitted into it)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Shape
from amaranth.lib import data

from . import mapping
from .encoding import REQUANT_MUL_BITS, WEIGHT_BITS, lane_weights, pack_lanes
from .lower import RESULT_BUF, Program, weight_planes


def _twos(value: int, bits: int) -> int:
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise OverflowError(f"{value} does not fit {bits} signed bits")
    return value & ((1 << bits) - 1)


def pack_struct(layout: data.StructLayout, values: dict) -> int:
    """The word of ``layout`` holding ``values``; a value its field cannot hold is refused (Amaranth's
    ``layout.const`` would keep its low bits)."""
    for name, value in values.items():
        shape = Shape.cast(layout[name].shape)
        lo, hi = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed else (0, 1 << shape.width)
        if not lo <= value < hi:
            raise OverflowError(f"field {name}: {value} does not fit {shape!r}")
    return layout.const(values).as_value().value


@dataclass(frozen=True)
class Widths:
    """Field widths of descriptors and schedule entries, derived from the program."""

    dim: int  # signed coordinates within a map and tap offsets (dy, dx)
    addr: int  # buffer addresses
    off: int  # signed schedule offsets
    step: int  # schedule / PE-ROM addresses
    lo: int  # local channel index
    rq: int  # requant ROM addresses
    stride: int  # descriptor stride
    row: int  # descriptor row_step (stride * w_in)


def _signed_bits(magnitude: int) -> int:
    return magnitude.bit_length() + 1


def widths(prog: Program) -> Widths:
    """From the hardware sizes only (``prog.cap``), so that images of any program fitted into the same
    capacity have the same layout. Each width holds every value its field can take within the capacity;
    the ``max`` keeps the layouts of networks whose values fit the map-size widths."""
    c = prog.cap
    addr = max(1, (max(c.buf_depth, c.res_depth) - 1).bit_length())
    dim = max(c.dim.bit_length() + 2, _signed_bits(c.reach))
    # j*H*W + dy*W + dx: the block part is below buf_depth, |dy*W + dx| at most reach * (dim + 1)
    off = max(addr + 2, _signed_bits(c.buf_depth - 1 + c.reach * (c.dim + 1)))
    return Widths(dim=dim, addr=addr, off=off, step=max(1, c.steps.bit_length()),
                  lo=max(1, (c.locals - 1).bit_length()), rq=max(1, c.rq_words.bit_length()),
                  stride=max(dim, c.stride.bit_length()), row=max(addr + 2, (c.stride * c.dim).bit_length()))


def schedule_rom(prog: Program, wd: Widths) -> list[int]:
    """One entry per step: (offset, dy, dx) packed low to high, each field two's complement."""
    words = []
    for l in prog.layers:
        hw_in = l.in_shape[1] * l.in_shape[2]
        for j in l.schedule.block:
            for ky in range(l.kh):
                for kx in range(l.kw):
                    dy, dx = ky - l.pad, kx - l.pad
                    off = int(j) * hw_in + dy * l.in_shape[2] + dx
                    words.append(_twos(off, wd.off) | _twos(dy, wd.dim) << wd.off | _twos(dx, wd.dim) << (wd.off + wd.dim))
    return words


def pe_roms(prog: Program, wd: Widths) -> list[list[int]]:
    """Per PE, one word per step: the L lane weights of its group at that kernel position (ternary codes, or
    int8 for the mac kind: encoding.lane_weights), and its local output channel. Idle slots hold zero
    weights (they add nothing)."""
    L, roms = prog.lanes, [[] for _ in range(prog.pe)]
    bits = WEIGHT_BITS[prog.pe_kind]
    for l in prog.layers:
        c = l.in_shape[0]
        planes = []
        for plane in weight_planes(l.weight, prog.pe_kind):
            codes = np.zeros((l.out_shape[0], mapping.num_blocks(c, L) * L, l.kh, l.kw), np.uint8)
            codes[:, :c] = lane_weights(plane, prog.pe_kind)
            planes.append(codes)
        for r, j in enumerate(l.schedule.block):
            codes = planes[int(l.schedule.plane[r])]
            for p in range(prog.pe):
                o = int(l.schedule.slots[r, p])
                for ky in range(l.kh):
                    for kx in range(l.kw):
                        if o < 0:
                            roms[p].append(0)
                        else:
                            lane_codes = pack_lanes(codes[o, j * L:(j + 1) * L, ky, kx], bits)
                            roms[p].append(lane_codes | (o // prog.pe) << (bits * L))
    return roms


def pe_rom_width(prog: Program, wd: Widths) -> int:
    return WEIGHT_BITS[prog.pe_kind] * prog.lanes + wd.lo


def rq_width(prog: Program) -> int:
    return REQUANT_MUL_BITS + prog.bias_bits + prog.shift_bits


def rq_roms(prog: Program) -> list[list[int]]:
    """Per PE, one word per local output channel of each layer: mul | bias | shift (padded channels 0)."""
    roms = [[] for _ in range(prog.pe)]
    for l in prog.layers:
        for lo in range(l.locals(prog.pe)):
            for p in range(prog.pe):
                o = lo * prog.pe + p
                if o >= l.out_shape[0]:
                    roms[p].append(0)
                    continue
                mul = _twos(int(l.mul[o]), REQUANT_MUL_BITS)
                bias = _twos(int(l.bias[o]), prog.bias_bits)
                roms[p].append(mul | bias << REQUANT_MUL_BITS
                               | int(l.shift[o]) << (REQUANT_MUL_BITS + prog.bias_bits))
    return roms


def descriptors(prog: Program) -> list[dict]:
    """Layer descriptors for the controller (field names match rtl/controller.py)."""
    out, step, rq = [], 0, 0
    for l in prog.layers:
        _, h_in, w_in = l.in_shape
        to_result = l.out_buf == RESULT_BUF
        out.append(dict(
            in_buf=l.in_buf, out_buf=0 if to_result else l.out_buf, to_result=int(to_result),
            has_res=int(l.res_buf is not None), res_buf=l.res_buf or 0, res_signed=int(l.res_signed),
            max_mode=int(l.max_mode), in_signed=int(l.in_signed), h_in=h_in, w_in=w_in,
            w_out=l.out_shape[2], n_pix=l.n_pix, stride=l.stride, row_step=l.stride * w_in,
            n_steps=l.n_steps, sched_base=step, locals=l.locals(prog.pe),
            lo_per_word=1 if to_result else prog.lanes // prog.pe, rq_base=rq, lo=l.lo, hi=l.hi))
        step += l.n_steps
        rq += l.locals(prog.pe)
    return out
