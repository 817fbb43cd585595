"""AXI4 burst masters for the memory tier (docs/dram.md): a read DMA and a write DMA, each taking commands
(a byte address and a number of data-width beats) on a stream and moving the data on another.

A command is cut into INCR bursts of at most 256 beats that never cross a 4 KB boundary (AXI4's two rules).
Bursts are issued ahead of their data, up to ``outstanding`` of them; AXI returns the bursts of one ID in
order, so a small FIFO of what was issued is enough to mark each command's last beat (read) and to end each
burst's write data (write). Addresses must be aligned to the data width. Any response other than OKAY sets
the sticky ``error`` output.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract.dram_layout import AXI_OUTSTANDING

MAX_BURST = 256  # beats of one AXI4 INCR burst
BOUNDARY = 4096  # bytes: an AXI4 burst may not cross it
ID_WIDTH = 1  # one ID: bursts come back in order


def command_layout(addr_width: int, beats_width: int) -> data.StructLayout:
    return data.StructLayout({"addr": addr_width, "beats": beats_width})


def read_bus(addr_width: int, data_width: int) -> wiring.Signature:
    """The AR and R channels, as a master drives them."""
    return wiring.Signature({
        "arid": Out(ID_WIDTH), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(ID_WIDTH), "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1)})


def write_bus(addr_width: int, data_width: int) -> wiring.Signature:
    """The AW, W and B channels, as a master drives them."""
    return wiring.Signature({
        "awid": Out(ID_WIDTH), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bid": In(ID_WIDTH), "bresp": In(2), "bvalid": In(1), "bready": Out(1)})


def check_beat_bytes(beat_bytes: int) -> None:
    if beat_bytes < 1 or beat_bytes & (beat_bytes - 1) or beat_bytes > 128:
        raise ValueError(f"the data width must be a power of two of 8 to 1024 bits, found {beat_bytes * 8}")


class BurstSplitter(wiring.Component):
    """Commands in, bursts out: (address, length in beats, whether it is its command's last burst)."""

    def __init__(self, addr_width: int, beats_width: int, beat_bytes: int):
        check_beat_bytes(beat_bytes)
        self.addr_width, self.beats_width, self.beat_bytes = addr_width, beats_width, beat_bytes
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_width, beats_width))),
            "burst": Out(stream.Signature(data.StructLayout({"addr": addr_width, "len": range(1, MAX_BURST + 1),
                                                             "final": 1}))),
            "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        addr = Signal(self.addr_width)
        left = Signal(self.beats_width)  # beats of the command not yet in a burst
        per_boundary = BOUNDARY // self.beat_bytes
        # beats from addr to the next 4 KB boundary, kept as a register beside addr: computed from addr,
        # it put a subtraction at the head of the burst length's carry chains (75.6 MHz on the LFE5U-85F)
        to_boundary = Signal(range(1, per_boundary + 1), init=per_boundary)
        cap = Signal(range(MAX_BURST + 1))
        m.d.comb += cap.eq(Mux(to_boundary < MAX_BURST, to_boundary, MAX_BURST))
        length = Signal(range(MAX_BURST + 1))
        m.d.comb += length.eq(Mux(left < cap, left, cap))
        m.d.comb += [self.busy.eq(left != 0), self.cmd.ready.eq(left == 0),
                     self.burst.valid.eq(left != 0), self.burst.payload.addr.eq(addr),
                     self.burst.payload.len.eq(length), self.burst.payload.final.eq(length == left)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [addr.eq(self.cmd.payload.addr), left.eq(self.cmd.payload.beats),
                         to_boundary.eq(per_boundary - (self.cmd.payload.addr % BOUNDARY) // self.beat_bytes)]
        with m.Elif(self.burst.valid & self.burst.ready):
            # beat_bytes is a power of two: a shift, not a multiplier
            m.d.sync += [addr.eq(addr + (length << _axsize(self.beat_bytes))), left.eq(left - length),
                         to_boundary.eq(Mux(to_boundary == length, per_boundary, to_boundary - length))]
        return m


def _axsize(beat_bytes: int) -> int:
    return beat_bytes.bit_length() - 1


class _Master(wiring.Component):
    """What the reader and the writer share: the command stream cut into bursts, and the address channel
    (``ar`` or ``aw``) those bursts drive."""

    def __init__(self, addr_width: int, data_width: int, beats_width: int, outstanding: int, data_member,
                 bus: wiring.Signature):
        self.addr_width, self.data_width, self.beats_width = addr_width, data_width, beats_width
        self.outstanding = outstanding
        super().__init__({"cmd": In(stream.Signature(command_layout(addr_width, beats_width))), "data": data_member,
                          "axi": Out(bus), "busy": Out(1), "error": Out(1)})

    def _bursts(self, m: Module) -> BurstSplitter:
        split = m.submodules.split = BurstSplitter(self.addr_width, self.beats_width, self.data_width // 8)
        wiring.connect(m, wiring.flipped(self.cmd), split.cmd)
        return split

    def _address(self, channel: str, burst) -> list:
        """The fields of address channel ``channel`` for ``burst`` (its valid and ready are the caller's)."""
        field = lambda name: getattr(self.axi, f"{channel}{name}")  # noqa: E731
        return [field("id").eq(0), field("addr").eq(burst.payload.addr), field("len").eq(burst.payload.len - 1),
                field("size").eq(_axsize(self.data_width // 8)), field("burst").eq(0b01)]


class AxiReader(_Master):
    """``cmd`` (addr, beats) in, ``data`` out, ``last`` on each command's final beat."""

    def __init__(self, addr_width: int, data_width: int, beats_width: int = 16, outstanding: int = AXI_OUTSTANDING):
        super().__init__(addr_width, data_width, beats_width, outstanding,
                         Out(stream.Signature(data.StructLayout({"data": data_width, "last": 1}))),
                         read_bus(addr_width, data_width))

    def elaborate(self, platform):
        m = Module()
        split = self._bursts(m)
        finals = m.submodules.finals = fifo.SyncFIFOBuffered(width=1, depth=self.outstanding)
        axi, burst = self.axi, split.burst
        # a burst goes out when there is room to remember it
        m.d.comb += self._address("ar", burst)
        m.d.comb += [axi.arvalid.eq(burst.valid & finals.w_rdy), burst.ready.eq(axi.arready & finals.w_rdy),
                     finals.w_data.eq(burst.payload.final), finals.w_en.eq(axi.arvalid & axi.arready)]
        m.d.comb += [self.data.valid.eq(axi.rvalid), self.data.payload.data.eq(axi.rdata),
                     self.data.payload.last.eq(axi.rlast & finals.r_data), axi.rready.eq(self.data.ready),
                     finals.r_en.eq(axi.rvalid & axi.rready & axi.rlast)]
        m.d.comb += self.busy.eq(split.busy | finals.r_rdy)
        with m.If(axi.rvalid & axi.rready & (axi.rresp != 0)):
            m.d.sync += self.error.eq(1)
        return m


class AxiWriter(_Master):
    """``cmd`` (addr, beats) in and ``data`` in: each command's beats written in order. ``busy`` stays high
    until every burst's write response has come back."""

    def __init__(self, addr_width: int, data_width: int, beats_width: int = 16, outstanding: int = AXI_OUTSTANDING):
        super().__init__(addr_width, data_width, beats_width, outstanding, In(stream.Signature(data_width)),
                         write_bus(addr_width, data_width))

    def elaborate(self, platform):
        m = Module()
        split = self._bursts(m)
        lengths = m.submodules.lengths = fifo.SyncFIFOBuffered(width=8, depth=self.outstanding)
        axi, burst = self.axi, split.burst
        pending = Signal(range(2 * self.outstanding + 1))  # bursts issued whose response has not come back
        room = pending < self.outstanding
        m.d.comb += self._address("aw", burst)
        m.d.comb += [axi.awvalid.eq(burst.valid & lengths.w_rdy & room),
                     burst.ready.eq(axi.awready & lengths.w_rdy & room),
                     lengths.w_data.eq(burst.payload.len - 1), lengths.w_en.eq(axi.awvalid & axi.awready)]
        # write data only for a burst whose address has gone out: its length ends it
        beat = Signal(8)
        m.d.comb += [axi.wdata.eq(self.data.payload), axi.wstrb.eq(-1), axi.wlast.eq(beat == lengths.r_data),
                     axi.wvalid.eq(self.data.valid & lengths.r_rdy), self.data.ready.eq(axi.wready & lengths.r_rdy),
                     lengths.r_en.eq(axi.wvalid & axi.wready & axi.wlast)]
        with m.If(axi.wvalid & axi.wready):
            m.d.sync += beat.eq(Mux(axi.wlast, 0, beat + 1))
        m.d.comb += axi.bready.eq(1)
        issued, answered = axi.awvalid & axi.awready, axi.bvalid & axi.bready
        m.d.sync += pending.eq(pending + issued - answered)
        with m.If(answered & (axi.bresp != 0)):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.busy.eq(split.busy | (pending != 0))
        return m


class DmaPair(wiring.Component):
    """A reader and a writer on one AXI4 port (``m_axi``), the way the accelerator will hold them."""

    def __init__(self, addr_width: int, data_width: int, beats_width: int = 12):
        self.reader = AxiReader(addr_width, data_width, beats_width)
        self.writer = AxiWriter(addr_width, data_width, beats_width)
        bus = {**dict(read_bus(addr_width, data_width).members.items()),
               **dict(write_bus(addr_width, data_width).members.items())}
        super().__init__({"rcmd": self.reader.signature.members["cmd"], "rdata": self.reader.signature.members["data"],
                          "wcmd": self.writer.signature.members["cmd"], "wdata": self.writer.signature.members["data"],
                          "m_axi": Out(wiring.Signature(bus)), "r_busy": Out(1), "w_busy": Out(1),
                          "r_error": Out(1), "w_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader, m.submodules.writer = self.reader, self.writer
        for outer, inner in [(self.rcmd, self.reader.cmd), (self.wcmd, self.writer.cmd),
                             (self.wdata, self.writer.data)]:
            wiring.connect(m, wiring.flipped(outer), inner)
        wiring.connect(m, self.reader.data, wiring.flipped(self.rdata))
        for dma in (self.reader, self.writer):
            for name, member in dma.axi.signature.members.items():
                ours, theirs = getattr(self.m_axi, name), getattr(dma.axi, name)
                m.d.comb += ours.eq(theirs) if member.flow == wiring.Out else theirs.eq(ours)
        m.d.comb += [self.r_busy.eq(self.reader.busy), self.w_busy.eq(self.writer.busy),
                     self.r_error.eq(self.reader.error), self.w_error.eq(self.writer.error)]
        return m
