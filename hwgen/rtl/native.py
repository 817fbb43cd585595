"""An AXI4 slave on LiteDRAM's native user port (docs/dram.md, "The board"): the accelerator's AXI4 master
(rtl/axi.py) on the SDRAM controller with one register between every decision and the controller.

LiteDRAM's own AXI front end arbitrates reads and writes through a chain of combinational logic that
limits the ECP5 build to about 70 MHz; here every command comes from registers. The native port has one
command channel (``we``, a word address), write data that the controller takes some cycles after the
command, and read data in command order with no backpressure. So:

- an AR burst is accepted when the previous read burst's commands are all out; an AW burst likewise;
- one burst at a time owns the command channel, and owners alternate between reads and writes;
- a write command goes out only when its data beat is already in the W FIFO (the controller does not
  wait for write data);
- read data goes straight to R; ``rlast`` comes from the lengths of the accepted bursts. The master must
  take a beat every cycle (the read engine does): a beat it refuses sets ``overrun``;
- a burst's B response is sent once the controller has taken its last data beat.
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .axi import MAX_BURST, read_bus, write_bus

W_FIFO_DEPTH = 16  # write beats held for the controller: it takes each some cycles after its command
BURSTS = 4  # accepted bursts remembered for rlast and for B, each way


def native_bus(addr_width: int, data_width: int) -> wiring.Signature:
    """LiteDRAM's native user port as its master drives it (``addr``: in data words)."""
    return wiring.Signature({
        "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_we": Out(1), "cmd_addr": Out(addr_width),
        "wdata_valid": Out(1), "wdata_ready": In(1), "wdata_we": Out(data_width // 8), "wdata_data": Out(data_width),
        "rdata_valid": In(1), "rdata_ready": Out(1), "rdata_data": In(data_width)})


class AxiToNative(wiring.Component):
    """Ports: ``axi`` (an AXI4 slave: byte addresses of ``axi_addr_width`` bits, INCR bursts of the data
    width; IDs answered as 0), ``native`` (the master of a LiteDRAM native port of ``native_addr_width``
    word-address bits), ``overrun`` (sticky: a read beat the AXI master did not take)."""

    def __init__(self, axi_addr_width: int, native_addr_width: int, data_width: int):
        self.data_width, self.shift = data_width, (data_width // 8).bit_length() - 1
        bus = {**dict(read_bus(axi_addr_width, data_width).members.items()),
               **dict(write_bus(axi_addr_width, data_width).members.items())}
        super().__init__({"axi": In(wiring.Signature(bus)), "native": Out(native_bus(native_addr_width, data_width)),
                          "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        axi, nat = self.axi, self.native
        word = lambda addr: addr[self.shift:]  # noqa: E731
        lengths = range(MAX_BURST)  # awlen / arlen: beats - 1
        length_bits = (MAX_BURST - 1).bit_length()

        # ---- accepted bursts: the beats whose commands are still to go out
        r_addr, r_left = Signal.like(nat.cmd_addr), Signal(range(MAX_BURST + 1))
        w_addr, w_left = Signal.like(nat.cmd_addr), Signal(range(MAX_BURST + 1))
        r_lens = m.submodules.r_lens = fifo.SyncFIFOBuffered(width=length_bits, depth=BURSTS)
        w_lens = m.submodules.w_lens = fifo.SyncFIFOBuffered(width=length_bits, depth=BURSTS)
        m.d.comb += [axi.arready.eq((r_left == 0) & r_lens.w_rdy), r_lens.w_data.eq(axi.arlen),
                     r_lens.w_en.eq(axi.arvalid & axi.arready),
                     axi.awready.eq((w_left == 0) & w_lens.w_rdy), w_lens.w_data.eq(axi.awlen),
                     w_lens.w_en.eq(axi.awvalid & axi.awready)]

        # ---- write data: into the FIFO, out to the controller when it takes it
        wbuf = m.submodules.wbuf = fifo.SyncFIFOBuffered(width=self.data_width, depth=W_FIFO_DEPTH)
        m.d.comb += [wbuf.w_data.eq(axi.wdata), wbuf.w_en.eq(axi.wvalid), axi.wready.eq(wbuf.w_rdy),
                     nat.wdata_valid.eq(wbuf.r_rdy), nat.wdata_data.eq(wbuf.r_data), nat.wdata_we.eq(-1),
                     wbuf.r_en.eq(nat.wdata_ready)]
        ahead = Signal(range(W_FIFO_DEPTH + 2))  # write commands out whose beat the controller has not taken
        covered = wbuf.r_level > ahead  # the FIFO holds the beat of one more command

        # ---- the command channel, from registers; one burst owns it at a time
        cmd_valid, cmd_we, cmd_addr = Signal(), Signal(), Signal.like(nat.cmd_addr)
        m.d.comb += [nat.cmd_valid.eq(cmd_valid), nat.cmd_we.eq(cmd_we), nat.cmd_addr.eq(cmd_addr)]
        owner = Signal(2)  # 0 none, 1 a read burst, 2 a write burst
        last_was_write = Signal()
        issue_w = Signal()
        take = ~cmd_valid | nat.cmd_ready
        with m.If(take):
            m.d.sync += cmd_valid.eq(0)
            with m.If((owner == 1) & (r_left != 0)):
                m.d.sync += [cmd_valid.eq(1), cmd_we.eq(0), cmd_addr.eq(r_addr), r_addr.eq(r_addr + 1),
                             r_left.eq(r_left - 1)]
            with m.Elif((owner == 2) & (w_left != 0)):
                with m.If(covered):
                    m.d.comb += issue_w.eq(1)
                    m.d.sync += [cmd_valid.eq(1), cmd_we.eq(1), cmd_addr.eq(w_addr), w_addr.eq(w_addr + 1),
                                 w_left.eq(w_left - 1)]
            with m.Else():  # the burst is out: the other direction's turn, if it has one
                with m.If((w_left != 0) & (~last_was_write | (r_left == 0))):
                    m.d.sync += [owner.eq(2), last_was_write.eq(1)]
                with m.Elif(r_left != 0):
                    m.d.sync += [owner.eq(1), last_was_write.eq(0)]
                with m.Else():
                    m.d.sync += owner.eq(0)
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [r_addr.eq(word(axi.araddr)), r_left.eq(axi.arlen + 1)]
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += [w_addr.eq(word(axi.awaddr)), w_left.eq(axi.awlen + 1)]
        taken = nat.wdata_valid & nat.wdata_ready
        m.d.sync += ahead.eq(ahead + issue_w - taken)

        # ---- read data, with rlast from the burst lengths
        r_beat = Signal(lengths)
        rlast = r_beat == r_lens.r_data
        m.d.comb += [axi.rvalid.eq(nat.rdata_valid), axi.rdata.eq(nat.rdata_data), axi.rresp.eq(0), axi.rid.eq(0),
                     axi.rlast.eq(rlast), nat.rdata_ready.eq(1), r_lens.r_en.eq(nat.rdata_valid & rlast)]
        with m.If(nat.rdata_valid):
            m.d.sync += r_beat.eq(r_beat + 1)
            with m.If(rlast):
                m.d.sync += r_beat.eq(0)
            with m.If(~axi.rready):
                m.d.sync += self.overrun.eq(1)

        # ---- B: a burst is answered once the controller has taken its last beat
        w_beat = Signal(lengths)
        done_bursts = Signal(range(BURSTS + 1))
        wlast_taken = taken & (w_beat == w_lens.r_data)
        m.d.comb += w_lens.r_en.eq(wlast_taken)
        with m.If(taken):
            m.d.sync += w_beat.eq(w_beat + 1)
            with m.If(wlast_taken):
                m.d.sync += w_beat.eq(0)
        answered = axi.bvalid & axi.bready
        m.d.comb += [axi.bvalid.eq(done_bursts != 0), axi.bresp.eq(0), axi.bid.eq(0)]
        m.d.sync += done_bursts.eq(done_bursts + wlast_taken - answered)
        return m
