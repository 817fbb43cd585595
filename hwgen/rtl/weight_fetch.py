"""The weight fetch unit: streams each layer's step words from DRAM into its half of the weight cache
(docs/dram.md), one layer ahead of the compute.

Layer k's words go to half k % 2. Per layer the fetch machine reads the layer's fetch word
(``contract.fetch_layout``), waits until that half is free, issues one read command to the AXI4 reader, and
assembles the beats into step words (``contract.step_word_layout``; a fixed-pattern layer's steps hold the
schedule entry alone). Each word is written into the cache the cycle after its last beat; after the layer's
last word the half is marked ``ready``. The controller waits for ``ready`` of its layer's half, and releases
the half when the layer ends, so layer k + 2's words never overwrite what layer k still reads.
``compile/weights_stream.stream_cycles`` models these cycles.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..contract.hardware import (FETCH_IMAGE, FETCH_ROM_READ, Hardware, entry_beats, fetch_layout, hardware,
                                 pe_word_layout, schedule_layout, step_beats, step_word_layout, widths)
from .axi import AxiReader, read_bus
from .extmem import ImageROM


class WeightFetch(wiring.Component):
    """Ports: ``start`` (pulse: fetch from the first layer), ``release`` with ``release_half`` (the controller
    is done with that half), ``ready`` (one bit per half); the cache's write port: ``waddr``, ``entry`` with
    ``entry_we`` (the schedule entry), ``pe`` with ``pe_we`` (one PE word per PE); ``axi`` (the AR and R
    channels) and ``error`` (sticky: a read answered other than OKAY)."""

    def __init__(self, hw: Hardware):
        self.hw = hw = hardware(hw)
        cap, wd = hw.cap, widths(hw)
        if not cap.weight_cache:
            raise ValueError("the weight fetch unit is for a capacity with a weight cache (weight_cache > 0)")
        self.wd = wd
        self.fetch = fetch_layout(hw, wd)
        super().__init__({
            "start": In(1), "release": In(1), "release_half": In(1), "ready": Out(2),
            "waddr": Out(range(2 * cap.weight_cache)), "entry": Out(schedule_layout(wd)), "entry_we": Out(1),
            "pe": Out(data.ArrayLayout(pe_word_layout(hw, wd), hw.pe)), "pe_we": Out(1),
            "axi": Out(read_bus(cap.dram_addr_bits, cap.dram_data_bits)), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        hw, cap, wd = self.hw, self.hw.cap, self.wd
        width = cap.dram_data_bits
        assert FETCH_ROM_READ == 1  # the READ state, then LATCH
        rom = m.submodules.fetch_rom = ImageROM(self.fetch.size, cap.layers, FETCH_IMAGE, FETCH_ROM_READ)
        reader = m.submodules.reader = AxiReader(cap.dram_addr_bits, width, self.fetch["beats"].shape.width)
        wiring.connect(m, reader.axi, wiring.flipped(self.axi))
        m.d.comb += self.error.eq(reader.error)

        layer = Signal(range(cap.layers + 1))
        word = Signal(self.fetch)
        half = layer[0]
        m.d.comb += rom.addr.eq(layer)

        # beats -> step words: beat b of a word fills its bits [b * width, (b + 1) * width)
        full, entry_only = step_beats(hw, wd), entry_beats(hw, wd)
        assembled = Signal(full * width)
        beat = Signal(range(full))
        index = Signal(range(cap.weight_cache + 1))  # of the next word within the half
        write, write_addr = Signal(), Signal.like(self.waddr)
        step = data.View(step_word_layout(hw, wd), assembled[:step_word_layout(hw, wd).size])
        m.d.comb += [self.waddr.eq(write_addr), self.entry.eq(step.entry), self.pe.eq(step.pe),
                     self.entry_we.eq(write), self.pe_we.eq(write & ~word.entry_only)]
        m.d.sync += write.eq(0)
        words_beats = Mux(word.entry_only, entry_only, full)
        m.d.comb += reader.data.ready.eq(1)  # the cache takes a beat every cycle
        with m.If(reader.data.valid):
            with m.Switch(beat):
                for b in range(full):
                    with m.Case(b):
                        m.d.sync += assembled[b * width:(b + 1) * width].eq(reader.data.payload.data)
            with m.If(beat == words_beats - 1):
                m.d.sync += [beat.eq(0), write.eq(1), write_addr.eq(Mux(half, cap.weight_cache, 0) + index),
                             index.eq(index + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        land = Signal()
        for h in range(2):
            with m.If(land & (half == h)):
                m.d.sync += self.ready[h].eq(1)
            with m.Elif(self.release & (self.release_half == h)):
                m.d.sync += self.ready[h].eq(0)

        m.d.comb += [reader.cmd.payload.addr.eq(word.addr), reader.cmd.payload.beats.eq(word.beats)]
        with m.FSM(name="fetch"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += layer.eq(0)
                    m.next = "READ"
            with m.State("READ"):  # FETCH_SETUP_CYCLES: the fetch ROM reads ``layer``, then its word is latched
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += [word.eq(rom.data), index.eq(0), beat.eq(0)]
                m.next = "ISSUE"
            with m.State("ISSUE"):  # once the half is free
                m.d.comb += reader.cmd.valid.eq(~Mux(half, self.ready[1], self.ready[0]))
                with m.If(reader.cmd.valid & reader.cmd.ready):
                    m.next = "RECEIVE"
            with m.State("RECEIVE"):
                with m.If(reader.data.valid & reader.data.payload.last):
                    m.next = "LAND"
            with m.State("LAND"):  # the last word is written in this cycle
                m.d.comb += land.eq(1)
                m.d.sync += layer.eq(layer + 1)
                m.next = "READ"
                with m.If(word.last):
                    m.next = "IDLE"
        return m
