"""The hardware contract: everything the Verilog is a function of, declared once for the side that fills the
ROM images (``compile/roms.py``, ``build/generate.py``) and the side that reads them (``rtl/``).

- ``Hardware``: the sizes (pe, lanes, tile, pe_kind and the ``Capacity``). Programs with equal ``Hardware``
  get the same Verilog, so one compiled model runs them all; ``Widths`` follow from it.
- Every ROM word as an ``amaranth.lib.data.StructLayout``: schedule entry, PE weight word, requant word,
  layer descriptor, net word. ``packer`` fills a layout (refusing values that do not fit) and the RTL
  reads the same layout through a ``data.View`` of the ROM's data.
- The ROM image names and read latencies, the images' bank layout (``rom_layout``, ``hex_image``), the
  pipeline stage depths, the controller's cycles per layer and tile, and the width of a PE's sum.
- The sizes of the memory tier (``Capacity.weight_cache``, ``band_words``, ...); its words and timings are
  in ``contract/dram_layout.py``.

Only Amaranth and ``encoding`` are imported here (no lowering, no torch): ``rtl/`` imports nothing else of
hwgen (tests/test_layering.py).
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any, Callable

from amaranth import Shape, signed, unsigned
from amaranth.lib import data

from .encoding import REQUANT_MUL_BITS, WEIGHT_BITS, check_pe_kind

# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Capacity:
    """The sizes the hardware is generated from: the Verilog depends only on these, ``pe``, ``lanes`` and
    ``tile``; the network itself (descriptors, schedule, weights, requant) lives in the ROM images. A build
    normally uses its program's own sizes (``lower.own_capacity``); ``lower(..., capacity=)`` fits a network
    into given sizes, so one compiled simulation model runs every network within them (docs/verification.md)."""

    layers: int  # descriptor ROM words
    steps: int  # schedule ROM words
    rq_words: int  # requant ROM words per PE
    locals: int  # output channels per PE in one layer
    dim: int  # largest map height or width
    buf_depth: int  # words of each activation buffer
    res_depth: int  # words of the result memory
    n_bufs: int
    act_bits: int
    out_bits: int
    acc_bits: int
    bias_bits: int
    shift_bits: int
    # the controller's coordinates and address offsets hold these (widths); None: as large as dim
    reach: int | None = None  # largest distance of a kernel tap from its output pixel's anchor
    stride: int | None = None  # largest stride
    # PE ROM words: the steps of layers with stored weights (fixed-pattern layers' words are generated);
    # taps: the most kernel positions of such a layer; None: steps, and dim * dim
    pe_steps: int | None = None
    taps: int | None = None
    # weights from DRAM (docs/dram.md): step words per half of the double-buffered weight cache, which then
    # replaces the schedule and PE ROMs (steps = pe_steps = 2 * weight_cache); 0: weights in ROM. The AXI4
    # read port's data and byte-address widths.
    weight_cache: int = 0
    dram_data_bits: int = 16
    dram_addr_bits: int = 25
    # feature maps in DRAM (compile/units.py): words of each of the two input band buffers (n_bufs = 6,
    # buf_depth the largest of the six); 0: maps on chip. The DMA programs' lengths (their ROMs' depths).
    band_words: int = 0
    out_band_words: int = 0  # of the four residual and output band buffers (0: band_words)
    read_commands: int = 0
    write_commands: int = 0
    # with the weights streamed: output channels per PE in one pass (compile/units.py cuts wider layers), so
    # the accumulators hold acc_locals x tile entries; 0: locals
    acc_locals: int = 0

    def __post_init__(self):
        defaults = {"reach": self.dim, "stride": self.dim, "pe_steps": self.steps, "taps": self.dim * self.dim}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def to_json(self) -> dict:
        """The fields, without the DRAM port's when the weights are in ROM (so such builds' manifests are what
        they were before the memory tier)."""
        fields = asdict(self)
        if not self.weight_cache:
            for name in DRAM_FIELDS:
                del fields[name]
        elif not self.acc_locals:  # (as before it existed)
            del fields["acc_locals"]
        return fields

    @property
    def accumulator_locals(self) -> int:
        """Output channels per PE that the accumulators hold (``acc_locals`` x ``tile`` entries)."""
        return self.acc_locals or self.locals


DRAM_FIELDS = ("weight_cache", "dram_data_bits", "dram_addr_bits", "band_words", "out_band_words", "read_commands",
               "write_commands", "acc_locals")


@dataclass(frozen=True)
class Hardware:
    """The sizes the RTL is generated from, and nothing of the network (that lives in the ROM images)."""

    pe: int
    lanes: int
    tile: int
    pe_kind: str  # encoding.PE_KINDS
    cap: Capacity  # every program fitted into this hardware lies within these sizes

    @classmethod
    def of_manifest(cls, manifest: dict) -> "Hardware":
        """The hardware a build's manifest.json was built for (a manifest without pe_kind is ternary)."""
        return cls(manifest["pe"], manifest["lanes"], manifest["tile"], manifest.get("pe_kind", "ternary"),
                   Capacity(**manifest["capacity"]))

    def to_json(self) -> dict:
        return {**asdict(self), "cap": self.cap.to_json()}

    @classmethod
    def from_json(cls, fields: dict) -> "Hardware":
        return cls(**{**fields, "cap": Capacity(**fields["cap"])})

    @property
    def clamp_bits(self) -> int:
        """Width of a requantized value before it is stored: an activation or a result."""
        return max(self.cap.act_bits, self.cap.out_bits)

    # A byte link (the UART, rtl/uart.py and hwgen.host.protocol) carries each beat zero-padded to whole bytes.
    def band_depths(self) -> tuple[int, ...]:
        """Words of each activation buffer: with the maps in DRAM, two input band buffers, then four for
        residual and output bands (compile/units.py); otherwise ``n_bufs`` of ``buf_depth``."""
        c = self.cap
        if c.band_words:
            return (c.band_words,) * 2 + (c.out_band_words or c.band_words,) * 4
        return (c.buf_depth,) * c.n_bufs

    @property
    def input_beat_bytes(self) -> int:
        """Bytes of one input beat: ``lanes`` activations of ``act_bits``."""
        return -(-self.lanes * self.cap.act_bits // 8)

    @property
    def output_beat_bytes(self) -> int:
        """Bytes of one output beat: one result value of ``out_bits``."""
        return -(-self.cap.out_bits // 8)


# The top's ``cycles`` port (busy cycles of one image: ResNet-18 at 224x224 takes 5.6 M) and the UART link's
# framing (rtl/uart.py sends, hwgen.host.protocol reads): a frame marker byte, then the beats, and an answer
# ends with the cycle count in whole bytes. With the maps in DRAM the host first loads the weights' DRAM
# image once, in a FRAME_WEIGHTS frame of map words, and the device answers it with the same byte.
CYCLE_COUNTER_BITS = 40
FRAME_IN = 0xA5
FRAME_OUT = 0x5A
FRAME_WEIGHTS = 0xC3
CYCLE_BYTES = -(-CYCLE_COUNTER_BITS // 8)


def hardware(source) -> Hardware:
    """``source`` if it is a ``Hardware``, else the ``Hardware`` of a lowered program (``lower.Program``):
    its sizes only, so what is built from it cannot depend on the network."""
    if isinstance(source, Hardware):
        return source
    if getattr(source, "cap", None) is None:
        raise TypeError(f"expected a Hardware or a lowered program with a capacity, found {type(source).__name__}")
    return Hardware(source.pe, source.lanes, source.tile, source.pe_kind, source.cap)


def partial_width(lanes: int, act_bits: int, pe_kind: str = "ternary") -> int:
    """Signed width of one PE's sum for any weights of its kind: ``lanes`` products of an activation in
    [-2^act_bits, 2^act_bits] and a weight of magnitude at most 1 (ternary) or 2^7 (mac, int8)."""
    check_pe_kind(pe_kind)
    weight_log2 = 0 if pe_kind == "ternary" else WEIGHT_BITS[pe_kind] - 1
    return act_bits + 2 + weight_log2 + (lanes - 1).bit_length()


@dataclass(frozen=True)
class Widths:
    """Field widths of descriptors and schedule entries, derived from the capacity."""

    dim: int  # signed coordinates within a map and tap offsets (dy, dx)
    addr: int  # buffer addresses
    off: int  # signed schedule offsets
    step: int  # schedule addresses
    pe_step: int  # PE-ROM addresses
    lo: int  # local channel index
    rq: int  # requant ROM addresses
    stride: int  # descriptor stride
    row: int  # descriptor row_step (stride * w_in)


def _signed_bits(magnitude: int) -> int:
    return magnitude.bit_length() + 1


def widths(source) -> Widths:
    """From the hardware sizes only (``source`` as for ``hardware``), so that images of any program fitted
    into the same capacity have the same layout. Each width holds every value its field can take within the
    capacity; the ``max`` keeps the layouts of networks whose values fit the map-size widths."""
    c = hardware(source).cap
    addr = max(1, (max(c.buf_depth, c.res_depth) - 1).bit_length())
    dim = max(c.dim.bit_length() + 2, _signed_bits(c.reach))
    # j*H*W + dy*W + dx: the block part is below buf_depth, |dy*W + dx| at most reach * (dim + 1)
    off = max(addr + 2, _signed_bits(c.buf_depth - 1 + c.reach * (c.dim + 1)))
    return Widths(dim=dim, addr=addr, off=off, step=max(1, c.steps.bit_length()),
                  pe_step=max(1, c.pe_steps.bit_length()),
                  lo=max(1, (c.locals - 1).bit_length()), rq=max(1, c.rq_words.bit_length()),
                  stride=max(dim, c.stride.bit_length()), row=max(addr + 2, (c.stride * c.dim).bit_length()))


# ---------------------------------------------------------------- ROM words, lowest field first


def schedule_layout(wd: Widths) -> data.StructLayout:
    """One schedule entry per step: the buffer offset j*H*W + dy*w_in + dx of the tap, and (dy, dx) for the
    bounds check that zero-pads the borders."""
    return data.StructLayout({"off": signed(wd.off), "dy": signed(wd.dim), "dx": signed(wd.dim)})


def pe_word_layout(source, wd: Widths) -> data.StructLayout:
    """One PE-ROM word per step: the L lane weights of the PE's group at that kernel position (lane 0
    lowest; ``encoding.lane_weights``) and its local output channel."""
    hw = hardware(source)
    return data.StructLayout({"weights": data.ArrayLayout(unsigned(WEIGHT_BITS[hw.pe_kind]), hw.lanes),
                              "lo": unsigned(wd.lo)})


def requant_layout(source) -> data.StructLayout:
    """One requant word per local output channel: y = clamp(((acc * mul + bias) >> shift) + res)."""
    cap = hardware(source).cap
    return data.StructLayout({"mul": signed(REQUANT_MUL_BITS), "bias": signed(cap.bias_bits),
                              "shift": unsigned(cap.shift_bits)})


def count_shape(n: int) -> Shape:
    """The shape of a count from 0 to ``n``."""
    return unsigned(max(1, n.bit_length()))


def descriptor_layout(source, wd: Widths) -> data.StructLayout:
    """One descriptor per layer, read by the controller (rtl/controller.py) and filled by
    ``roms.descriptors``."""
    hw = hardware(source)
    count = count_shape
    buf = unsigned(max(1, (hw.cap.n_bufs - 1).bit_length()))
    return data.StructLayout({
        "in_buf": buf, "out_buf": buf, "to_result": 1, "has_res": 1, "res_buf": buf, "res_signed": 1,
        "max_mode": 1, "in_signed": 1,
        "h_in": unsigned(wd.dim), "w_in": unsigned(wd.dim), "w_out": unsigned(wd.dim),
        "n_pix": unsigned(wd.addr + 1), "stride": unsigned(wd.stride), "row_step": unsigned(wd.row),
        "n_steps": unsigned(wd.step + 1), "sched_base": unsigned(wd.step + 1),
        "locals": unsigned(wd.lo + 1), "lo_per_word": count(hw.lanes), "rq_base": unsigned(wd.rq + 1),
        "lo": signed(hw.clamp_bits + 1), "hi": signed(hw.clamp_bits + 1),
        # stored weights start at PE-ROM word pe_base; a fixed-pattern layer's (pattern) are generated: the
        # identity on its first ``channels`` channels, repeated over its ``taps`` kernel positions
        "pe_base": unsigned(wd.pe_step + 1), "pattern": 1, "taps": count(hw.cap.taps),
        "channels": count(hw.cap.locals * hw.pe),
        # streamed weights: a layer larger than half the weight cache runs in passes over slices of its output
        # channels, one descriptor each; a pass's first output word is out_base, and only a layer's last pass
        # ends it (layer_done, and done after the last layer)
        # and it starts once ``wait_r`` read and ``wait_w`` write commands are complete (compile/units.py)
        # (out_step apart: a band of the last layer writes its rows into the result memory of the whole map)
        **({"out_base": unsigned(wd.addr + 1), "out_step": unsigned(wd.addr + 1), "last_pass": 1,
            "wait_r": count_shape(hw.cap.read_commands),
            "wait_w": count_shape(hw.cap.write_commands)} if hw.cap.weight_cache else {}),
    })


def net_layout(source) -> data.StructLayout:
    """The one word of ``NET_IMAGE``: the stream sizes of the network, so that they are not Verilog constants."""
    hw = hardware(source)
    cap = hw.cap
    if cap.band_words:  # the input goes to DRAM, at in_addr; a weights frame holds weight_words map words
        return data.StructLayout({"in_beats": unsigned(cap.dram_addr_bits), "out_c": range(cap.locals * hw.pe + 1),
                                  "out_pix": range(cap.res_depth + 1), "in_addr": unsigned(cap.dram_addr_bits),
                                  "weight_words": unsigned(cap.dram_addr_bits)})
    return data.StructLayout({"in_beats": range(cap.buf_depth + 1), "out_c": range(cap.locals * hw.pe + 1),
                              "out_pix": range(cap.res_depth + 1)})


def pe_rom_width(source, wd: Widths) -> int:
    return pe_word_layout(source, wd).size


def rq_width(source) -> int:
    return requant_layout(source).size


def packer(layout: data.Layout) -> Callable[[Any], int]:
    """The function packing values into one word of ``layout``: a dict of every field of a StructLayout, a
    sequence for an ArrayLayout, an integer for a plain shape. A value its field cannot hold is refused
    (Amaranth's ``layout.const`` would keep its low bits)."""
    return _packer(layout, "")


def pack_struct(layout: data.StructLayout, values: dict) -> int:
    """One word of ``layout`` holding ``values`` (``packer``)."""
    return packer(layout)(values)


def _packer(shape, name: str) -> Callable[[Any], int]:
    if isinstance(shape, data.StructLayout):
        fields = [(field.offset, _packer(field.shape, f"{name}.{key}" if name else key)) for key, field in shape]
        keys = [key for key, _ in shape]
        key_set = set(keys)

        def pack_fields(values) -> int:
            if set(values) != key_set:
                where = f"field {name}: " if name else ""
                raise ValueError(f"{where}expected the fields {', '.join(keys)}, found {', '.join(map(str, values))}")
            word = 0
            for (offset, pack), key in zip(fields, keys):
                word |= pack(values[key]) << offset
            return word
        return pack_fields
    if isinstance(shape, data.ArrayLayout):
        packs = [_packer(shape.elem_shape, f"{name}[{i}]") for i in range(shape.length)]
        elem_width = Shape.cast(shape.elem_shape).width

        def pack_elements(values) -> int:
            if len(values) != shape.length:
                raise ValueError(f"field {name}: expected {shape.length} elements, found {len(values)}")
            word = 0
            for i, (pack, value) in enumerate(zip(packs, values)):
                word |= pack(value) << (i * elem_width)
            return word
        return pack_elements
    shape = Shape.cast(shape)
    width = shape.width
    lo, hi = (-(1 << (width - 1)), 1 << (width - 1)) if shape.signed else (0, 1 << width)
    mask = (1 << width) - 1

    def pack_value(value) -> int:
        try:
            v = operator.index(value)
        except TypeError:
            raise TypeError(f"field {name}: expected an integer, found {value!r}") from None
        if not lo <= v < hi:
            raise OverflowError(f"field {name}: {v} does not fit {shape!r}")
        return v & mask
    return pack_value


# ---------------------------------------------------------------- ROM images and pipeline

SCHED_IMAGE = "sched.hex"
DESC_IMAGE = "desc.hex"
NET_IMAGE = "net.hex"


def pe_image(p: int) -> str:
    return f"pe{p}.hex"


def rq_image(p: int) -> str:
    return f"rq{p}.hex"


# Read latencies of the ROMs the images are laid out for (rom_layout banks a 2-cycle ROM): block RAM
# read, then a register at each block RAM.
SCHED_ROM_READ = 2
PE_ROM_READ = 2
DESC_ROM_READ = 1
BUFFER_READ = 2  # activation (and band) buffers: block RAM read, then a register right at its output

# Pipeline depths in cycles after the controller issues (rtl/top.py adds them up from its stages):
COMPUTE_WRITE_STAGE = 9  # a compute issue's sum is written into its accumulator entry
DRAIN_READ_STAGE = 1  # a drain issue reads its accumulator entry
DRAIN_WRITE_STAGE = 8  # and its requantized value is written to the output buffer
# so the drain machine waits before it reads a bank until the bank's last sums are written, and a layer
# ends when its last outputs are written (a drain may start while the previous one's writes are in flight)
DRAIN_PRE_CYCLES = COMPUTE_WRITE_STAGE - 1 - DRAIN_READ_STAGE
DRAIN_POST_CYCLES = DRAIN_WRITE_STAGE

# The compute machine's path through a layer (rtl/controller.py), in cycles; lower.layer_cycles adds them up.
LAYER_SETUP_CYCLES = DESC_ROM_READ + 1  # the DESC states: the descriptor ROM reads the layer, then its word is latched
# Each of these is one FSM state, so they count states and cannot set the RTL: tests/test_rtl_units.py runs
# the controller against the cycle model (and every Verilator run checks cycles == predicted).
TILE_SETUP_CYCLES = 1  # TILE: the tile's step and pixel counters are loaded
HANDOFF_CYCLES = 1  # HANDOFF: the bank goes to the drain machine (when that is free)
LAYER_END_CYCLES = 1  # LAYER_END: the cycle that sees the last drain's writes landed

# ---------------------------------------------------------------- the images' bank layout


def addr_width(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


ROM_BANK_BITS = 9  # 512 words: the shallowest ECP5 block RAM shape (512 x 36), so a bank has no depth mux


def rom_layout(depth: int, read_latency: int) -> tuple[int, int]:
    """(banks, row_bits) of a ROM: a ROM read in two cycles and deeper than one bank is stored as banks of
    ``2**row_bits`` words side by side (see hwgen_rom); any other ROM is one bank of ``depth`` words."""
    if read_latency == 2 and depth > 1 << ROM_BANK_BITS:
        return -(-depth >> ROM_BANK_BITS), ROM_BANK_BITS
    return 1, addr_width(depth)


def rom_word_position(word: int, width: int, depth: int, read_latency: int) -> tuple[int, int]:
    """(line of the image, lowest bit in that line) of ROM word ``word``."""
    banks, row_bits = rom_layout(depth, read_latency)
    if banks == 1:
        return word, 0
    return word & ((1 << row_bits) - 1), (word >> row_bits) * width


def hex_image(words: list[int], width: int, depth: int | None = None, read_latency: int = 1) -> str:
    """The text of a ``$readmemh`` image: one zero-padded word per line, or, for a banked ROM of ``depth``
    words (``rom_layout``), the banks' words side by side."""
    limit = 1 << width
    for i, w in enumerate(words):
        if not 0 <= w < limit:
            raise ValueError(f"ROM word {i} is {w}, outside {width} unsigned bits")
    banks, row_bits = rom_layout(depth or len(words), read_latency)
    if banks > 1:
        if len(words) > depth:
            raise ValueError(f"{len(words)} ROM words do not fit a ROM of {depth}")
        rows = 1 << row_bits
        words = [sum(words[k] << (b * width) for b, k in enumerate(range(r, len(words), rows)))
                 for r in range(rows)]
    digits = max(1, -(-banks * width // 4))
    return "".join(f"{w:0{digits}x}\n" for w in words) or "0\n"
