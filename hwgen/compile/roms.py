"""ROM images of a lowered program: schedule entries, PE weight words, requant words, layer descriptors and
the net word, each packed through its layout in ``contract`` (the layouts the RTL reads; their widths come
from the hardware capacity, so one compiled model reads the images of any program fitted into it)."""
from __future__ import annotations

import numpy as np

from ..contract import mapping
from ..contract.encoding import lane_weights
from ..contract.hardware import (Widths, descriptor_layout, net_layout, packer, pe_word_layout, requant_layout,
                                 schedule_layout, widths)
from .lower import RESULT_BUF, Program, weight_planes


def schedule_rom(prog: Program, wd: Widths) -> list[int]:
    """One ``contract.schedule_layout`` entry per step."""
    entry, words = packer(schedule_layout(wd)), []
    for l in prog.layers:
        hw_in = l.in_shape[1] * l.in_shape[2]
        for j in l.schedule.block:
            for ky in range(l.kh):
                for kx in range(l.kw):
                    dy, dx = ky - l.pad, kx - l.pad
                    off = int(j) * hw_in + dy * l.in_shape[2] + dx
                    words.append(entry({"off": off, "dy": dy, "dx": dx}))
    return words


def pe_roms(prog: Program, wd: Widths) -> list[list[int]]:
    """Per PE, one ``contract.pe_word_layout`` word per step: the lane weights of its group at that kernel
    position (ternary codes, or int8 for the mac kind) and its local output channel. Idle slots hold zero
    weights (they add nothing)."""
    L, roms = prog.lanes, [[] for _ in range(prog.pe)]
    word = packer(pe_word_layout(prog, wd))
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
                            lanes = codes[o, j * L:(j + 1) * L, ky, kx]
                            roms[p].append(word({"weights": lanes, "lo": o // prog.pe}))
    return roms


def rq_roms(prog: Program) -> list[list[int]]:
    """Per PE, one ``contract.requant_layout`` word per local output channel of each layer (padded channels
    0)."""
    word, roms = packer(requant_layout(prog)), [[] for _ in range(prog.pe)]
    for l in prog.layers:
        for lo in range(l.locals(prog.pe)):
            for p in range(prog.pe):
                o = lo * prog.pe + p
                if o >= l.out_shape[0]:
                    roms[p].append(0)
                    continue
                roms[p].append(word({"mul": l.mul[o], "bias": l.bias[o], "shift": l.shift[o]}))
    return roms


def descriptors(prog: Program) -> list[dict]:
    """Layer descriptors for the controller, as ``contract.descriptor_layout`` names their fields."""
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


def descriptor_words(prog: Program) -> list[int]:
    """The descriptor ROM image: one packed ``contract.descriptor_layout`` word per layer. Descriptors are an
    image, not Verilog, so the Verilog depends only on the hardware sizes (``prog.cap``)."""
    word = packer(descriptor_layout(prog, widths(prog)))
    return [word(d) for d in descriptors(prog)]


def net_word(prog: Program) -> int:
    """The ``contract.net_layout`` word of the network's stream sizes."""
    return packer(net_layout(prog))({"in_beats": prog.input_beats, "out_c": prog.layers[-1].out_shape[0],
                                     "out_pix": prog.layers[-1].n_pix})
