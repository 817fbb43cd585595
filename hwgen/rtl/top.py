"""The accelerator top level: input stream -> buffers -> engine (controller + PE array + requant) -> output.

Every stage ends in a register, so no path crosses two memories or the whole chip (docs/synthesis.md).
A compute issue, in cycles after the controller issues it: 2 its buffer address (the controller registers
the schedule entry, then the address); 4 the activation word, read and registered at the block RAM, is
selected and zeroed outside the map, and goes with the PE-ROM words into the PE array
(``array.COMPUTE_LATENCY``): operands, per-PE copy, first adder level, rest of the tree, accumulator
entry read, and written at 9.
A drain issue: 1 addresses registered, then the accumulator entry and requant constants are read; 2 onwards
the requant pipeline (``requant.REQUANT_LATENCY``); 8 the value is written to the output buffer.
``contract.COMPUTE_WRITE_STAGE`` / ``DRAIN_READ_STAGE`` / ``DRAIN_WRITE_STAGE`` are these numbers; the
controller's waits and the cycle model follow from them, and the asserts below check that they add up.
"""
from __future__ import annotations

from typing import NamedTuple

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract.hardware import (BUFFER_READ, COMPUTE_WRITE_STAGE, CYCLE_COUNTER_BITS, DRAIN_READ_STAGE,
                                 DRAIN_WRITE_STAGE, NET_IMAGE, PE_ROM_READ, Hardware, hardware, net_layout, pe_image,
                                 pe_word_layout, requant_layout, rq_image)
from ..contract.dram_layout import RQ_IMAGE
from ..contract.encoding import WEIGHT_BITS, lane_weights
from .array import COMPUTE_LATENCY, DRAIN_LATENCY, PEArray
from .controller import ADDRESS_LATENCY, Controller
from .delay import delayed, delayed_tapped
from .requant import REQUANT_LATENCY, REQUANT_RES_STAGE, Requant
from .dma import attach_band_buffers, attach_dram, dram_bus
from .extmem import CacheRAM, CopyRegister, ImageROM, LaneRAM

ARRAY_INPUT = ADDRESS_LATENCY + BUFFER_READ  # the word, selected and masked, goes straight in
assert ARRAY_INPUT + COMPUTE_LATENCY == COMPUTE_WRITE_STAGE
assert DRAIN_LATENCY - 1 == DRAIN_READ_STAGE  # the array registers the address, then reads
assert DRAIN_LATENCY + REQUANT_LATENCY == DRAIN_WRITE_STAGE
# the residual is read, then its buffer selected (a register) and its lane selected (a register)
RES_READ_STAGE = DRAIN_LATENCY + REQUANT_RES_STAGE - BUFFER_READ - 2
RES_LANE_STAGE = RES_READ_STAGE + BUFFER_READ + 1
assert RES_READ_STAGE >= 1  # with the maps in DRAM its address is chosen a cycle before


class _Slice(NamedTuple):
    """One PE's view of a memory shared by all PEs: its address, and its word of the data."""
    addr: Value
    data: Value


def _slices(mem, width: int, n: int) -> list[_Slice]:
    """``n`` views of a memory of ``n`` words of ``width`` side by side: PE p's is word p."""
    return [_Slice(mem.addr, mem.data[p * width:(p + 1) * width]) for p in range(n)]


def select(m: Module, index, choices: list, name: str) -> Signal:
    """``choices[index]`` as a case statement: ``word_select`` with a variable index would multiply the
    index by the width, and such ``$mul`` cells blur the multiplier count of the design."""
    out = Signal(len(choices[0]), name=name)
    with m.Switch(index):
        for i, choice in enumerate(choices):
            with m.Case(i):
                m.d.comb += out.eq(choice)
    return out


