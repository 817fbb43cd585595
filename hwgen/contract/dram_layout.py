"""The memory tier's part of the hardware contract (docs/dram.md): the words that lie in DRAM or in the DMA
programs' ROMs, their image names, and the engines' cycle constants, for the side that writes them
(``compile/units.py``, ``compile/dram.py``) and the side that reads them (``rtl/dma.py``). The sizes they
follow from are ``Capacity``'s (``contract/hardware.py``).
"""
from __future__ import annotations

from amaranth import Shape, unsigned
from amaranth.lib import data

from .hardware import (Hardware, Widths, addr_width, count_shape, hardware, pe_word_layout, schedule_layout)

READS_IMAGE = "reads.hex"  # when the weights stream: the read program (read_command_layout)
WRITES_IMAGE = "writes.hex"  # with maps in DRAM: the write program (write_command_layout)
WEIGHTS_IMAGE = "weights.hex"  # the DRAM image of the step words: one beat per line from address 0
RQ_IMAGE = "rq.hex"  # with streamed weights: every PE's requant words side by side in one ROM, PE 0 lowest
DMA_ROM_READ = 1  # the DMA programs' ROMs

# With streamed weights (rtl/dma.py), the compute machine waits after the descriptor until the read and write
# commands it names are complete (at least one cycle), and the read engine per command: reads its command
# word, then issues the read once what it waits for holds; the last beat's word is written the cycle after it
# arrives, and the command counts as complete the cycle after that. compile/dram.py adds these up.
AXI_OUTSTANDING = 4  # bursts an AXI4 master (rtl/axi.py) keeps in flight
WEIGHT_WAIT_CYCLES = 1
FETCH_SETUP_CYCLES = DMA_ROM_READ + 1
FETCH_ISSUE_CYCLES = 1  # the read command is taken; the splitter's first burst goes out the next cycle
FETCH_LAND_CYCLES = 2
# The write engine per command: reads its word, issues the write once the unit it waits for has ended (cycle
# c), reads the first buffer word in c + 1 (``BUFFER_READ``), holds it at c + 4 and sends its first beat in
# c + 5, one beat per cycle after; the command is complete two cycles after the last burst's response.
WRITE_FIRST_BEAT_CYCLES = 5
WRITE_DONE_CYCLES = 2


def step_word_layout(source, wd: Widths) -> data.StructLayout:
    """One step as it lies in DRAM when the weights stream (``Capacity.weight_cache``): its schedule entry, then
    one PE word per PE. A fixed-pattern layer's steps hold the entry alone (``entry_beats``)."""
    hw = hardware(source)
    return data.StructLayout({"entry": schedule_layout(wd),
                              "pe": data.ArrayLayout(pe_word_layout(hw, wd), hw.pe)})


def step_beats(source, wd: Widths) -> int:
    """DRAM beats of one step word: each starts on a beat, the lowest bits in the first beat."""
    return -(-step_word_layout(source, wd).size // hardware(source).cap.dram_data_bits)


def entry_beats(source, wd: Widths) -> int:
    """DRAM beats of a fixed-pattern layer's step: the schedule entry alone."""
    return -(-schedule_layout(wd).size // hardware(source).cap.dram_data_bits)


def map_word_beats(source) -> int:
    """DRAM beats of one map word (``lanes`` activations), when the maps go through DRAM."""
    hw = hardware(source)
    return -(-hw.lanes * hw.cap.act_bits // hw.cap.dram_data_bits)


def _buffer_index(hw: Hardware) -> Shape:
    return unsigned(max(1, (hw.cap.n_bufs - 1).bit_length()))


def read_command_layout(source, wd: Widths) -> data.StructLayout:
    """One word of ``READS_IMAGE``: a read of ``beats`` from DRAM byte address ``addr`` into the weight cache
    (step words, or schedule entries alone) or into buffer ``buf``, from word ``waddr`` on. It starts once
    ``wait_u`` units have ended and ``wait_w`` write commands are complete (compile/units.py); ``end``: the
    program's last."""
    hw = hardware(source)
    cap = hw.cap
    beats = max(cap.weight_cache * step_beats(hw, wd), (cap.buf_depth if cap.band_words else 0) * map_word_beats(hw))
    return data.StructLayout({
        "addr": unsigned(cap.dram_addr_bits), "beats": count_shape(beats), "to_cache": 1, "buf": _buffer_index(hw),
        "waddr": unsigned(max(addr_width(2 * cap.weight_cache), addr_width(cap.buf_depth))), "entry_only": 1,
        "wait_u": count_shape(cap.layers), "wait_w": count_shape(cap.write_commands), "end": 1})


def write_command_layout(source, wd: Widths) -> data.StructLayout:
    """One word of ``WRITES_IMAGE``: ``words`` map words from buffer ``buf``, word ``raddr`` on, to DRAM byte
    address ``addr``, once ``after`` units have ended; ``end``: the program's last."""
    hw = hardware(source)
    cap = hw.cap
    return data.StructLayout({
        "addr": unsigned(cap.dram_addr_bits), "words": count_shape(cap.buf_depth),
        "buf": _buffer_index(hw), "raddr": unsigned(addr_width(cap.buf_depth)), "after": count_shape(cap.layers),
        "end": 1})
