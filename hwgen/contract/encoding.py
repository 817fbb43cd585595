"""The encodings of values shared by the generator, the host side and the testbenches (the ROM word layouts
built from them are in ``hardware.py``).

- Ternary code, 2 bits per lane: 0 -> 0b00, +1 -> 0b01, -1 -> 0b11 (the 2-bit two's complement).
- A lane's weight in a PE's weight ROM word (``contract.pe_word_layout``) is ``WEIGHT_BITS[pe_kind]`` bits:
  the 2-bit code (``ternary``) or an 8-bit two's complement weight (``mac``, the int8 multiply-accumulate
  baseline).
- Requant constants: ``mul`` fits ``REQUANT_MUL_BITS`` signed bits so the drain multiplier is one
  18x18 DSP-sized operand on the constant side.
- Stream beats: docs/stream.md. Input: the L activations of one pixel of one input block (lane l at bits
  [b*l, b*(l+1))), blocks outermost, then pixels in raster order. Output: one value of the last layer,
  channels fastest, then pixels.
"""
from __future__ import annotations

import math

import numpy as np

from .mapping import conv_out_size, num_blocks

CODE = {0: 0b00, 1: 0b01, -1: 0b11}
WEIGHT_BITS = {"ternary": 2, "mac": 8}  # bits of one lane's weight in a PE ROM word, per PE kind
PE_KINDS = tuple(WEIGHT_BITS)
REQUANT_MUL_BITS = 18
REQUANT_MAX_SHIFT = 40


def requant_constants(scale: float, offset: float) -> tuple[int, int, int]:
    """Integers (mul, bias, shift) with (acc*mul + bias) >> shift == round_half_up(acc*scale + offset)
    up to the rounding of ``scale`` to REQUANT_MUL_BITS signed bits. The largest shift that keeps |mul| in
    range is taken, for the most precision."""
    if not (math.isfinite(scale) and math.isfinite(offset)):
        raise ValueError(f"requant scale and offset must be finite, found {scale}, {offset}")
    limit = 1 << (REQUANT_MUL_BITS - 1)
    # the bias (offset * 2^shift) must stay well inside int64 too
    shift = min(REQUANT_MAX_SHIFT, 60 - max(0, math.ceil(math.log2(abs(offset) + 1))))
    while shift > 0 and abs(round(scale * (1 << shift))) >= limit:
        shift -= 1
    mul = int(round(scale * (1 << shift)))
    if abs(mul) >= limit:
        raise ValueError(f"requant scale {scale} needs more than {REQUANT_MUL_BITS} signed bits")
    bias = int(math.floor(offset * (1 << shift) + 0.5)) + ((1 << shift) >> 1)
    return mul, bias, shift


def average_constants(area: int, lo: int, hi: int) -> tuple[int, int, int]:
    """Requant constants (mul, bias, shift) of a global average pool over ``area`` values in [lo, hi]:
    (s*mul + bias) >> shift == floor(s/area + 1/2) for every sum s in [area*lo, area*hi] whenever REQUANT_MUL_BITS
    allow it (every area up to 16x16 of 8-bit values does; the test checks each sum). Otherwise the closest
    constants found; the float model (``train.quant.GridAvgPool``) applies these same integers either way,
    so the two sides never disagree.

    Search: from the largest shift down, mul = floor or ceil of 2^shift/area, and the bias interval that
    every sum allows. Why two periods at each end suffice: with s = q*area + r the bound a sum puts on the
    bias is linear in q for a fixed r, so its extremes lie at the smallest and largest q."""
    if area < 1 or lo > hi:
        raise ValueError(f"average pool needs area >= 1 and lo <= hi, found area {area}, range [{lo}, {hi}]")
    limit = 1 << (REQUANT_MUL_BITS - 1)
    first, last = area * lo, area * hi
    s = np.unique(np.concatenate([np.arange(first, min(first + 2 * area, last) + 1),
                                  np.arange(max(last - 2 * area, first), last + 1)])).astype(np.int64)
    want = np.floor_divide(2 * s + area, 2 * area)
    fallback = None
    for shift in range(REQUANT_MAX_SHIFT, -1, -1):
        half = (1 << shift) >> 1
        for mul in sorted({(1 << shift) // area, -(-(1 << shift) // area)}):
            if not 0 < mul < limit or abs(mul) * max(abs(first), abs(last)) >= 1 << 62:
                continue
            fallback = fallback or (mul, half, shift)
            b_lo = int((want * (1 << shift) - s * mul).max())
            b_hi = int(((want + 1) * (1 << shift) - s * mul).min()) - 1
            if b_lo <= b_hi:
                return mul, min(max(half, b_lo), b_hi), shift
    if fallback is None:
        raise ValueError(f"no requant multiplier of {REQUANT_MUL_BITS} bits averages {area} values")
    return fallback


def ternary_codes(weights: np.ndarray) -> np.ndarray:
    """int8 {-1, 0, 1} -> uint8 2-bit codes, same shape."""
    w = np.asarray(weights)
    return np.where(w == 1, CODE[1], np.where(w == -1, CODE[-1], CODE[0])).astype(np.uint8)


def check_pe_kind(pe_kind: str) -> None:
    if pe_kind not in WEIGHT_BITS:
        raise ValueError(f"pe_kind must be one of {', '.join(PE_KINDS)}, not {pe_kind!r}")


def lane_weights(weights: np.ndarray, pe_kind: str) -> np.ndarray:
    """int8 weights -> the unsigned lane fields of ``pe_kind``'s ROM word, same shape: 2-bit ternary codes,
    or the 8-bit two's complement of each weight (values outside int8 are refused, never wrapped)."""
    check_pe_kind(pe_kind)
    if pe_kind == "ternary":
        return ternary_codes(weights)
    w = np.asarray(weights, np.int64)
    bits = WEIGHT_BITS["mac"]
    if w.size and (w.min() < -(1 << (bits - 1)) or w.max() >= 1 << (bits - 1)):
        raise ValueError(f"mac weights must fit {bits} signed bits, found values in [{w.min()}, {w.max()}]")
    return (w & ((1 << bits) - 1)).astype(np.uint8)


def pack_lanes(values, width: int) -> int:
    """Pack unsigned fields (lane 0 lowest) of ``width`` bits each into one integer."""
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << width) - 1)) << (width * i)
    return word