class Top(wiring.Component):
    """Ports (AXI4-Stream in valid/ready/payload form, beat format in docs/stream.md):

    - ``inp``: payload ``data`` = the L activations of one pixel of one input block (blocks, then pixels
      in raster order), ``last`` (accepted, not required: the top counts beats); with the maps in DRAM also
      ``weights``, set on the beats of a weights frame: ``weight_words`` map words of the weights' DRAM
      image, written to address 0, after which ``weights_loaded`` pulses;
    - ``out``: payload ``data`` = one result value (channels fastest, then pixels; two's complement when
      signed), ``last`` on the final beat of an image; ``valid`` is held, payload stable, until ``ready``;
    - ``cycles``: busy cycles of the engine for the last image;
    - ``layer_done``: pulses when a layer's output is complete in its buffer (for debugging testbenches).

    Images are processed one at a time: the input is accepted whole, the engine runs, the result streams
    out. ``hw``: a ``contract.Hardware`` (or a lowered program, of which only its sizes are used)."""

    def __init__(self, hw: Hardware):
        self.hw = hw = hardware(hw)
        beat = {"data": hw.lanes * hw.cap.act_bits, "last": 1}
        if hw.cap.band_words:  # a beat of the host's weights frame (docs/dram.md) rather than of an image
            beat["weights"] = 1
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout(beat))),
            "out": Out(stream.Signature(data.StructLayout({"data": hw.cap.out_bits, "last": 1}))),
            "cycles": Out(CYCLE_COUNTER_BITS),
            "layer_done": Out(1),
            # weights streamed from DRAM (rtl/dma.py): the AXI4 port (reads; writes too with the maps in DRAM)
            # and its sticky error
            **({"m_axi": Out(dram_bus(hw)), "dram_error": Out(1)} if hw.cap.weight_cache else {}),
            # pulses when a weights frame is in DRAM; ``loading``: a frame is awaited or being taken (the
            # engine's ``ready`` may drop within it, when the DRAM holds its writes back)
            **({"weights_loaded": Out(1), "loading": Out(1)} if hw.cap.band_words else {}),
        })

    def elaborate(self, platform):
        m = Module()
        hw = self.hw
        cap = hw.cap  # every size below comes from the capacity, never from the network's layers
        N, L, B = hw.pe, hw.lanes, cap.act_bits
        ctrl = m.submodules.ctrl = Controller(hw)
        pe_word, rq_word = pe_word_layout(hw, ctrl.wd), requant_layout(hw)
        array = m.submodules.array = PEArray(N, L, B, cap.acc_bits, cap.accumulator_locals, hw.tile, hw.pe_kind,
                                             spread=bool(cap.band_words))
        streamed = bool(cap.weight_cache)
        reads = writes = None
        if streamed:
            # The PE words come from the weight cache, which the read engine fills, and the requant words from
            # one ROM: each a single memory for all PEs (they share an address anyway), so that its width
            # packs into the block RAMs' 36 bits. Each PE reads its slice.
            pe_cache = m.submodules.pe_cache = CacheRAM(N * pe_word.size, cap.pe_steps, PE_ROM_READ)
            rq_rom = m.submodules.rq_rom = ImageROM(N * rq_word.size, cap.rq_words, RQ_IMAGE)
            pe_roms, rq_roms = _slices(pe_cache, pe_word.size, N), _slices(rq_rom, rq_word.size, N)
        else:
            pe_roms = [ImageROM(pe_word.size, cap.pe_steps, pe_image(p), PE_ROM_READ) for p in range(N)]
            rq_roms = [ImageROM(rq_word.size, cap.rq_words, rq_image(p)) for p in range(N)]
        net_rom = m.submodules.net_rom = ImageROM(net_layout(hw).size, 1, NET_IMAGE)
        net = data.View(net_layout(hw), net_rom.data)  # constant after the first clock edge
        rqs = [Requant(cap.acc_bits, cap.bias_bits, cap.shift_bits, hw.clamp_bits, B + 1) for _ in range(N)]
        for p in range(N):
            if not streamed:
                m.submodules[f"pe_rom{p}"], m.submodules[f"rq_rom{p}"] = pe_roms[p], rq_roms[p]
            m.submodules[f"requant{p}"] = rqs[p]

        desc = ctrl.desc
        # With the maps in DRAM the design spans the die, so each PE (its array slice, requant and residual
        # lane) reads the descriptor fields it needs from a copy of its own, a cycle behind: the descriptor
        # is latched cycles before the first issue and holds until the last drain's writes have landed.
        names = ("pattern", "lo", "hi", "has_res", "res_signed")
        fields = tuple(getattr(desc, n) for n in names)
        if cap.band_words:
            copies = []
            for p in range(N):
                reg = m.submodules[f"desc_copy{p}"] = CopyRegister(len(Cat(*fields)))
                mine = [Signal(Value.cast(f).shape(), name=f"desc_{n}_copy{p}") for f, n in zip(fields, names)]
                m.d.comb += [reg.d.eq(Cat(*fields)), Cat(*mine).eq(reg.q)]
                copies.append(dict(zip(names, mine)))
        else:
            copies = [dict(zip(names, fields))] * N
        bufs = [LaneRAM(L, B, depth, read_latency=BUFFER_READ) for depth in hw.band_depths()]
        # with the maps in DRAM the result memory's block RAM feeds the output select through a register: its
        # clock-to-output into the select and the UART link's shift register was the critical path (73.8 MHz)
        result = LaneRAM(N, cap.out_bits, cap.res_depth, read_latency=2 if cap.band_words else 1)
        for i, b in enumerate(bufs):
            m.submodules[f"buf{i}"] = b
        m.submodules.result = result

        # ---- compute: addresses (controller, stage 2), buffer read (4), word selected and masked (5), array
        word = Signal(L * B)
        for i, buf in enumerate(bufs):
            with m.If(desc.in_buf == i):
                m.d.comb += word.eq(buf.rdata)
        inb = delayed(m, ctrl.inb, BUFFER_READ, "inb")
        m.d.comb += [array.valid.eq(delayed(m, ctrl.issue, ARRAY_INPUT, "valid")),
                     array.t.eq(delayed(m, ctrl.t, ARRAY_INPUT, "t")),
                     array.bank.eq(delayed(m, ctrl.bank, ARRAY_INPUT, "bank")),
                     array.acts.eq(Mux(inb, word, 0)),
                     array.act_signed.eq(desc.in_signed), array.max_mode.eq(desc.max_mode)]
        step = delayed(m, ctrl.pe_step, ARRAY_INPUT - PE_ROM_READ, "pe_step")  # read beside the activation word
        if streamed:
            reads, writes = attach_dram(m, self, hw, ctrl, pe_cache, ARRAY_INPUT - PE_ROM_READ)
        # a fixed-pattern layer's weights, made beside the ROM words: PE p's output channel pat_o + p has
        # weight +1 on input lane pat_lane + p, and none past the layer's channels. (Past them the lane is a
        # zero padding lane and the entry is never drained, so the limit changes no result: it keeps the
        # words equal to the ROM words they replace, roms.pattern_slots.)
        pat_lo, pat_o, pat_lane = (delayed(m, v, ARRAY_INPUT, n) for v, n in (
            (ctrl.pat_lo, "pat_lo"), (ctrl.pat_o, "pat_o"), (ctrl.pat_lane, "pat_lane")))
        one_hot = Signal(L)
        m.d.comb += one_hot.eq(1 << pat_lane)
        width = WEIGHT_BITS[hw.pe_kind]
        one = Const(int(lane_weights([1], hw.pe_kind)[0]), width)
        if cap.band_words:  # each PE's channel limit compared a cycle early, so no carry chain meets the array
            pat_o_early = delayed(m, ctrl.pat_o, ARRAY_INPUT - 1, "pat_o_early")
            live = [delayed(m, pat_o_early + p < desc.channels, 1, f"pat_live{p}") for p in range(N)]
        else:
            live = [pat_o + p < desc.channels for p in range(N)]
        for p in range(N):
            word_pe = data.View(pe_word, pe_roms[p].data)
            hot = Cat(Const(0, p), one_hot)[:L] & Mux(live[p], -1, 0)
            made = Cat(*(Mux(hot[l], one, Const(0, width)) for l in range(L)))
            m.d.comb += [pe_roms[p].addr.eq(step),
                         array.codes[p].eq(Mux(copies[p]["pattern"], made, word_pe.weights.as_value())),
                         array.los[p].eq(Mux(copies[p]["pattern"], pat_lo, word_pe.lo))]

        # ---- drain: issue registered (1), accumulator and requant constants read (2), requant, write (7)
        m.d.comb += [array.drain.eq(ctrl.drain), array.drain_bank.eq(~ctrl.bank), array.drain_lo.eq(ctrl.drain_lo),
                     array.drain_t.eq(ctrl.drain_t)]
        rq_addr = delayed(m, ctrl.rq_addr, DRAIN_LATENCY - 1, "rq_addr")  # ROM data beside the entry
        # The residual operand has the output's shape, so it sits at the output address: it is read, its
        # buffer selected and its lane selected, a register after each, and reaches requant at its res
        # stage. Compute reads another buffer meanwhile (lowering guarantees it).
        if cap.band_words:  # tapped a cycle early too (below)
            dv_early, dv_res = delayed_tapped(m, ctrl.drain, RES_READ_STAGE, "res_valid")
            addr_early, addr_res = delayed_tapped(m, ctrl.out_addr, RES_READ_STAGE, "res_addr")
        else:
            dv_res = delayed(m, ctrl.drain, RES_READ_STAGE, "res_valid")
            addr_res = delayed(m, ctrl.out_addr, RES_READ_STAGE, "res_addr")
        for i, buf in enumerate(bufs):
            # a buffer is read only as this layer's input or residual, never while it is written. The input
            # read enable comes from a register: the controller's busy state fanned out to every buffer block
            # RAM's enable was a critical path. Busy rises before the first address and outlasts the last.
            # (with streamed weights, not while the unit waits: its input band may be landing then)
            reading = ctrl.busy & ~ctrl.waiting if streamed else ctrl.busy
            input_read = reading & (desc.in_buf == i)
            if cap.band_words:
                # band buffers spread across the die: each gets its read address and enable from registers
                # of its own, chosen a cycle early (one descriptor register deciding for all six buffers'
                # block RAMs through the address mux was the critical path, 66 MHz on the LFE5U-85F)
                res_early = dv_early & desc.has_res & (desc.res_buf == i)
                raddr = delayed(m, Mux(res_early, addr_early, ctrl.act_addr_next), 1, f"buf{i}_raddr")
                ren = delayed(m, res_early | input_read, 1, f"buf{i}_ren")
                m.d.comb += [buf.raddr.eq(raddr), buf.ren.eq(ren)]
            else:
                res_read = dv_res & desc.has_res & (desc.res_buf == i)
                input_read = delayed(m, input_read, 1, f"buf{i}_input_read")
                m.d.comb += [buf.raddr.eq(Mux(res_read, addr_res, ctrl.act_addr)), buf.ren.eq(res_read | input_read)]
        res_word = Signal(L * B)
        for i, buf in enumerate(bufs):
            with m.If(desc.res_buf == i):
                m.d.comb += res_word.eq(buf.rdata)
        res_word = delayed(m, res_word, 1, "res_word")
        grp_res = delayed(m, ctrl.out_grp, RES_LANE_STAGE, "res_grp")
        # one delay line per drain signal, tapped by the residual path and by the output write
        if cap.band_words:  # tapped a cycle early too, for the band buffers' own write registers (below)
            dvw_early, dvw = delayed_tapped(m, dv_res, DRAIN_WRITE_STAGE - RES_READ_STAGE, "drain_valid")
            addr_w_early, addr_w = delayed_tapped(m, addr_res, DRAIN_WRITE_STAGE - RES_READ_STAGE, "out_addr")
            grp_w_early, grp_w = delayed_tapped(m, grp_res, DRAIN_WRITE_STAGE - RES_LANE_STAGE, "out_grp")
        else:
            dvw = delayed(m, dv_res, DRAIN_WRITE_STAGE - RES_READ_STAGE, "drain_valid")
            addr_w = delayed(m, addr_res, DRAIN_WRITE_STAGE - RES_READ_STAGE, "out_addr")
            grp_w = delayed(m, grp_res, DRAIN_WRITE_STAGE - RES_LANE_STAGE, "out_grp")
        lane = lambda word, l, width: word[l * width:(l + 1) * width]
        res_lanes = []
        for p in range(N):
            raw = select(m, grp_res, [lane(res_word, g * N + p, B) for g in range(L // N)], f"res_lane{p}")
            mine = copies[p]
            value = Mux(mine["has_res"], Mux(mine["res_signed"], raw.as_signed(), raw), 0)
            res_lanes.append(delayed(m, value, 1, f"res_value{p}"))  # a register is all requant sees
        for p in range(N):
            word_rq = data.View(rq_word, rq_roms[p].data)
            m.d.comb += [rq_roms[p].addr.eq(rq_addr), rqs[p].acc.eq(array.accs[p]),
                         rqs[p].mul.eq(word_rq.mul), rqs[p].bias.eq(word_rq.bias), rqs[p].shift.eq(word_rq.shift),
                         rqs[p].lo.eq(copies[p]["lo"]), rqs[p].hi.eq(copies[p]["hi"]), rqs[p].res.eq(res_lanes[p])]
        lane_values = Cat(rqs[l % N].y[:B] for l in range(L))  # lane l of a word comes from PE l mod N
        lane_groups = Cat(grp_w == l // N for l in range(L))
        m.d.comb += [result.waddr.eq(addr_w), result.wdata.eq(Cat(r.y[:cap.out_bits] for r in rqs)),
                     result.wen.eq(Mux(dvw & desc.to_result, (1 << N) - 1, 0))]

        # ---- top-level sequence: load, run, stream out
        in_count = Signal(cap.dram_addr_bits) if cap.band_words else Signal(range(cap.buf_depth + 1))
        out_o = Signal(range(cap.locals * N + 1))
        out_p = Signal(range(N + 1))
        out_px = Signal(range(cap.res_depth + 1))
        out_lobase = Signal(range(max(2, cap.res_depth + 1)))
        out_sel = Signal.like(out_p)
        n_pix_f = net.out_pix
        m.d.comb += net_rom.addr.eq(0)
        m.d.comb += [result.raddr.eq(out_lobase + out_px), result.ren.eq(0)]
        m.d.comb += self.out.payload.data.eq(
            select(m, out_sel, [lane(result.rdata, p, cap.out_bits) for p in range(N)], "out_value"))
        m.d.comb += self.layer_done.eq(ctrl.layer_done)
        with m.If(ctrl.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        for i, buf in enumerate(bufs):
            if cap.band_words:
                # each band buffer's write address and lane enables from registers of its own (a copy that
                # synthesis keeps apart), chosen a cycle early: one register drove six buffers' block RAMs
                waddr = m.submodules[f"buf{i}_waddr"] = CopyRegister(len(addr_w))
                groups = Cat(grp_w_early == l // N for l in range(L))
                wen = delayed(m, Mux(dvw_early & ~desc.to_result & (desc.out_buf == i), groups, 0), 1, f"buf{i}_wen")
                m.d.comb += [waddr.d.eq(addr_w_early), buf.waddr.eq(waddr.q), buf.wdata.eq(lane_values),
                             buf.wen.eq(wen)]
            else:
                m.d.comb += [buf.waddr.eq(addr_w), buf.wdata.eq(lane_values),
                             buf.wen.eq(Mux(dvw & ~desc.to_result & (desc.out_buf == i), lane_groups, 0))]
        # an input beat is written a cycle after it is taken, from registers: the stream logic's state and
        # handshake fanned out to every block RAM write enable of buffer 0 was a critical path. The
        # controller reads buffer 0 only cycles after start, so the last beat has landed by then.
        load_we, load_data = Signal(), Signal(L * B)
        load_addr = Signal.like(in_count)
        m.d.sync += load_we.eq(0)
        if writes is None:
            with m.If(load_we):
                m.d.comb += [bufs[0].waddr.eq(load_addr), bufs[0].wdata.eq(load_data), bufs[0].wen.eq((1 << L) - 1)]
        else:  # the maps are in DRAM, the input too: the write engine takes it there before the run, as it
            # takes a weights frame to address 0 (the frame's kind is latched from its first beat)
            weights = Signal()
            m.d.comb += [writes.load_addr.eq(Mux(weights, 0, net.in_addr)),
                         writes.load_words.eq(Mux(weights, net.weight_words, net.in_beats)),
                         writes.load.payload.eq(self.inp.payload.data)]
            attach_band_buffers(m, reads, writes, bufs, L)
        last_beat = net.in_beats - 1 if writes is None else Mux(weights, net.weight_words, net.in_beats) - 1
        # start and done cross between the stream logic and the controller through registers: the two sit
        # apart on the chip
        start = Signal()
        m.d.sync += start.eq(0)
        m.d.comb += ctrl.start.eq(start)
        if streamed:
            m.d.comb += reads.start.eq(start)
        if writes is not None:
            m.d.comb += writes.start.eq(start)
        done = delayed(m, ctrl.done, 1, "done")
        with m.FSM():
            if writes is not None:
                with m.State("FRAME"):  # a frame's first beat says what it is
                    m.d.comb += self.loading.eq(1)
                    with m.If(self.inp.valid):
                        m.d.sync += weights.eq(self.inp.payload.weights)
                        m.next = "LOAD_GO"
                with m.State("LOAD_GO"):
                    m.d.comb += [writes.load_go.eq(1), self.loading.eq(1)]
                    m.next = "LOAD"
                with m.State("LOAD_WAIT"):  # until the frame is in DRAM
                    with m.If(~writes.load_busy & weights):
                        m.d.comb += self.weights_loaded.eq(1)
                        m.next = "FRAME"
                    with m.Elif(~writes.load_busy):
                        m.d.sync += [start.eq(1), self.cycles.eq(0)]
                        m.next = "RUN"
            with m.State("LOAD"):
                if writes is None:
                    m.d.comb += self.inp.ready.eq(1)
                else:
                    m.d.comb += [self.inp.ready.eq(writes.load.ready), writes.load.valid.eq(self.inp.valid),
                                 self.loading.eq(1)]
                with m.If(self.inp.valid if writes is None else self.inp.valid & self.inp.ready):
                    m.d.sync += [load_we.eq(1), load_addr.eq(in_count), load_data.eq(self.inp.payload.data)]
                    m.d.sync += in_count.eq(in_count + 1)
                    with m.If(in_count == last_beat):
                        m.d.sync += in_count.eq(0)
                        if writes is None:
                            m.d.sync += [start.eq(1), self.cycles.eq(0)]
                            m.next = "RUN"
                        else:
                            m.next = "LOAD_WAIT"
            with m.State("RUN"):
                with m.If(done):
                    m.d.sync += [out_o.eq(0), out_p.eq(0), out_px.eq(0), out_lobase.eq(0)]
                    m.next = "OUT_READ"
            with m.State("OUT_READ"):
                m.d.comb += result.ren.eq(1)
                m.d.sync += out_sel.eq(out_p)
                m.next = "OUT_WAIT" if cap.band_words else "OUT_VALID"
            if cap.band_words:
                with m.State("OUT_WAIT"):  # the word reaches the result memory's output register
                    m.next = "OUT_VALID"
            with m.State("OUT_VALID"):
                m.d.comb += [self.out.valid.eq(1), self.out.payload.last.eq(
                    (out_o == net.out_c - 1) & (out_px == n_pix_f - 1))]
                with m.If(self.out.ready):
                    m.next = "OUT_READ"
                    with m.If(out_o == net.out_c - 1):
                        m.d.sync += [out_o.eq(0), out_p.eq(0), out_lobase.eq(0), out_px.eq(out_px + 1)]
                        with m.If(out_px == n_pix_f - 1):
                            m.next = "LOAD" if writes is None else "FRAME"
                    with m.Else():
                        m.d.sync += out_o.eq(out_o + 1)
                        with m.If(out_p == N - 1):
                            m.d.sync += [out_p.eq(0), out_lobase.eq(out_lobase + n_pix_f)]
                        with m.Else():
                            m.d.sync += out_p.eq(out_p + 1)
        return m
