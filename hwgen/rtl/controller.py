"""The layer controller: walks the descriptor program, one issue per cycle, no multipliers.

Two state machines share the accumulator banks of the PE array. The compute machine fetches a layer's
descriptor (``LAYER_SETUP_CYCLES``), then per tile of up to T output pixels sets up (``TILE_SETUP_CYCLES``),
issues n_steps x n_t compute steps into bank ``bank``, and hands the bank over (``HANDOFF_CYCLES``) once
the drain machine is free, swapping banks.
The drain machine waits for the bank's last additions (``DRAIN_PRE_CYCLES``), drains locals x n_t entries
of its bank through requant, and waits for the last output writes (``DRAIN_POST_CYCLES``); it takes the
next bank during that wait. The drain of tile i thus overlaps the compute of tile i+1; a layer ends when
its last drain's writes have landed (``LAYER_END_CYCLES``). ``lower.layer_cycles`` models this exactly
from those constants of ``contract.hardware``; simulation checks it.

Addresses come from counters: the pixel walker keeps iy0 = oy*stride, ix0 = ox*stride and
base = iy0*w_in + ix0 incrementally, and the schedule ROM supplies per step the offset
j*H*W + dy*w_in + dx and (dy, dx) for the bounds check that zero-pads the borders.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..contract.hardware import (DESC_IMAGE, DESC_ROM_READ, DRAIN_POST_CYCLES, DRAIN_PRE_CYCLES, SCHED_IMAGE,
                                 SCHED_ROM_READ, Hardware, Widths, descriptor_layout, hardware, schedule_layout,
                                 widths)
from .delay import delayed
from .extmem import CacheRAM, ImageROM

ADDRESS_LATENCY = 2  # ``act_addr`` and ``inb`` follow their issue by this many cycles


class Walker:
    """Output-pixel position as (ox, iy0, ix0, base, rowbase) registers, advanced one pixel at a time.
    base and rowbase may wrap (a far anchor, a wide row_step): only the low ``addr`` bits of base + offset
    address the buffer, and modulo 2**addr they stay exact."""

    def __init__(self, prefix: str, wd: Widths):
        self.ox = Signal(wd.dim, name=f"{prefix}_ox")
        self.iy0 = Signal(wd.dim + 2, name=f"{prefix}_iy0")
        self.ix0 = Signal(wd.dim + 2, name=f"{prefix}_ix0")
        self.base = Signal(wd.addr + 3, name=f"{prefix}_base")
        self.rowbase = Signal(wd.addr + 3, name=f"{prefix}_rowbase")
        self.fields = (self.ox, self.iy0, self.ix0, self.base, self.rowbase)

    def eq(self, other: "Walker"):
        return [a.eq(b) for a, b in zip(self.fields, other.fields)]

    def reset(self):
        return [f.eq(0) for f in self.fields]

    def advance_into(self, dst: "Walker", desc):
        """Statements setting ``dst`` to this position advanced by one output pixel."""
        wrap = self.ox == desc.w_out - 1
        return [
            dst.ox.eq(Mux(wrap, 0, self.ox + 1)),
            dst.iy0.eq(Mux(wrap, self.iy0 + desc.stride, self.iy0)),
            dst.ix0.eq(Mux(wrap, 0, self.ix0 + desc.stride)),
            dst.rowbase.eq(Mux(wrap, self.rowbase + desc.row_step, self.rowbase)),
            dst.base.eq(Mux(wrap, self.rowbase + desc.row_step, self.base + desc.stride)),
        ]


class Controller(wiring.Component):
    """Ports: ``start`` (in, pulse) runs the whole program; ``done`` pulses one cycle after the last drain
    flush; ``layer_done`` pulses when a layer's last output write has landed (the testbench reads the
    buffers then, to find the first layer that differs from the reference). Issue outputs are valid in the
    cycle they are asserted (stage 0):

    - compute: ``issue``, ``step`` (schedule index), ``pe_step`` (PE-ROM address), ``t``, ``bank``;
      ``act_addr`` and ``inb`` (inside the map) of that issue ``ADDRESS_LATENCY`` cycles later; in a
      fixed-pattern layer, the generated weights' row: ``pat_lo`` (its local channel), ``pat_o`` (its first
      output channel, PE p adds p) and ``pat_lane`` (its first input lane, PE p adds p)
    - drain: ``drain``, ``drain_lo``, ``drain_t``, ``rq_addr``, ``out_addr``, ``out_grp`` (of bank ~``bank``)
    - per layer (registered): ``desc``, the current layer's descriptor (``contract.descriptor_layout``)

    ``hw``: a ``contract.Hardware`` (or a lowered program, of which only its sizes are used).
    """

    def __init__(self, hw: Hardware):
        self.hw = hw = hardware(hw)
        self.wd = widths(hw)
        self.layout = descriptor_layout(hw, self.wd)
        wd, t_bits = self.wd, max(1, (hw.tile - 1).bit_length())
        super().__init__({
            "start": In(1), "done": Out(1), "layer_done": Out(1), "busy": Out(1), "bank": Out(1),
            "issue": Out(1), "step": Out(wd.step), "act_addr": Out(wd.addr), "inb": Out(1),
            "pe_step": Out(wd.pe_step), "pat_lo": Out(wd.lo), "pat_o": Out(range(hw.cap.locals * hw.pe + 1)),
            "pat_lane": Out(range(hw.lanes)),
            "t": Out(t_bits),
            "drain": Out(1), "drain_lo": Out(wd.lo), "drain_t": Out(t_bits), "rq_addr": Out(wd.rq),
            "out_addr": Out(wd.addr), "out_grp": Out(unsigned(max(1, hw.lanes.bit_length()))),
            "desc": Out(self.layout),
            # with the maps in DRAM: ``act_addr`` a cycle early (its register's input), so that the top can
            # register a read address per band buffer, next to its block RAMs
            **({"act_addr_next": Out(wd.addr)} if hw.cap.band_words else {}),
            # streamed weights (rtl/dma.py): the schedule is a cache written by the read engine; a unit starts
            # once the read and write commands its descriptor names are complete, and counts itself ended
            **({"reads_done": In(range(hw.cap.read_commands + 1)), "writes_done": In(range(hw.cap.write_commands + 1)),
                "units_done": Out(range(hw.cap.layers + 1)), "waiting": Out(1), "sched_waddr": In(range(hw.cap.steps)),
                "sched_wdata": In(schedule_layout(self.wd)), "sched_we": In(1)} if hw.cap.weight_cache else {}),
        })

    def elaborate(self, platform):
        m = Module()
        hw, wd = self.hw, self.wd
        desc_rd = m.submodules.desc_rom = ImageROM(self.layout.size, hw.cap.layers, DESC_IMAGE, DESC_ROM_READ)
        entry_layout = schedule_layout(wd)
        streamed = bool(hw.cap.weight_cache)
        if streamed:
            sched = m.submodules.sched_cache = CacheRAM(entry_layout.size, hw.cap.steps, SCHED_ROM_READ)
            m.d.comb += [sched.waddr.eq(self.sched_waddr), sched.wdata.eq(self.sched_wdata),
                         sched.wen.eq(self.sched_we), sched.ren.eq(0)]  # read in TILE and COMPUTE only
        else:
            sched = m.submodules.sched_rom = ImageROM(entry_layout.size, hw.cap.steps, SCHED_IMAGE, SCHED_ROM_READ)
        entry = data.View(entry_layout, sched.data)

        desc = self.desc
        layer = Signal(range(hw.cap.layers + 1))
        tile_pix = Signal(wd.addr + 1)
        n_t = Signal(range(hw.tile + 1))
        s = Signal(wd.step + 1)
        s_next = Signal.like(s)
        t = Signal.like(self.t)
        s_last, t_last = Signal.like(s), Signal.like(t)  # set per tile: no adder before the ROM address
        pe_s = Signal(wd.pe_step + 1)
        # a fixed-pattern layer's row r of kernel-position ``tap``: its generated weights, from counters
        tap = Signal(range(hw.cap.taps + 1))
        pat_lo, pat_o, pat_lane = Signal.like(self.pat_lo), Signal.like(self.pat_o), Signal.like(self.pat_lane)
        next_row = [pat_lo.eq(pat_lo + 1), pat_o.eq(pat_o + hw.pe),
                    pat_lane.eq(Mux(pat_lane == hw.lanes - hw.pe, 0, pat_lane + hw.pe))]
        cur, tile_start, nxt = Walker("cur", wd), Walker("tile", wd), Walker("nxt", wd)
        # the drain works on its own copy of the tile it was handed
        d_lo, d_t = Signal.like(self.drain_lo), Signal.like(self.drain_t)
        d_grp, d_obase = Signal.like(self.out_grp), Signal(wd.addr + 1)
        d_tile_pix, d_n_t = Signal.like(tile_pix), Signal.like(n_t)
        d_start, d_free, d_idle = Signal(), Signal(), Signal()  # free: may take a bank; idle: writes landed
        d_wait = Signal(range(max(DRAIN_PRE_CYCLES, DRAIN_POST_CYCLES) + 1))

        m.d.comb += [self.pe_step.eq(pe_s), self.pat_lo.eq(pat_lo), self.pat_o.eq(pat_o),
                     self.pat_lane.eq(pat_lane)]
        m.d.comb += [desc_rd.addr.eq(layer), sched.addr.eq(s_next), s_next.eq(s), self.step.eq(s),
                     self.t.eq(t), self.drain_lo.eq(d_lo), self.drain_t.eq(d_t),
                     self.rq_addr.eq(desc.rq_base + d_lo), self.out_addr.eq(d_obase + d_tile_pix + d_t),
                     self.out_grp.eq(d_grp)]
        m.d.comb += cur.advance_into(nxt, desc)
        # The schedule entry leaves its block RAMs straight into registers (a block RAM's clock-to-output
        # leaves no time for logic after it: SCHED_ROM_READ); the address and bounds check come after.
        base1, iy01, ix01 = (delayed(m, v, SCHED_ROM_READ - 1, n) for v, n in (
            (cur.base, "base"), (cur.iy0, "iy0"), (cur.ix0, "ix0")))
        iy, ix = iy01 + entry.dy, ix01 + entry.dx
        act_addr = base1 + entry.off
        if hw.cap.band_words:
            m.d.comb += self.act_addr_next.eq(act_addr)
        m.d.sync += [self.act_addr.eq(act_addr),
                     self.inb.eq((iy >= 0) & (iy < desc.h_in) & (ix >= 0) & (ix < desc.w_in))]
        remaining = desc.n_pix - tile_pix
        last_tile = remaining <= hw.tile

        with m.FSM(name="compute"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [layer.eq(0), self.bank.eq(0)]
                    if streamed:
                        m.d.sync += self.units_done.eq(0)
                    m.next = "DESC0"
            # LAYER_SETUP_CYCLES: the descriptor ROM reads ``layer``, then its word is latched
            for i in range(DESC_ROM_READ):
                with m.State(f"DESC{i}"):
                    m.d.comb += self.busy.eq(1)
                    m.next = f"DESC{i + 1}"
            with m.State(f"DESC{DESC_ROM_READ}"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [desc.eq(desc_rd.data), tile_pix.eq(0)] + tile_start.reset()
                m.next = "WEIGHTS" if streamed else "TILE"
            if streamed:
                with m.State("WEIGHTS"):  # WEIGHT_WAIT_CYCLES: its weights and band are in, its output buffer free
                    m.d.comb += [self.busy.eq(1), self.waiting.eq(1)]
                    with m.If((self.reads_done >= desc.wait_r) & (self.writes_done >= desc.wait_w)):
                        m.next = "TILE"
            with m.State("TILE"):
                m.d.comb += [self.busy.eq(1), s_next.eq(desc.sched_base)]
                if streamed:
                    m.d.comb += sched.ren.eq(1)
                n_tile = Mux(last_tile, remaining, hw.tile)
                m.d.sync += [s.eq(desc.sched_base), t.eq(0), n_t.eq(n_tile),
                             s_last.eq(desc.sched_base + desc.n_steps - 1), t_last.eq(n_tile - 1),
                             pe_s.eq(desc.pe_base), tap.eq(0), pat_lo.eq(0), pat_o.eq(0), pat_lane.eq(0)]
                m.d.sync += cur.eq(tile_start)
                m.next = "COMPUTE"
            with m.State("COMPUTE"):
                m.d.comb += [self.busy.eq(1), self.issue.eq(1)]
                if streamed:
                    m.d.comb += sched.ren.eq(1)
                last_t, last_s = t == t_last, s == s_last
                with m.If(last_t):
                    m.d.sync += t.eq(0)
                    with m.If(last_s):
                        m.d.sync += tile_start.eq(nxt)
                        m.next = "HANDOFF"
                    with m.Else():
                        m.d.comb += s_next.eq(s + 1)
                        m.d.sync += [s.eq(s + 1), pe_s.eq(pe_s + 1)] + cur.eq(tile_start)
                        with m.If(tap == desc.taps - 1):
                            m.d.sync += [tap.eq(0)] + next_row
                        with m.Else():
                            m.d.sync += tap.eq(tap + 1)
                with m.Else():
                    m.d.sync += [t.eq(t + 1)] + cur.eq(nxt)
            with m.State("HANDOFF"):  # give the finished bank to the drain once it is free, swap banks
                m.d.comb += self.busy.eq(1)
                with m.If(d_free):
                    m.d.comb += d_start.eq(1)
                    m.d.sync += [self.bank.eq(~self.bank), d_tile_pix.eq(tile_pix), d_n_t.eq(n_t)]
                    with m.If(last_tile):
                        m.next = "LAYER_END"
                    with m.Else():
                        m.d.sync += tile_pix.eq(tile_pix + n_t)
                        m.next = "TILE"
            with m.State("LAYER_END"):  # the last drain's writes land before the next layer reads them
                m.d.comb += self.busy.eq(1)
                with m.If(d_idle):
                    m.d.comb += self.layer_done.eq(desc.last_pass if streamed else 1)
                    if streamed:
                        m.d.sync += self.units_done.eq(self.units_done + 1)
                    # the last layer (its last pass) is the one that writes the result
                    with m.If(desc.to_result & desc.last_pass if streamed else desc.to_result):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "DESC0"

        start_drain = [d_lo.eq(0), d_t.eq(0), d_grp.eq(0), d_obase.eq(desc.out_base if streamed else 0),
                       d_wait.eq(0)]
        # With the maps in DRAM the array spreads across the die, and ``drain`` decoded from the state was
        # the critical path to every PE's accumulator address (65.7 MHz on the LFE5U-85F): there it is a
        # register of its own, set and cleared on the transitions into and out of RUN.
        running = Signal() if hw.cap.band_words else None
        if running is not None:
            m.d.comb += self.drain.eq(running)
        with m.FSM(name="drain"):
            with m.State("IDLE"):
                m.d.comb += [d_idle.eq(1), d_free.eq(1)]
                with m.If(d_start):
                    m.d.sync += start_drain
                    m.next = "PRE"
            with m.State("PRE"):  # the bank's last additions land (compute pipeline) before it is read
                m.d.sync += d_wait.eq(d_wait + 1)
                with m.If(d_wait == DRAIN_PRE_CYCLES - 1):
                    if running is not None:
                        m.d.sync += running.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                if running is None:
                    m.d.comb += self.drain.eq(1)
                with m.If(d_t == d_n_t - 1):
                    m.d.sync += d_t.eq(0)
                    with m.If(d_lo == desc.locals - 1):
                        if running is not None:
                            m.d.sync += running.eq(0)
                        m.d.sync += d_wait.eq(0)
                        m.next = "POST"
                    with m.Else():
                        m.d.sync += d_lo.eq(d_lo + 1)
                        with m.If(d_grp == desc.lo_per_word - 1):
                            m.d.sync += [d_grp.eq(0), d_obase.eq(d_obase + (desc.out_step if streamed else desc.n_pix))]
                        with m.Else():
                            m.d.sync += d_grp.eq(d_grp + 1)
                with m.Else():
                    m.d.sync += d_t.eq(d_t + 1)
            with m.State("POST"):  # requant and output-buffer writes of the last entries complete
                m.d.comb += d_free.eq(1)
                m.d.sync += d_wait.eq(d_wait + 1)
                with m.If(d_start):  # the next bank: its drain follows these writes down the pipeline
                    m.d.sync += start_drain
                    m.next = "PRE"
                with m.Elif(d_wait == DRAIN_POST_CYCLES - 1):
                    m.next = "IDLE"
        return m
