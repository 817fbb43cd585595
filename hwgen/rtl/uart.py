"""A UART host link around the streaming top: 8N1 serial in and out, one framed image at a time.

Protocol (docs/synthesis.md): the host sends ``FRAME_IN`` then the image's input beats, each beat as
``Hardware.input_beat_bytes`` bytes little-endian (the beat of docs/stream.md zero-padded to whole bytes).
The device answers ``FRAME_OUT``, the output beats as ``Hardware.output_beat_bytes`` bytes each
(``out_bits`` zero-padded, little-endian) and the engine's busy cycles as ``CYCLE_BYTES`` bytes
little-endian. The host sends the next image only after the answer: the serial line has no flow control,
and bytes that arrive outside a frame are ignored until the next ``FRAME_IN`` (so is a ``FRAME_IN`` sent
while the accelerator is still busy).
"""
from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..contract.hardware import CYCLE_BYTES, FRAME_IN, FRAME_OUT, FRAME_WEIGHTS, Hardware, hardware
from .delay import delayed
from .dma import dram_bus
from .top import Top
MAX_BAUD_ERROR = 0.02  # 8N1 samples the last bit 9.5 bit times after the start edge: 2% stays well inside it


def baud_divisor(clk_hz: int, baud: int) -> int:
    """Clock cycles per bit; refuses a baud rate the clock cannot make within 2%."""
    if clk_hz < 1 or baud < 1:
        raise ValueError(f"clock and baud must be positive, found {clk_hz} Hz and {baud} baud")
    div = round(clk_hz / baud)
    if div < 4:
        raise ValueError(f"baud must be at most clock/4 = {clk_hz // 4}, found {baud}")
    error = abs(clk_hz / div - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud} is {error:.1%} off what a {clk_hz} Hz clock can make "
                         f"({clk_hz / div:.0f} baud); expected within {MAX_BAUD_ERROR:.0%}")
    return div


