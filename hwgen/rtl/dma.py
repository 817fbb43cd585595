"""The DMA engines between DRAM and the accelerator (docs/dram.md), each running its program from a ROM one
command at a time, ordered by three counters: units ended (``units_done``, the controller's), read commands
complete (``reads_done``) and write commands complete (``writes_done``). compile/units.py writes the
programs and compile/dram.py models their cycles.

- ``ReadEngine``: per command, ``beats`` from DRAM into the weight cache (step words, or a fixed-pattern
  layer's schedule entries alone: ``contract.dram_layout``) or into a band buffer (map words); each word
  is written the cycle after its last beat.
- ``WriteEngine``: per command, words of a band buffer to DRAM; a command is complete when every burst's
  write response has come back. Before an image it also writes the input stream into DRAM (``load_*``).
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract.hardware import BUFFER_READ, Hardware, addr_width, hardware, pe_word_layout, schedule_layout, widths
from ..contract.dram_layout import (DMA_ROM_READ, READS_IMAGE, WRITES_IMAGE, entry_beats, map_word_beats,
                                    read_command_layout, step_beats, step_word_layout, write_command_layout)
from .axi import AxiReader, AxiWriter, read_bus, write_bus
from .delay import delayed
from .extmem import ImageROM



def _times(value, k: int):
    """``value * k`` for a constant ``k``: a shift when it is a power of two (the usual case: a map word is
    a power-of-two number of beats), so the netlist's only multipliers stay the requant units'."""
    return value << (k.bit_length() - 1) if k & (k - 1) == 0 else value * k


def _counter(n: int):
    return range(n + 1)


class ReadEngine(wiring.Component):
    """Ports: ``start`` (pulse: run the program from its first command), ``units_done`` and ``writes_done``
    (in), ``reads_done`` (out); the weight cache's write port (``waddr``, ``entry``/``entry_we``,
    ``pe``/``pe_we``), a band buffer's (``buf``, ``buf_waddr``, ``buf_wdata``, ``buf_we``); ``axi`` (AR, R)
    and ``error`` (sticky)."""

    def __init__(self, hw: Hardware):
        self.hw = hw = hardware(hw)
        cap, wd = hw.cap, widths(hw)
        self.wd, self.layout = wd, read_command_layout(hw, wd)
        super().__init__({
            "start": In(1), "units_done": In(_counter(cap.layers)), "writes_done": In(_counter(cap.write_commands)),
            "reads_done": Out(_counter(cap.read_commands)),
            "waddr": Out(range(2 * cap.weight_cache)), "entry": Out(schedule_layout(wd)), "entry_we": Out(1),
            "pe": Out(data.ArrayLayout(pe_word_layout(hw, wd), hw.pe)), "pe_we": Out(1),
            "buf": Out(self.layout["buf"].shape), "buf_waddr": Out(addr_width(cap.buf_depth)),
            "buf_wdata": Out(hw.lanes * cap.act_bits), "buf_we": Out(1),
            "axi": Out(read_bus(cap.dram_addr_bits, cap.dram_data_bits)), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        hw, cap, wd = self.hw, self.hw.cap, self.wd
        width = cap.dram_data_bits
        assert DMA_ROM_READ == 1  # the READ state, then LATCH
        rom = m.submodules.reads = ImageROM(self.layout.size, max(1, cap.read_commands), READS_IMAGE, DMA_ROM_READ)
        reader = m.submodules.reader = AxiReader(cap.dram_addr_bits, width, self.layout["beats"].shape.width)
        wiring.connect(m, reader.axi, wiring.flipped(self.axi))
        m.d.comb += self.error.eq(reader.error)
        index, cmd = Signal(range(max(2, cap.read_commands + 1))), Signal(self.layout)
        m.d.comb += rom.addr.eq(index)

        # beats -> words: beat b of a word fills its bits [b * width, (b + 1) * width)
        full, entry_only, map_beats = step_beats(hw, wd), entry_beats(hw, wd), map_word_beats(hw)
        most = max(full, map_beats)
        assembled = Signal(most * width)
        beat = Signal(range(most))
        at = Signal.like(cmd.waddr)  # the next word's address
        write, write_at = Signal(), Signal.like(at)
        step = data.View(step_word_layout(hw, wd), assembled[:step_word_layout(hw, wd).size])
        m.d.comb += [self.waddr.eq(write_at), self.entry.eq(step.entry), self.pe.eq(step.pe),
                     self.entry_we.eq(write & cmd.to_cache), self.pe_we.eq(write & cmd.to_cache & ~cmd.entry_only),
                     self.buf.eq(cmd.buf), self.buf_waddr.eq(write_at),
                     self.buf_wdata.eq(assembled[:len(self.buf_wdata)]),
                     self.buf_we.eq(write & ~cmd.to_cache)]
        m.d.sync += write.eq(0)
        word_beats = Mux(cmd.to_cache, Mux(cmd.entry_only, entry_only, full), map_beats)
        m.d.comb += reader.data.ready.eq(1)  # a word is written every cycle it is complete
        with m.If(reader.data.valid):
            with m.Switch(beat):
                for b in range(most):
                    with m.Case(b):
                        m.d.sync += assembled[b * width:(b + 1) * width].eq(reader.data.payload.data)
            with m.If(beat == word_beats - 1):
                m.d.sync += [beat.eq(0), write.eq(1), write_at.eq(at), at.eq(at + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        m.d.comb += [reader.cmd.payload.addr.eq(cmd.addr), reader.cmd.payload.beats.eq(cmd.beats)]
        with m.FSM(name="read_engine"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [index.eq(0), self.reads_done.eq(0)]
                    m.next = "READ"
            with m.State("READ"):  # FETCH_SETUP_CYCLES: the ROM reads the command, then it is latched
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += [cmd.eq(rom.data), beat.eq(0)]
                m.d.sync += at.eq(data.View(self.layout, rom.data).waddr)
                m.next = "ISSUE"
            with m.State("ISSUE"):  # once what it overwrites is free and what it reads is written
                m.d.comb += reader.cmd.valid.eq((self.units_done >= cmd.wait_u) & (self.writes_done >= cmd.wait_w))
                with m.If(reader.cmd.valid & reader.cmd.ready):
                    m.next = "RECEIVE"
            with m.State("RECEIVE"):
                with m.If(reader.data.valid & reader.data.payload.last):
                    m.next = "LAND"
            with m.State("LAND"):  # the last word is written in this cycle
                m.d.sync += [self.reads_done.eq(self.reads_done + 1), index.eq(index + 1)]
                m.next = "READ"
                with m.If(cmd.end):
                    m.next = "IDLE"
        return m


class WriteEngine(wiring.Component):
    """Ports: ``start``, ``units_done`` (in), ``writes_done`` (out); a band buffer's read port (``buf``,
    ``buf_raddr``, ``buf_ren``, ``buf_rdata`` ``BUFFER_READ`` cycles later; ``owns``: one bit per buffer, a
    register, set while a command reads that buffer); the input load: ``load_go``
    (pulse) with ``load_addr`` and ``load_words``, then the words on ``load``, and ``load_busy`` until they
    are in DRAM; ``axi`` (AW, W, B) and ``error`` (sticky)."""

    def __init__(self, hw: Hardware):
        self.hw = hw = hardware(hw)
        cap, wd = hw.cap, widths(hw)
        self.layout = write_command_layout(hw, wd)
        word = hw.lanes * cap.act_bits
        super().__init__({
            "start": In(1), "units_done": In(_counter(cap.layers)), "writes_done": Out(_counter(cap.write_commands)),
            "buf": Out(self.layout["buf"].shape), "buf_raddr": Out(addr_width(cap.buf_depth)), "buf_ren": Out(1),
            "buf_rdata": In(word), "owns": Out(cap.n_bufs),
            "load_go": In(1), "load_addr": In(cap.dram_addr_bits), "load_words": In(cap.dram_addr_bits),
            "load": In(stream.Signature(word)), "load_busy": Out(1),
            "axi": Out(write_bus(cap.dram_addr_bits, cap.dram_data_bits)), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        hw, cap = self.hw, self.hw.cap
        width, per_word = cap.dram_data_bits, map_word_beats(hw)
        rom = m.submodules.writes = ImageROM(self.layout.size, max(1, cap.write_commands), WRITES_IMAGE, DMA_ROM_READ)
        writer = m.submodules.writer = AxiWriter(cap.dram_addr_bits, width, cap.dram_addr_bits)
        wiring.connect(m, writer.axi, wiring.flipped(self.axi))
        m.d.comb += self.error.eq(writer.error)
        index, cmd = Signal(range(max(2, cap.write_commands + 1))), Signal(self.layout)
        m.d.comb += rom.addr.eq(index)

        # words -> beats: ``cur`` is sent beat by beat; ``nxt`` holds the word read next
        cur, have, beat = Signal(len(self.buf_rdata)), Signal(), Signal(range(per_word))
        nxt, nxt_valid = Signal.like(cur), Signal()
        to_read = Signal(cap.dram_addr_bits)  # words still to read (or to take from the load stream)
        pending = Signal()  # to_read != 0, as a register: the compare of the wide count was a critical path
        loading = Signal()
        m.d.comb += self.buf.eq(cmd.buf)
        with m.Switch(beat):
            for b in range(per_word):
                with m.Case(b):
                    m.d.comb += writer.data.payload.eq(cur[b * width:(b + 1) * width])
        m.d.comb += writer.data.valid.eq(have)
        sent_word = writer.data.valid & writer.data.ready & (beat == per_word - 1)
        with m.If(writer.data.valid & writer.data.ready):
            m.d.sync += beat.eq(Mux(beat == per_word - 1, 0, beat + 1))
        # the next word moves in when the current one is done (or there is none)
        free = ~have | sent_word
        with m.If(free):
            m.d.sync += have.eq(nxt_valid)
            with m.If(nxt_valid):
                m.d.sync += [cur.eq(nxt), nxt_valid.eq(0)]
        # a buffer read is issued when nothing is in flight and ``nxt`` will be free when it lands
        in_flight = Signal()
        issue = ~loading & pending & ~in_flight & (~nxt_valid | free)
        landed = delayed(m, issue, BUFFER_READ, "landed")
        raddr = Signal.like(self.buf_raddr)
        m.d.comb += [self.buf_raddr.eq(raddr), self.buf_ren.eq(issue)]
        with m.If(issue):
            m.d.sync += [in_flight.eq(1), raddr.eq(raddr + 1), to_read.eq(to_read - 1), pending.eq(to_read != 1)]
        with m.If(landed):
            m.d.sync += [in_flight.eq(0), nxt.eq(self.buf_rdata), nxt_valid.eq(1)]
        # the input stream fills ``nxt`` directly, when it is empty: ``ready`` from registers alone, as it
        # reaches the top's and the UART link's state (a word takes ``per_word`` beats to send anyway)
        m.d.comb += self.load.ready.eq(loading & pending & ~nxt_valid)
        with m.If(self.load.valid & self.load.ready):
            m.d.sync += [nxt.eq(self.load.payload), nxt_valid.eq(1), to_read.eq(to_read - 1),
                         pending.eq(to_read != 1)]
        drained = ~pending & ~in_flight & ~nxt_valid & ~have

        with m.FSM(name="write_engine"):
            with m.State("IDLE"):
                with m.If(self.load_go):
                    m.d.sync += [loading.eq(1), to_read.eq(self.load_words), pending.eq(self.load_words != 0)]
                    m.next = "LOAD"
                with m.Elif(self.start):
                    m.d.sync += [index.eq(0), self.writes_done.eq(0)]
                    m.next = "READ" if cap.write_commands else "IDLE"
            with m.State("LOAD"):
                m.d.comb += [self.load_busy.eq(1), writer.cmd.valid.eq(1), writer.cmd.payload.addr.eq(self.load_addr),
                             writer.cmd.payload.beats.eq(_times(self.load_words, per_word))]
                with m.If(writer.cmd.ready):
                    m.next = "LOAD_SEND"
            with m.State("LOAD_SEND"):
                m.d.comb += self.load_busy.eq(1)
                with m.If(drained & ~writer.busy):
                    m.d.sync += loading.eq(0)
                    m.next = "IDLE"
            with m.State("READ"):
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += cmd.eq(rom.data)
                m.next = "ISSUE"
            with m.State("ISSUE"):  # once the unit that wrote the buffer has ended
                m.d.comb += [writer.cmd.valid.eq(self.units_done >= cmd.after),
                             writer.cmd.payload.addr.eq(cmd.addr),
                             writer.cmd.payload.beats.eq(_times(cmd.words, per_word))]
                with m.If(writer.cmd.valid & writer.cmd.ready):
                    m.d.sync += [raddr.eq(cmd.raddr), to_read.eq(cmd.words), pending.eq(cmd.words != 0),
                                 self.owns.eq(1 << cmd.buf)]
                    m.next = "SEND"
            with m.State("SEND"):  # until every beat is out and every response back
                with m.If(drained & ~writer.busy):
                    m.d.sync += [self.writes_done.eq(self.writes_done + 1), index.eq(index + 1), self.owns.eq(0)]
                    m.next = "READ"
                    with m.If(cmd.end):
                        m.next = "IDLE"
        return m


def dram_bus(hw: Hardware) -> wiring.Signature:
    """The accelerator's AXI4 port: AR and R for the weights, and AW, W and B too when the maps go through
    DRAM (``Capacity.band_words``)."""
    cap = hardware(hw).cap
    members = dict(read_bus(cap.dram_addr_bits, cap.dram_data_bits).members.items())
    if cap.band_words:
        members.update(write_bus(cap.dram_addr_bits, cap.dram_data_bits).members.items())
    return wiring.Signature(members)


def attach_dram(m: Module, top, hw: Hardware, ctrl, pe_cache, pe_read_stage: int):
    """The engines of a design with streamed weights, wired to the top's port ``m_axi`` and ``dram_error``,
    the controller's counters and schedule cache, and the PE words' cache (every PE's word side by side,
    read ``pe_read_stage`` cycles after an issue). Returns (read engine, write engine or None: the maps are
    on chip)."""
    cap = hw.cap
    reads = m.submodules.read_engine = ReadEngine(hw)
    writes = None
    if cap.band_words:
        writes = m.submodules.write_engine = WriteEngine(hw)
    engines = [reads] + ([writes] if writes is not None else [])
    for engine in engines:
        for name, member in engine.axi.signature.members.items():
            ours, theirs = getattr(top.m_axi, name), getattr(engine.axi, name)
            m.d.comb += ours.eq(theirs) if member.flow == wiring.Out else theirs.eq(ours)
    m.d.comb += [top.dram_error.eq(reads.error | (writes.error if writes is not None else 0)),
                 ctrl.reads_done.eq(reads.reads_done), reads.units_done.eq(ctrl.units_done),
                 ctrl.sched_waddr.eq(reads.waddr), ctrl.sched_wdata.eq(reads.entry), ctrl.sched_we.eq(reads.entry_we)]
    if writes is not None:
        m.d.comb += [ctrl.writes_done.eq(writes.writes_done), reads.writes_done.eq(writes.writes_done),
                     writes.units_done.eq(ctrl.units_done)]
    # the cache is read only for an issue of the current unit, whose half is never being written
    pe_read = delayed(m, ctrl.issue, pe_read_stage, "pe_read")
    m.d.comb += [pe_cache.waddr.eq(reads.waddr), pe_cache.wdata.eq(reads.pe), pe_cache.wen.eq(reads.pe_we),
                 pe_cache.ren.eq(pe_read)]
    return reads, writes


def attach_band_buffers(m: Module, reads: ReadEngine, writes: WriteEngine, bufs: list, lanes: int) -> None:
    """The engines' ports on the band buffers, after (so over) the compute's and the drain's: the read
    engine writes input and residual bands while the drain writes output ones, and the write engine reads
    output bands while the compute reads the others (compile/units.py), so they never meet on a port.

    Every buffer's choice comes from a register of its own, because a decoded command field fanned out to
    every block RAM of six buffers was the critical path (51 MHz on the LFE5U-85F): the read engine's words
    land a cycle later (the unit that reads them starts cycles after ``reads_done`` counts them), and the
    write engine holds a buffer's read port for a whole command (``owns``), reading it every cycle."""
    landing = [delayed(m, reads.buf_we & (reads.buf == i), 1, f"band_we{i}") for i in range(len(bufs))]
    waddr, wdata = delayed(m, reads.buf_waddr, 1, "band_waddr"), delayed(m, reads.buf_wdata, 1, "band_wdata")
    for i, buf in enumerate(bufs):
        with m.If(landing[i]):
            m.d.comb += [buf.waddr.eq(waddr), buf.wdata.eq(wdata), buf.wen.eq((1 << lanes) - 1)]
        with m.If(writes.owns[i]):
            m.d.comb += [buf.raddr.eq(writes.buf_raddr), buf.ren.eq(1)]
        with m.If(writes.buf == i):
            m.d.comb += writes.buf_rdata.eq(buf.rdata)
