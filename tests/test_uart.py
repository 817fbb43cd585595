"""The UART host link: baud checks, the host's framing, and the link's Verilog in Verilator against the
integer reference (the same bytes a board would see)."""
import dataclasses

import numpy as np
import pytest

from hwgen import cli
from hwgen.build.generate import BuildConfig
from hwgen.contract.hardware import Hardware, hardware
from hwgen.contract.encoding import pack_input
from hwgen.compile.lower import lower, predicted_cycles
from hwgen.contract.hardware import CYCLE_BYTES, FRAME_IN, FRAME_OUT, FRAME_WEIGHTS
from hwgen.compile.dram import dram_image, stream_cycles
from hwgen.compile.units import weight_words, word_beats
from hwgen.rtl.uart import baud_divisor
from hwgen.sim.stream import random_images
from hwgen.host.protocol import HostError, Link, check
from hwgen.sim.uart import simulate_uart


def test_baud_divisor():
    assert baud_divisor(100_000_000, 115200) == 868
    assert baud_divisor(25_000_000, 1_000_000) == 25
    with pytest.raises(ValueError, match=r"baud 115200 is 3\.5% off what a 1000000 Hz clock can make"):
        baud_divisor(1_000_000, 115200)
    with pytest.raises(ValueError, match="baud must be at most clock/4 = 250000, found 400000"):
        baud_divisor(1_000_000, 400_000)


def test_frame_and_parse(small_model):
    link = Link.of(lower(small_model, 4, 16, 16))
    image = random_images(small_model, 1)[0]
    frame = link.frame(image)
    beats = pack_input(image, 16, 8, link.im2col)
    assert frame[0] == FRAME_IN and len(frame) == 1 + len(beats) * link.in_bytes
    k = 5  # any beat: little-endian, so lane 0 (channel 0 of the block) is its first byte
    assert frame[1 + k * 16:1 + (k + 1) * 16] == beats[k].to_bytes(16, "little")
    assert frame[1 + k * 16] == beats[k] & 0xFF
    values = [-3, 5] + [0] * (link.output_beats - 2)
    answer = bytes([FRAME_OUT]) + b"".join((v & 0xFFFF).to_bytes(link.out_bytes, "little") for v in values)
    answer += (1234).to_bytes(CYCLE_BYTES, "little")
    assert link.parse(answer) == (values, 1234)
    with pytest.raises(HostError, match=f"an answer must be {link.answer_bytes} bytes, found 3"):
        link.parse(answer[:3])


def test_beat_bytes_are_the_contract_s(small_model):
    """One home for the byte counts: whole bytes, rounded up, for any lanes and widths of the hardware."""
    cap = lower(small_model, 4, 16, 16).cap
    hw = Hardware(4, 4, 16, "ternary", dataclasses.replace(cap, act_bits=5, out_bits=9))
    assert (hw.input_beat_bytes, hw.output_beat_bytes) == (3, 2)  # 4 lanes x 5 bits = 20 bits; 9 bits
    link = Link(hw, True, 10, None)
    assert (link.in_bytes, link.out_bytes, link.answer_bytes) == (3, 2, 1 + 10 * 2 + CYCLE_BYTES)
    prog = lower(small_model, 4, 16, 16)
    assert (Link.of(prog).in_bytes, Link.of(prog).out_bytes) == (hardware(prog).input_beat_bytes, 2) == (16, 2)


