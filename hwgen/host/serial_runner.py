"""``hwgen run``: framed images to a board's UART through pyserial, its answers checked against the integer
reference (the bytes: ``uart_protocol``)."""
from __future__ import annotations

import time

import numpy as np

from ..contract.hardware import FRAME_WEIGHTS
from ..contract.ir import Model
from .protocol import HostError, Link, check, line_seconds


def load_weights(ser, link: Link, baud: int, timeout: float, progress=print) -> float:
    """Send the weights frame of a design with the maps in DRAM and wait for its answer; returns the wall time."""
    t0 = time.monotonic()
    progress(f"loading the weights into DRAM: {len(link.weights):,} bytes, "
             f"{line_seconds(len(link.weights), baud):.1f} s on the line")
    ser.write(link.weights)
    answer = ser.read(1)
    if answer != bytes([FRAME_WEIGHTS]):
        raise HostError(f"the weights load: expected the answer 0x{FRAME_WEIGHTS:02x} within {timeout:g} s, found "
                        f"{answer.hex() or 'nothing'} (is the bitstream of this network loaded at {baud} baud?)")
    return time.monotonic() - t0


def run_serial(port: str, baud: int, link: Link, images: np.ndarray, timeout: float, progress=print):
    """(result values, engine cycles, seconds of the weights load or None) per image, sent one frame at a
    time to ``port``; the weights first, once, when they go to DRAM."""
    import serial  # pyserial

    outputs, cycles = [], []
    try:  # serial_for_url: a device name, or a pyserial URL such as socket://host:port
        ser = serial.serial_for_url(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError) as e:
        raise HostError(f"--port {port}: expected a serial device or pyserial URL that opens, found: {e}") from None
    loaded = None
    with ser:
        ser.reset_input_buffer()
        if link.weights is not None:
            ser.timeout = max(timeout, 2 * line_seconds(len(link.weights), baud))
            loaded = load_weights(ser, link, baud, timeout, progress)
            ser.timeout = timeout
        for i, image in enumerate(images):
            t0 = time.monotonic()
            ser.write(link.frame(image))
            answer = ser.read(link.answer_bytes)
            if len(answer) < link.answer_bytes:
                raise HostError(f"image {i}: expected {link.answer_bytes} answer bytes within {timeout:g} s, "
                                f"found {len(answer)} (is the bitstream of this network loaded at {baud} baud?)")
            values, n = link.parse(answer)
            outputs.append(values)
            cycles.append(n)
            progress(f"image {i}: {time.monotonic() - t0:.2f} s, {n:,} engine cycles, argmax {int(np.argmax(values))}")
    return outputs, cycles, loaded


def timing(link: Link, image: np.ndarray, baud: int, cycles: int, clock_hz: float) -> dict:
    """Per image: seconds on the line (frame in, answer back) against seconds of compute at ``clock_hz``."""
    link_s = line_seconds(len(link.frame(image)) + link.answer_bytes, baud)
    compute_s = cycles / clock_hz
    return {"link_s": round(link_s, 6), "compute_s": round(compute_s, 6), "clock_mhz": clock_hz / 1e6,
            "bound": "link" if link_s > compute_s else "compute",
            "weights_link_s": None if link.weights is None else round(line_seconds(len(link.weights), baud), 3)}


def run_board(model: Model, link: Link, images: np.ndarray, port: str, baud: int, timeout: float,
              clock_hz: float, progress=print) -> dict:
    """The content of run_result.json: what the board answered, how many images differ, and link time against
    compute time."""
    outputs, cycles, loaded = run_serial(port, baud, link, images, timeout, progress)
    problems = check(model, images, outputs)
    return {"images": len(images), "outputs": outputs, "cycles": cycles, "mismatches": len(problems),
            "mismatch_detail": problems[:5], "weights_load_s": loaded,
            "per_image": timing(link, images[0], baud, max(cycles), clock_hz)}
