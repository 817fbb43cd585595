"""Every bit layout shared by the generator, the host side and the testbenches.

- Ternary code, 2 bits per lane: 0 -> 0b00, +1 -> 0b01, -1 -> 0b11 (the 2-bit two's complement).
- Weight ROM word of a PE: lane l's weight at bits [w*l, w*(l+1)), then the local output channel above
  them; w = ``WEIGHT_BITS[pe_kind]``: the 2-bit code (``ternary``) or an 8-bit two's complement weight
  (``mac``, the int8 multiply-accumulate baseline).
- Requant constants: ``mul`` fits ``REQUANT_MUL_BITS`` signed bits so the drain multiplier is one
  18x18 DSP-sized operand on the constant side.
- Stream beats: docs/stream.md. Input: the L activations of one pixel of one input block (lane l at bits
  [b*l, b*(l+1))), blocks outermost, then pixels in raster order. Output: one value of the last layer,
  channels fastest, then pixels.
"""
from __future__ import annotations

import math

import numpy as np

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
    mask = (1 << width) - 1
    out = [(word >> (width * i)) & mask for i in range(count)]
    return [v - (1 << width) if signed and v >> (width - 1) else v for v in out]


def im2col(image: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """[C, H, W] -> [C*k*k, Ho, Wo]: channel c*k*k + ky*k + kx holds tap (ky, kx) of channel c, zero padded.
    The host applies it when the generator runs the first conv as a 1x1 conv (manifest ``im2col``)."""
    c, h, w = image.shape
    padded = np.zeros((c, h + 2 * padding, w + 2 * padding), np.int64)
    padded[:, padding:padding + h, padding:padding + w] = image
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    taps = [padded[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            for ky in range(kernel) for kx in range(kernel)]
    return np.stack(taps, axis=1).reshape(c * kernel * kernel, ho, wo)


def pack_input(image: np.ndarray, lanes: int, bits: int, im2col_params=None) -> list[int]:
    """[C, H, W] integers -> input stream beats (channels padded with zeros to a multiple of lanes), after
    the im2col given as (kernel, stride, padding) when the build asks for it."""
    if im2col_params is not None:
        image = im2col(image, *im2col_params)
    c, h, w = image.shape
    blocks = -(-c // lanes)
    padded = np.zeros((blocks * lanes, h, w), np.int64)
    padded[:c] = image
    lanes_major = padded.reshape(blocks, lanes, h * w)
    return [pack_lanes(lanes_major[j, :, p], bits) for j in range(blocks) for p in range(h * w)]


def unpack_output(beats: list[int], shape: tuple[int, int, int], bits: int, signed: bool) -> np.ndarray:
    """Output stream beats (channels fastest, then pixels) -> [C, H, W] integers."""
    c, h, w = shape
    if len(beats) != c * h * w:
        raise ValueError(f"expected {c * h * w} output beats for shape {list(shape)}, found {len(beats)}")
    vals = [unpack_lanes(b, bits, 1, signed)[0] for b in beats]
    return np.array(vals, np.int64).reshape(h, w, c).transpose(2, 0, 1)