def test_run_arguments_are_checked_at_the_edge(small_model, tmp_path, capsys):
    """`hwgen run`: its options are the CLI's, refused in one line, and its build config is the other verbs'."""
    from hwgen.contract import ir

    ir.save(small_model, tmp_path / "m.ir")
    base = ["run", "--ir", str(tmp_path / "m.ir"), "--pe", "4", "--port", "loop://", "--images"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(base + [str(tmp_path / "x.npy"), "--count", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: argument --count: expected a positive integer, found 0 (see python -m hwgen run --help)"]
    np.save(tmp_path / "bad.npy", random_images(small_model, 2)[:, :, :4])
    assert cli.main(base + [str(tmp_path / "bad.npy")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --images must hold [K, 1, 8, 8] images, found shape [2, 1, 4, 8]"]
    args = cli.parser().parse_args(base + ["x.npy", "--pe-kind", "mac", "--tile", "8"])
    assert cli.build_config(args, small_model) == BuildConfig(4, 16, 8, pe_kind="mac")


@pytest.fixture(scope="module")
def uart_run(small_model, tmp_path_factory):
    """Two images through rx, answers from tx, parsed by the host code."""
    images = random_images(small_model, 2, seed=3)
    out = tmp_path_factory.mktemp("uart")
    return images, simulate_uart(small_model, BuildConfig(pe=4), images, out, clk_hz=8_000_000, baud=1_000_000)


@pytest.mark.slow
def test_uart_link_matches_reference(small_model, uart_run):
    """Equal to the reference, and the cycle count the link reports is the analytical model's."""
    _, result = uart_run
    assert result["answers"] == 2
    assert result["mismatches"] == [], result["mismatches"]
    assert result["cycles"] == [predicted_cycles(lower(small_model, 4, 16, 16))] * 2
    assert all(len(o) == 10 for o in result["outputs"])


@pytest.mark.slow
def test_uart_check_catches_a_changed_network(small_model, uart_run):
    """Mutation: the same answers checked against a network with one changed bias must fail."""
    images, result = uart_run
    layers = list(small_model.layers)
    layers[-1] = dataclasses.replace(layers[-1], bias=layers[-1].bias + 64)
    problems = check(dataclasses.replace(small_model, layers=tuple(layers)), images, result["outputs"])
    assert len(problems) == 2 and problems[0].startswith("image 0: channel ")


def test_run_against_an_emulated_board(small_model, tmp_path):
    """`hwgen run` end to end over pyserial (a socket:// URL): a thread plays the board, answering each
    frame with the reference's values; one answer of the second run is corrupted and must be caught."""
    import json
    import socket
    import subprocess
    import sys
    import threading

    from hwgen.contract import ir
    from hwgen.contract.reference import expected_beats

    images = random_images(small_model, 3, seed=5)
    link = Link.of(lower(small_model, 4, 16, 16))
    answers = {}
    for img, values in zip(images, expected_beats(small_model, images)):
        answers[link.frame(img)] = bytearray([FRAME_OUT]) + b"".join(
            (v & 0xFFFF).to_bytes(link.out_bytes, "little") for v in values) + (99).to_bytes(CYCLE_BYTES, "little")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def board(corrupt):
        conn, _ = server.accept()
        with conn:
            buf = b""
            size = len(next(iter(answers)))
            while (chunk := conn.recv(65536)):
                buf += chunk
                while len(buf) >= size:
                    answer = bytearray(answers[buf[:size]])
                    buf = buf[size:]
                    if corrupt:
                        answer[1] ^= 1
                    conn.sendall(answer)

    np.save(tmp_path / "images.npy", images)
    ir.save(small_model, tmp_path / "m.ir")
    cmd = [sys.executable, "-m", "hwgen", "run", "--ir", tmp_path / "m.ir", "--pe", 4, "--images",
           tmp_path / "images.npy", "--port", f"socket://127.0.0.1:{server.getsockname()[1]}", "--timeout", 20]
    for corrupt, code in ((False, 0), (True, 1)):
        thread = threading.Thread(target=board, args=(corrupt,), daemon=True)
        thread.start()
        res = subprocess.run([*map(str, cmd), "--out", str(tmp_path / f"run{int(corrupt)}")], capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == code, res.stdout + res.stderr
        result = json.loads((tmp_path / f"run{int(corrupt)}" / "run_result.json").read_text())
        assert result["images"] == 3 and result["cycles"] == [99] * 3
        assert result["mismatches"] == (3 if corrupt else 0)
    server.close()


DRAM_LINK = BuildConfig(pe=4, weights="dram", band_words=64)  # weights and maps in DRAM


@pytest.mark.slow
def test_the_weights_go_to_dram_over_the_line(small_model, tmp_path):
    """With the maps in DRAM the simulated DRAM starts empty: the host's weights frame is the only way the
    weights get there. Both images are then exact, each in the predicted cycles."""
    images = random_images(small_model, 2, seed=3)
    result = simulate_uart(small_model, DRAM_LINK, images, tmp_path, clk_hz=8_000_000, baud=1_000_000)
    assert result["weights_answer"] == FRAME_WEIGHTS
    assert result["mismatches"] == [] and result["answers"] == 2
    assert result["cycles"] == [sum(stream_cycles(DRAM_LINK.lower(small_model)))] * 2  # the DRAM model's


def test_the_weights_frame_is_the_dram_image_in_map_words(small_model):
    prog = DRAM_LINK.lower(small_model)
    frame, beats = Link.of(prog).weights, dram_image(prog)
    per_word, width = word_beats(prog), prog.cap.dram_data_bits
    size = hardware(prog).input_beat_bytes
    assert frame[0] == FRAME_WEIGHTS and len(frame) - 1 == weight_words(prog) * size
    words = [int.from_bytes(frame[1 + k * size:1 + (k + 1) * size], "little") for k in range(weight_words(prog))]
    back = [(w >> (b * width)) & 0xFFFF for w in words for b in range(per_word)]
    assert back[:len(beats)] == beats and not any(back[len(beats):])  # then zero padding
    assert Link.of(lower(small_model, 4, 16, 16)).weights is None  # on chip: no weights frame


def test_run_loads_the_weights_once_then_streams_images(small_model, tmp_path):
    """`hwgen run` against an emulated board with the maps in DRAM: the weights frame first and once, then
    the images; the result has link time against compute time."""
    import socket
    import threading

    from hwgen.contract.reference import expected_beats
    from hwgen.host.serial_runner import run_board

    images = random_images(small_model, 2, seed=5)
    link = Link.of(DRAM_LINK.lower(small_model))
    seen = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def board():
        conn, _ = server.accept()
        with conn:
            buf, frame = b"", len(link.frame(images[0]))
            while (chunk := conn.recv(65536)):
                buf += chunk
                if not seen and len(buf) >= len(link.weights):
                    seen.append(buf[:len(link.weights)])
                    buf = buf[len(link.weights):]
                    conn.sendall(bytes([FRAME_WEIGHTS]))
                while seen and len(buf) >= frame:
                    image = next(i for i in range(len(images)) if link.frame(images[i]) == buf[:frame])
                    buf = buf[frame:]
                    values = expected_beats(small_model, images[image:image + 1])[0]
                    conn.sendall(bytes([FRAME_OUT]) + b"".join((v & 0xFFFF).to_bytes(link.out_bytes, "little")
                                                               for v in values) + (8000).to_bytes(CYCLE_BYTES, "little"))

    thread = threading.Thread(target=board, daemon=True)
    thread.start()
    result = run_board(small_model, link, images, f"socket://127.0.0.1:{server.getsockname()[1]}", 3_000_000, 20,
                       8e6, lambda message: None)
    server.close()
    assert seen == [link.weights] and result["mismatches"] == 0 and result["weights_load_s"] is not None
    per = result["per_image"]
    assert per["compute_s"] == 8000 / 8e6 and per["bound"] == "link"
    assert per["link_s"] == pytest.approx((len(link.frame(images[0])) + link.answer_bytes) * 10 / 3e6, abs=1e-6)
