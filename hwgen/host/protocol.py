"""The host side of the UART protocol (rtl/uart.py, docs/synthesis.md): an image as a frame of bytes, an
answer's bytes as result values and engine cycles, and the check of results against the integer
reference. Used by the serial runner (``hwgen run``) and by the link's simulation (``uart_sim``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract import encoding
from ..contract.hardware import CYCLE_BYTES, FRAME_IN, FRAME_OUT, FRAME_WEIGHTS, Hardware, hardware
from ..contract.ir import Model
from ..compile.lower import Program


class HostError(ValueError):
    pass


@dataclass(frozen=True)
class Link:
    """What the host needs to frame an image and read its answer."""
    hw: Hardware
    out_signed: bool
    output_beats: int
    im2col: tuple | None
    weights: bytes | None = None  # with the maps in DRAM: the weights frame, sent once before the images
    space_to_depth: tuple | None = None

    @classmethod
    def of(cls, prog: Program) -> "Link":
        return cls(hardware(prog), prog.out_signed, prog.output_beats, prog.im2col,
                   weights_frame(prog) if prog.cap.band_words else None, prog.space_to_depth)

    @property
    def in_bytes(self) -> int:
        return self.hw.input_beat_bytes

    @property
    def out_bytes(self) -> int:
        return self.hw.output_beat_bytes

    @property
    def answer_bytes(self) -> int:
        return 1 + self.output_beats * self.out_bytes + CYCLE_BYTES

    def frame(self, image: np.ndarray) -> bytes:
        beats = encoding.pack_input(image, self.hw.lanes, self.hw.cap.act_bits, self.im2col, self.space_to_depth)
        return bytes([FRAME_IN]) + b"".join(b.to_bytes(self.in_bytes, "little") for b in beats)

    def parse(self, answer: bytes) -> tuple[list[int], int]:
        """(result values in stream order, engine cycles) of one answer."""
        if len(answer) != self.answer_bytes:
            raise HostError(f"an answer must be {self.answer_bytes} bytes, found {len(answer)}")
        if answer[0] != FRAME_OUT:
            raise HostError(f"an answer must start with 0x{FRAME_OUT:02x}, found 0x{answer[0]:02x}")
        beats = [int.from_bytes(answer[1 + k * self.out_bytes:1 + (k + 1) * self.out_bytes], "little")
                 for k in range(self.output_beats)]
        values = [encoding.unpack_value(b, self.hw.cap.out_bits, self.out_signed) for b in beats]
        return values, int.from_bytes(answer[-CYCLE_BYTES:], "little")


def weights_frame(prog: Program) -> bytes:
    """``FRAME_WEIGHTS`` and the weights' DRAM image (``compile.dram.dram_image``) as map words of
    ``input_beat_bytes`` each, beat b of a word at its bits [b * dram_data_bits, ...), the last word padded
    with zeros (``units.weight_words``). The device answers the byte ``FRAME_WEIGHTS`` once it is in DRAM."""
    from ..compile.dram import dram_image
    from ..compile.units import weight_words, word_beats

    hw, per_word = hardware(prog), word_beats(prog)
    beats = dram_image(prog)
    beats += [0] * (weight_words(prog) * per_word - len(beats))
    width = hw.cap.dram_data_bits
    words = (sum(b << (k * width) for k, b in enumerate(beats[i:i + per_word])) for i in range(0, len(beats), per_word))
    return bytes([FRAME_WEIGHTS]) + b"".join(w.to_bytes(hw.input_beat_bytes, "little") for w in words)


def line_seconds(n_bytes: int, baud: int) -> float:
    """Seconds on the line for ``n_bytes``: 10 bit times a byte (8N1)."""
    return n_bytes * 10 / baud


def check(model: Model, images: np.ndarray, got: list[list[int]]) -> list[str]:
    """One line per image whose results differ from the reference."""
    from ..contract.reference import expected_beats  # torch: only when checking

    shape = model.layers[-1].out_shape
    return [f"image {i}: {encoding.first_mismatch(g, e, shape)}" for i, (g, e) in
            enumerate(zip(got, expected_beats(model, images))) if g != e]