class UARTRx(wiring.Component):
    """Ports: ``rx`` (the line, asynchronous), ``data`` (a received byte, valid for one cycle; no
    backpressure). A byte whose stop bit is low (a framing error or a break) is dropped. Latency: the byte
    is valid about half a bit time after the middle of its stop bit."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8, always_ready=True))})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self.divisor + self.divisor // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):  # start bit: wait to the middle of data bit 0
                    m.d.sync += [timer.eq(self.divisor + self.divisor // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(bit + 1)]
                    with m.If(bit == 8):  # the stop bit
                        m.d.comb += [self.data.valid.eq(rx), self.data.payload.eq(shreg)]
                        m.next = "STOP"
                    with m.Else():
                        m.d.sync += shreg.eq(Cat(shreg[1:], rx))  # LSB first
            with m.State("STOP"):
                with m.If(rx):  # wait for the line to idle before the next start bit
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Ports: ``data`` (a byte to send, taken when ``ready``), ``tx`` (the line, idle high)."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)
        m.d.comb += self.tx.eq(shreg[0])
        with m.If(bits == 0):
            m.d.comb += self.data.ready.eq(1)
            with m.If(self.data.valid):  # start bit, 8 data bits LSB first, stop bit
                m.d.sync += [shreg.eq(Cat(0, self.data.payload, 1)), bits.eq(10), timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1), timer.eq(self.divisor - 1)]
        return m


class UARTLink(wiring.Component):
    """The accelerator (``Top``) behind a UART. Ports: ``rx`` (from the host), ``tx`` (to the host).

    ``hw`` is a ``contract.Hardware`` (or a lowered program, of which only its sizes are used), ``clk_hz``
    the frequency of the ``sync`` domain, ``baud`` the line rate (8N1). With the maps in DRAM the top's
    ``m_axi`` and ``dram_error`` are the link's too, and a ``FRAME_WEIGHTS`` frame loads the weights' DRAM
    image (answered by the same byte once it is written)."""

    def __init__(self, hw: Hardware, clk_hz: int, baud: int):
        self.hw, self.clk_hz, self.baud = hardware(hw), clk_hz, baud
        self.divisor = baud_divisor(clk_hz, baud)
        hw, cap = self.hw, self.hw.cap
        if cap.weight_cache and not cap.band_words:
            raise ValueError("a UART link loads the weights into DRAM through the maps' write port: expected "
                             "the maps in DRAM too (--maps dram), found weights alone in DRAM")
        if cap.band_words and hw.lanes * cap.act_bits % cap.dram_data_bits:
            raise ValueError(f"a weights frame carries whole DRAM beats in each map word: expected lanes x "
                             f"act_bits a multiple of {cap.dram_data_bits}, found {hw.lanes} x {cap.act_bits}")
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1),
                          **({"m_axi": Out(dram_bus(hw)), "dram_error": Out(1)} if cap.band_words else {})})

    def elaborate(self, platform):
        m = Module()
        in_bytes, out_bytes = self.hw.input_beat_bytes, self.hw.output_beat_bytes
        top = m.submodules.top = Top(self.hw)
        urx = m.submodules.rx = UARTRx(self.divisor)
        utx = m.submodules.tx = UARTTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        dram = bool(self.hw.cap.band_words)
        if dram:
            wiring.connect(m, wiring.flipped(self.m_axi), top.m_axi)
            m.d.comb += self.dram_error.eq(top.dram_error)

        # ---- host -> accelerator: bytes into beats
        # The top counts the beats of an image and is ready only while loading one: a frame ends when the
        # top stops being ready with no beat pending, so the link needs no beat count of its own.
        in_frame = Signal()
        byte_idx = Signal(range(max(2, in_bytes)))
        # a received byte is registered first: its valid enables the whole beat register, wherever the
        # placer puts the beat (beside the buffers) relative to the receiver
        byte_valid, byte = delayed(m, urx.data.valid, 1, "rx_valid"), delayed(m, urx.data.payload, 1, "rx_byte")
        beat = Signal(8 * in_bytes)
        beat_valid = Signal()
        m.d.comb += [top.inp.valid.eq(beat_valid), top.inp.payload.data.eq(beat)]
        with m.If(top.inp.ready):
            m.d.sync += beat_valid.eq(0)
        if dram:
            weights = Signal()  # the frame is a weights frame
            m.d.comb += top.inp.payload.weights.eq(weights)
        with m.If(byte_valid):
            with m.If(~in_frame):
                m.d.sync += [in_frame.eq(byte == FRAME_IN), byte_idx.eq(0)]
                if dram:
                    m.d.sync += [in_frame.eq((byte == FRAME_IN) | (byte == FRAME_WEIGHTS)),
                                 weights.eq(byte == FRAME_WEIGHTS)]
            with m.Else():
                m.d.sync += [beat.eq(Cat(beat[8:], byte)), byte_idx.eq(byte_idx + 1)]  # little-endian
                with m.If(byte_idx == in_bytes - 1):
                    m.d.sync += [beat_valid.eq(1), byte_idx.eq(0)]
        # (with the maps in DRAM: when the top stops loading, as its ready may drop within a frame)
        with m.If(~(top.loading if dram else top.inp.ready) & ~beat_valid):
            m.d.sync += in_frame.eq(0)

        # ---- accelerator -> host: a header, the output beats, the cycle count
        width = 8 * max(out_bytes, CYCLE_BYTES)
        shreg = Signal(width)
        count = Signal(range(width // 8 + 1))
        header_sent = Signal()
        cycles_due = Signal()
        with m.If(count == 0):
            with m.If(cycles_due):
                m.d.sync += [shreg.eq(top.cycles), count.eq(CYCLE_BYTES), cycles_due.eq(0)]
            with m.Elif(top.out.valid & ~header_sent):
                m.d.sync += [shreg.eq(FRAME_OUT), count.eq(1), header_sent.eq(1)]
            with m.Elif(top.out.valid):
                m.d.comb += top.out.ready.eq(1)
                m.d.sync += [shreg.eq(top.out.payload.data), count.eq(out_bytes),
                             cycles_due.eq(top.out.payload.last), header_sent.eq(~top.out.payload.last)]
        with m.Else():
            m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(shreg[:8])]
            with m.If(utx.data.ready):
                m.d.sync += [shreg.eq(shreg >> 8), count.eq(count - 1)]
        if dram:  # a weights frame is in DRAM: say so (the sender is idle then: no image is in flight)
            with m.If(top.weights_loaded):
                m.d.sync += [shreg.eq(FRAME_WEIGHTS), count.eq(1)]
        return m