def unpack_lanes(word: int, width: int, count: int, signed: bool) -> list[int]:
    return [unpack_value(word >> (width * i), width, signed) for i in range(count)]


def unpack_value(word: int, width: int, signed: bool) -> int:
    """The low ``width`` bits of ``word``, sign-extended if ``signed``."""
    v = word & ((1 << width) - 1)
    return v - (1 << width) if signed and v >> (width - 1) else v


def im2col(image: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """[C, H, W] -> [C*k*k, Ho, Wo]: channel c*k*k + ky*k + kx holds tap (ky, kx) of channel c, zero padded.
    The host applies it when the generator runs the first conv as a 1x1 conv (manifest ``im2col``)."""
    c, h, w = image.shape
    padded = np.zeros((c, h + 2 * padding, w + 2 * padding), np.int64)
    padded[:, padding:padding + h, padding:padding + w] = image
    ho, wo = conv_out_size(h, kernel, stride, padding), conv_out_size(w, kernel, stride, padding)
    taps = [padded[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            for ky in range(kernel) for kx in range(kernel)]
    return np.stack(taps, axis=1).reshape(c * kernel * kernel, ho, wo)


def space_to_depth(image: np.ndarray, block: int, padding: int, rows: int, cols: int) -> np.ndarray:
    """[C, H, W] -> [C*b*b, rows, cols]: channel c*b*b + py*b + px, pixel (y, x) holds the input at
    (b*y + py - padding, b*x + px - padding), zero outside it. The host applies it when the generator runs a
    strided first conv as a stride-1 conv over its b x b blocks (manifest ``space_to_depth``)."""
    c, h, w = image.shape
    padded = np.zeros((c, rows * block, cols * block), np.int64)
    keep_h, keep_w = min(h, rows * block - padding), min(w, cols * block - padding)
    padded[:, padding:padding + keep_h, padding:padding + keep_w] = image[:, :keep_h, :keep_w]
    blocks = padded.reshape(c, rows, block, cols, block).transpose(0, 2, 4, 1, 3)
    return blocks.reshape(c * block * block, rows, cols)


def pack_input(image: np.ndarray, lanes: int, bits: int, im2col_params=None, s2d_params=None) -> list[int]:
    """[C, H, W] integers -> input stream beats (channels padded with zeros to a multiple of lanes), after
    the im2col given as (kernel, stride, padding), or the space-to-depth given as (block, padding, rows,
    cols), when the build asks for it."""
    if im2col_params is not None:
        image = im2col(image, *im2col_params)
    if s2d_params is not None:
        image = space_to_depth(image, *s2d_params)
    c, h, w = image.shape
    blocks = num_blocks(c, lanes)
    padded = np.zeros((blocks * lanes, h, w), np.int64)
    padded[:c] = image
    lanes_major = padded.reshape(blocks, lanes, h * w)
    return [pack_lanes(lanes_major[j, :, p], bits) for j in range(blocks) for p in range(h * w)]


def output_stream(values: np.ndarray) -> list[int]:
    """A [C, H, W] result in the order the output stream carries it: channels fastest, then x, then y."""
    return np.asarray(values).transpose(1, 2, 0).reshape(-1).tolist()


def stream_position(k: int, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(channel, y, x) of value ``k`` of the output stream of a [C, H, W] result."""
    c, _, w = shape
    return k % c, k // c // w, k // c % w


def unpack_output(beats: list[int], shape: tuple[int, int, int], bits: int, signed: bool) -> np.ndarray:
    """Output stream beats -> [C, H, W] integers (the inverse of ``output_stream``)."""
    c, h, w = shape
    if len(beats) != c * h * w:
        raise ValueError(f"expected {c * h * w} output beats for shape {list(shape)}, found {len(beats)}")
    vals = [unpack_value(b, bits, signed) for b in beats]
    return np.array(vals, np.int64).reshape(h, w, c).transpose(2, 0, 1)


def first_mismatch(got: list[int], expected: list[int], shape: tuple[int, int, int]) -> str | None:
    """Where a streamed result first differs from the expected one, or None if they are equal."""
    for k, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            c, y, x = stream_position(k, shape)
            return f"channel {c}, pixel (y={y}, x={x}): expected {e}, got {g}"
    if len(got) != len(expected):
        return f"expected {len(expected)} values, got {len(got)}"
    return None
