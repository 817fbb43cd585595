"""The accelerator top level: input stream -> buffers -> engine (controller + PE array + requant) -> output.

Pipeline of a compute issue: stage 0 the controller presents the activation and PE-ROM addresses; stage 1
the activation word (zeroed outside the map) and the weight words reach the PEs, which read their
accumulator entry; stage 2 the sum is written back. A drain issue: stage 0 accumulator and requant-ROM
reads; stage 1 the product is registered; stage 2 the clamped value is written to the output buffer.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..encoding import REQUANT_MUL_BITS, WEIGHT_BITS
from ..lower import Program
from ..roms import pe_rom_width, rq_width
from .array import PEArray
from .controller import Controller
from .requant import Requant
from .extmem import ImageROM, LaneRAM

CYCLE_COUNTER_BITS = 40


def select(m: Module, index, choices: list, name: str) -> Signal:
    """``choices[index]`` as a case statement: ``word_select`` with a variable index would multiply the
    index by the width, and such ``$mul`` cells blur the multiplier count of the design."""
    out = Signal(len(choices[0]), name=name)
    with m.Switch(index):
        for i, choice in enumerate(choices):
            with m.Case(i):
                m.d.comb += out.eq(choice)
    return out


def pe_image(p: int) -> str:
    return f"pe{p}.hex"


def rq_image(p: int) -> str:
    return f"rq{p}.hex"


NET_IMAGE = "net.hex"


def net_layout(prog: Program) -> data.StructLayout:
    """The one word of ``net.hex``: the stream sizes of the network, so that they are not Verilog constants."""
    cap = prog.cap
    return data.StructLayout({"in_beats": range(cap.buf_depth + 1), "out_c": range(cap.locals * prog.pe + 1),
                              "out_pix": range(cap.res_depth + 1)})


def net_word(prog: Program) -> int:
    return net_layout(prog).const({"in_beats": prog.input_beats, "out_c": prog.layers[-1].out_shape[0],
                                   "out_pix": prog.layers[-1].n_pix}).as_value().value


class Top(wiring.Component):
    """Ports (AXI4-Stream in valid/ready/payload form, beat format in docs/stream.md):

    - ``inp``: payload ``data`` = the L activations of one pixel of one input block (blocks, then pixels
      in raster order), ``last`` (accepted, not required: the top counts beats);
    - ``out``: payload ``data`` = one result value (channels fastest, then pixels; two's complement when
      signed), ``last`` on the final beat of an image; ``valid`` is held, payload stable, until ``ready``;
    - ``cycles``: busy cycles of the engine for the last image;
    - ``layer_done``: pulses when a layer's output is complete in its buffer (for debugging testbenches).

    Images are processed one at a time: the input is accepted whole, the engine runs, the result streams
    out."""

    def __init__(self, prog: Program):
        self.prog = prog
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout({"data": prog.lanes * prog.act_bits, "last": 1}))),
            "out": Out(stream.Signature(data.StructLayout({"data": prog.out_bits, "last": 1}))),
            "cycles": Out(CYCLE_COUNTER_BITS),
            "layer_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        prog = self.prog
        N, L, B = prog.pe, prog.lanes, prog.act_bits
        ctrl = m.submodules.ctrl = Controller(prog)
        wd = ctrl.wd
        cap = prog.cap  # every size below comes from the capacity, never from the network's layers
        array = m.submodules.array = PEArray(N, L, B, prog.acc_bits, cap.locals, prog.tile, prog.pe_kind)
        pe_roms = [ImageROM(pe_rom_width(prog, wd), cap.steps, pe_image(p)) for p in range(N)]
        rq_roms = [ImageROM(rq_width(prog), cap.rq_words, rq_image(p)) for p in range(N)]
        net_rom = m.submodules.net_rom = ImageROM(net_layout(prog).size, 1, NET_IMAGE)
        net = data.View(net_layout(prog), net_rom.data)  # constant after the first clock edge
        rqs = [Requant(prog.acc_bits, prog.bias_bits, prog.shift_bits, prog.clamp_bits, B + 1) for _ in range(N)]
        for p in range(N):
            m.submodules[f"pe_rom{p}"], m.submodules[f"rq_rom{p}"] = pe_roms[p], rq_roms[p]
            m.submodules[f"requant{p}"] = rqs[p]

        desc = ctrl.desc
        bufs = [LaneRAM(L, B, prog.buf_depth) for _ in range(prog.n_bufs)]
        result = LaneRAM(N, prog.out_bits, prog.res_depth)
        for i, b in enumerate(bufs):
            m.submodules[f"buf{i}"] = b
        m.submodules.result = result

        # ---- compute: stage 0 -> 1
        valid1, inb1, t1, bank1 = Signal(), Signal(), Signal.like(ctrl.t), Signal()
        m.d.sync += [valid1.eq(ctrl.issue), inb1.eq(ctrl.inb), t1.eq(ctrl.t), bank1.eq(ctrl.bank)]
        for p in range(N):
            m.d.comb += pe_roms[p].addr.eq(ctrl.step)
        word = Signal(L * B)
        for i, buf in enumerate(bufs):
            with m.If(desc.in_buf == i):
                m.d.comb += word.eq(buf.rdata)
        m.d.comb += [array.valid.eq(valid1), array.t.eq(t1), array.bank.eq(bank1), array.act_signed.eq(desc.in_signed),
                     array.max_mode.eq(desc.max_mode), array.acts.eq(Mux(inb1, word, 0))]
        wbits = WEIGHT_BITS[prog.pe_kind] * L  # the PE ROM word: lane weights, then the local channel
        for p in range(N):
            m.d.comb += [array.codes[p].eq(pe_roms[p].data[:wbits]), array.los[p].eq(pe_roms[p].data[wbits:])]

        # ---- drain: stage 0 -> 1 -> 2
        m.d.comb += [array.drain.eq(ctrl.drain), array.drain_bank.eq(~ctrl.bank), array.drain_lo.eq(ctrl.drain_lo),
                     array.drain_t.eq(ctrl.drain_t)]
        dv1, dv2 = Signal(), Signal()
        addr1, addr2 = Signal.like(ctrl.out_addr), Signal.like(ctrl.out_addr)
        grp1, grp2 = Signal.like(ctrl.out_grp), Signal.like(ctrl.out_grp)
        m.d.sync += [dv1.eq(ctrl.drain), dv2.eq(dv1), addr1.eq(ctrl.out_addr), addr2.eq(addr1),
                     grp1.eq(ctrl.out_grp), grp2.eq(grp1)]
        # The residual operand has the output's shape, so it sits at the output address: read it in drain
        # stage 1, use it in stage 2. Compute reads another buffer meanwhile (lowering guarantees it).
        for i, buf in enumerate(bufs):
            m.d.comb += buf.raddr.eq(Mux(dv1 & desc.has_res & (desc.res_buf == i), addr1, ctrl.act_addr))
        res_word = Signal(L * B)
        for i, buf in enumerate(bufs):
            with m.If(desc.res_buf == i):
                m.d.comb += res_word.eq(buf.rdata)
        lane = lambda word, l, width: word[l * width:(l + 1) * width]
        res_lanes = [select(m, grp2, [lane(res_word, g * N + p, B) for g in range(L // N)], f"res_lane{p}")
                     for p in range(N)]
        for p in range(N):
            word_rq = rq_roms[p].data
            m.d.comb += [rq_roms[p].addr.eq(ctrl.rq_addr), rqs[p].acc.eq(array.accs[p]),
                         rqs[p].mul.eq(word_rq[:REQUANT_MUL_BITS]),
                         rqs[p].bias.eq(word_rq[REQUANT_MUL_BITS:REQUANT_MUL_BITS + prog.bias_bits]),
                         rqs[p].shift.eq(word_rq[REQUANT_MUL_BITS + prog.bias_bits:]),
                         rqs[p].lo.eq(desc.lo), rqs[p].hi.eq(desc.hi),
                         rqs[p].res.eq(Mux(desc.has_res, Mux(desc.res_signed, res_lanes[p].as_signed(),
                                                                     res_lanes[p]), 0))]
        lane_values = Cat(rqs[l % N].y[:B] for l in range(L))  # lane l of a word comes from PE l mod N
        lane_groups = Cat(grp2 == l // N for l in range(L))
        m.d.comb += [result.waddr.eq(addr2), result.wdata.eq(Cat(r.y[:prog.out_bits] for r in rqs)),
                     result.wen.eq(Mux(dv2 & desc.to_result, (1 << N) - 1, 0))]

        # ---- top-level sequence: load, run, stream out
        in_count = Signal(range(cap.buf_depth + 1))
        out_o = Signal(range(cap.locals * N + 1))
        out_p = Signal(range(N + 1))
        out_px = Signal(range(cap.res_depth + 1))
        out_lobase = Signal(range(max(2, prog.res_depth + 1)))
        out_sel = Signal.like(out_p)
        n_pix_f = net.out_pix
        m.d.comb += net_rom.addr.eq(0)
        m.d.comb += [result.raddr.eq(out_lobase + out_px), result.ren.eq(0)]
        m.d.comb += self.out.payload.data.eq(
            select(m, out_sel, [lane(result.rdata, p, prog.out_bits) for p in range(N)], "out_value"))
        m.d.comb += self.layer_done.eq(ctrl.layer_done)
        with m.If(ctrl.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        for i, buf in enumerate(bufs):
            m.d.comb += [buf.waddr.eq(addr2), buf.wdata.eq(lane_values),
                         buf.wen.eq(Mux(dv2 & ~desc.to_result & (desc.out_buf == i), lane_groups, 0))]
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.inp.ready.eq(1), bufs[0].waddr.eq(in_count), bufs[0].wdata.eq(self.inp.payload.data)]
                with m.If(self.inp.valid):
                    m.d.comb += bufs[0].wen.eq((1 << L) - 1)
                    m.d.sync += in_count.eq(in_count + 1)
                    with m.If(in_count == net.in_beats - 1):
                        m.d.comb += ctrl.start.eq(1)
                        m.d.sync += [in_count.eq(0), self.cycles.eq(0)]
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(ctrl.done):
                    m.d.sync += [out_o.eq(0), out_p.eq(0), out_px.eq(0), out_lobase.eq(0)]
                    m.next = "OUT_READ"
            with m.State("OUT_READ"):
                m.d.comb += result.ren.eq(1)
                m.d.sync += out_sel.eq(out_p)
                m.next = "OUT_VALID"
            with m.State("OUT_VALID"):
                m.d.comb += [self.out.valid.eq(1), self.out.payload.last.eq(
                    (out_o == net.out_c - 1) & (out_px == n_pix_f - 1))]
                with m.If(self.out.ready):
                    m.next = "OUT_READ"
                    with m.If(out_o == net.out_c - 1):
                        m.d.sync += [out_o.eq(0), out_p.eq(0), out_lobase.eq(0), out_px.eq(out_px + 1)]
                        with m.If(out_px == n_pix_f - 1):
                            m.next = "LOAD"
                    with m.Else():
                        m.d.sync += out_o.eq(out_o + 1)
                        with m.If(out_p == N - 1):
                            m.d.sync += [out_p.eq(0), out_lobase.eq(out_lobase + n_pix_f)]
                        with m.Else():
                            m.d.sync += out_p.eq(out_p + 1)
        return m
