"""The host side of the UART link (protocol in rtl/uart.py and docs/synthesis.md): frames images, reads the
answers, and checks them against the integer reference. ``run`` talks to a board through pyserial;
``simulate_uart`` runs the same bytes through the link's Verilog in Verilator (cocotb, sim/tb_uart.py)."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import encoding
from .build import BuildConfig, images as rom_images
from .ir import Model
from .lower import Program
from .rtl.extmem import MEM_VERILOG
from .rtl.uart import CYCLE_BYTES, FRAME_IN, FRAME_OUT, UARTLink

UART_TOP = "hwgen_uart"
TESTBENCH = "sim.tb_uart"


class HostError(ValueError):
    pass


@dataclass(frozen=True)
class Link:
    """What the host needs to frame an image and read its answer."""
    lanes: int
    act_bits: int
    out_bits: int
    out_signed: bool
    output_beats: int
    im2col: tuple | None

    @classmethod
    def of(cls, prog: Program) -> "Link":
        return cls(prog.lanes, prog.act_bits, prog.out_bits, prog.out_signed, prog.output_beats, prog.im2col)

    @property
    def in_bytes(self) -> int:
        return -(-self.lanes * self.act_bits // 8)

    @property
    def out_bytes(self) -> int:
        return -(-self.out_bits // 8)

    @property
    def answer_bytes(self) -> int:
        return 1 + self.output_beats * self.out_bytes + CYCLE_BYTES

    def frame(self, image: np.ndarray) -> bytes:
        beats = encoding.pack_input(image, self.lanes, self.act_bits, self.im2col)
        return bytes([FRAME_IN]) + b"".join(b.to_bytes(self.in_bytes, "little") for b in beats)

    def parse(self, answer: bytes) -> tuple[list[int], int]:
        """(result values in stream order, engine cycles) of one answer."""
        if len(answer) != self.answer_bytes:
            raise HostError(f"an answer must be {self.answer_bytes} bytes, found {len(answer)}")
        if answer[0] != FRAME_OUT:
            raise HostError(f"an answer must start with 0x{FRAME_OUT:02x}, found 0x{answer[0]:02x}")
        values = []
        for k in range(self.output_beats):
            raw = int.from_bytes(answer[1 + k * self.out_bytes:1 + (k + 1) * self.out_bytes], "little")
            raw &= (1 << self.out_bits) - 1
            values.append(raw - (1 << self.out_bits) if self.out_signed and raw >> (self.out_bits - 1) else raw)
        return values, int.from_bytes(answer[-CYCLE_BYTES:], "little")


def check(model: Model, images: np.ndarray, got: list[list[int]]) -> list[str]:
    """One line per image that differs from the reference."""
    from .simulate import expected_beats, first_mismatch

    shape = model.layers[-1].out_shape
    return [f"image {i}: {first_mismatch(g, e, shape)}" for i, (g, e) in
            enumerate(zip(got, expected_beats(model, images))) if g != e]


def run_serial(port: str, baud: int, link: Link, images: np.ndarray, timeout: float, progress=print):
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


def load_images(path: Path, model: Model) -> np.ndarray:
    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise HostError(f"--images {path}: not a readable .npy file ({e})") from None
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.input.shape):
        raise HostError(f"--images must hold [K, {', '.join(map(str, model.input.shape))}] images, "
                        f"found shape {list(images.shape)}")
    if not np.issubdtype(images.dtype, np.integer):
        raise HostError(f"--images must hold integers, found {images.dtype}")
    if len(images) == 0:
        raise HostError(f"--images must hold at least one image, found none in {path}")
    return images.astype(np.int64)


def add_arguments(p) -> None:
    p.add_argument("--port", required=True, help="serial device of the board's UART (e.g. /dev/ttyUSB0) or a "
                   "pyserial URL (socket://host:port)")
    p.add_argument("--images", type=Path, required=True, help=".npy of integer images [K, C, H, W]")
    p.add_argument("--count", type=int, help="send only the first COUNT images")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate of the bitstream (default 115200)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")


def main(args, model: Model, build_cfg: BuildConfig) -> int:
    if args.count is not None and args.count < 1:
        raise HostError(f"--count must be a positive integer, found {args.count}")
    images = load_images(args.images, model)[:args.count]
    link = Link.of(build_cfg.lower(model))
    print(f"sending {len(images)} images to {args.port} at {args.baud} baud "
          f"({len(link.frame(images[0]))} bytes each, {link.answer_bytes} back)", flush=True)
    outputs, cycles = run_serial(args.port, args.baud, link, images, args.timeout,
                                 lambda message: print(f"  {message}", flush=True))
    problems = check(model, images, outputs)
    result = {"images": len(images), "outputs": outputs, "cycles": cycles, "mismatches": len(problems),
              "mismatch_detail": problems[:5]}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "run_result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"  {len(images) - len(problems)}/{len(images)} images equal to the reference")
    for line in problems[:5]:
        print(f"  mismatch: {line}")
    return 0 if not problems else 1


def simulate_uart(model: Model, build_cfg: BuildConfig, images: np.ndarray, out: Path, *, clk_hz: int = 8_000_000,
                  baud: int = 1_000_000, verbose: bool = False) -> dict:
    """The UART link of ``model`` in Verilator: the host's frames go in bit by bit on ``rx``, the answers
    are read bit by bit from ``tx`` and parsed by the host code. Returns what it saw and the mismatches."""
    from amaranth.back import verilog
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    from .simulate import MAKE_OVERRIDES, verilator_on_path

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    prog = build_cfg.lower(model)
    link_rtl = UARTLink(prog, clk_hz, baud)
    files = rom_images(prog)  # the Verilog is the link's, below, with the top inside
    files.update({"hwgen_mem.v": MEM_VERILOG, f"{UART_TOP}.v": verilog.convert(link_rtl, name=UART_TOP, emit_src=False)})
    for name, text in files.items():
        (out / name).write_text(text)
    link = Link.of(prog)
    case, result_file = out / "uart_case.json", out / "uart_outputs.json"
    case.write_text(json.dumps({"frames": [link.frame(img).hex() for img in images], "answer_bytes": link.answer_bytes,
                                "divisor": link_rtl.divisor}))
    result_file.unlink(missing_ok=True)
    verilator_on_path()
    tb_root = str(Path(__file__).resolve().parent.parent)
    if tb_root not in sys.path:
        sys.path.append(tb_root)
    os.environ["MAKEFLAGS"] = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""), MAKE_OVERRIDES]))
    control = out / "uart_public.vlt"
    control.write_text("`verilator_config\n" + "".join(
        f'public_flat_rw -module "{UART_TOP}" -var "{port}"\n' for port in ("clk", "rst", "rx", "tx")))
    runner = get_runner("verilator")
    log = None if verbose else out / "verilator_build.log"
    runner.build(sources=[VerilatorControlFile(control), out / "hwgen_mem.v", out / f"{UART_TOP}.v"],
                 hdl_toplevel=UART_TOP, build_dir=out / "sim_build", build_args=["-Wno-fatal", "--no-public-flat-rw"],
                 timescale=("1ns", "1ps"), log_file=log)
    try:
        runner.test(hdl_toplevel=UART_TOP, test_module=TESTBENCH, build_dir=out / "sim_build", test_dir=out,
                    extra_env={"HWGEN_CASE": str(case), "HWGEN_RESULT": str(result_file),
                               "COCOTB_REWRITE_ASSERTION_FILES": "tb_uart.py"},
                    log_file=None if verbose else out / "sim.log")
    except SystemExit:
        pass  # the result file says what the testbench saw
    if not result_file.exists():
        raise RuntimeError(f"the UART simulation wrote no results; see {out / 'sim.log'}")
    answers = [bytes.fromhex(a) for a in json.loads(result_file.read_text())["answers"]]
    parsed = [link.parse(a) for a in answers]
    outputs = [values for values, _ in parsed]
    return {"images": len(images), "answers": len(answers), "outputs": outputs,
            "cycles": [n for _, n in parsed], "mismatches": check(model, images[:len(outputs)], outputs)}
