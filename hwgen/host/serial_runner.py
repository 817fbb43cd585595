"""``hwgen run``: framed images to a board's UART through pyserial, its answers checked against the integer
reference (the bytes: ``uart_protocol``)."""
from __future__ import annotations

import time

import numpy as np

from ..contract.ir import Model
from .protocol import HostError, Link, check


def run_serial(port: str, baud: int, link: Link, images: np.ndarray, timeout: float, progress=print):
    """(result values, engine cycles) per image, sent one frame at a time to ``port``."""
    import serial  # pyserial

    outputs, cycles = [], []
    try:  # serial_for_url: a device name, or a pyserial URL such as socket://host:port
        ser = serial.serial_for_url(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError) as e:
        raise HostError(f"--port {port}: expected a serial device or pyserial URL that opens, found: {e}") from None
    with ser:
        ser.reset_input_buffer()
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
    return outputs, cycles


def run_board(model: Model, link: Link, images: np.ndarray, port: str, baud: int, timeout: float,
              progress=print) -> dict:
    """The content of run_result.json: what the board answered and how many images differ."""
    outputs, cycles = run_serial(port, baud, link, images, timeout, progress)
    problems = check(model, images, outputs)
    return {"images": len(images), "outputs": outputs, "cycles": cycles, "mismatches": len(problems),
            "mismatch_detail": problems[:5]}
