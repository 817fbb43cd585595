"""Testbench of hwgen_top: driver (input stream), monitor (output stream), checker (exact equality).

The case file named by HWGEN_CASE holds, per image, the input beats and the expected result values from
hwgen.contract.reference; the testbench writes what it saw to HWGEN_RESULT. Between input and output the
hardware runs alone: Python waits on the output's valid rather than on every clock. With ``stall`` > 0
in the case file, the driver leaves random gaps between input beats and the monitor drops ready at
random, so every handshake path of both streams is exercised.

With ``snapshots`` in the case file (a list of {"path", "words"}, one per layer but the last), the
testbench also reads, at each ``layer_done`` pulse, the activation buffer that layer wrote (``path``: the
names from the top down to its word array, hwgen.sim.stream.buffer_path), so the host
can name the first layer whose output differs from the reference. ``timeout_cycles`` bounds each image,
so a corrupted design that never finishes is reported, not waited on forever.
"""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, SimTimeoutError, with_timeout

from hwgen.contract.encoding import unpack_value

from .tb_dram import start_dram

CLOCK_NS = 10
# The payload is a struct {data, last}: data in the low bits, last above it.


async def _reset(dut):
    dut.rst.value = 1
    dut.inp__valid.value = 0
    dut.out__ready.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _send(dut, beats, data_bits, stall, rng):
    for i, beat in enumerate(beats):
        while stall and rng.random() < stall:  # a gap: valid low for a cycle
            dut.inp__valid.value = 0
            await RisingEdge(dut.clk)
        dut.inp__valid.value = 1
        dut.inp__payload.value = beat | (int(i == len(beats) - 1) << data_bits)
        while True:
            await RisingEdge(dut.clk)
            if dut.inp__ready.value:  # sampled at the edge: the beat was taken at this edge
                break
    dut.inp__valid.value = 0


async def _receive(dut, count, bits, signed, stall, rng):
    if not dut.out__valid.value:
        await RisingEdge(dut.out__valid)
    values, lasts = [], []
    while len(values) < count:
        ready = not (stall and rng.random() < stall)
        dut.out__ready.value = int(ready)
        await RisingEdge(dut.clk)
        if ready and dut.out__valid.value:  # a handshake at this edge
            raw = int(dut.out__payload.value)
            values.append(unpack_value(raw, bits, signed))
            lasts.append(raw >> bits)
    dut.out__ready.value = 0
    return values, lasts


async def _snapshot(dut, layers, into):
    """Per layer but the last, the raw words of the buffer it wrote, read when its last write landed."""
    for layer in layers:
        await RisingEdge(dut.layer_done)
        await ReadOnly()
        mem = dut
        for name in layer["path"]:
            mem = getattr(mem, name)
        into.append([int(mem[a].value) for a in range(layer["words"])])


async def _image(dut, case, i, beats, expected, stall, rng, snaps, dram):
    in_dram = bool(case.get("snapshots")) and "dram" in case["snapshots"][0]
    if snaps is not None and not in_dram:
        cocotb.start_soon(_snapshot(dut, case["snapshots"], snaps))
    await _send(dut, [int(b, 16) for b in beats], case["in_bits"], stall, rng)
    result = await _receive(dut, len(expected), case["out_bits"], case["out_signed"], stall, rng)
    if snaps is not None and in_dram:  # every map has its own region in DRAM: read them after the image
        for layer in case["snapshots"]:
            raw, size = dram.read(layer["dram"], layer["words"] * layer["word_bytes"]), layer["word_bytes"]
            snaps.append([int.from_bytes(raw[k * size:(k + 1) * size], "little") for k in range(layer["words"])])
    return result


@cocotb.test()
async def stream_images(dut):
    with open(os.environ["HWGEN_CASE"]) as f:
        case = json.load(f)
    rng = random.Random(case.get("seed", 0))
    stall = case.get("stall", 0.0)
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dram = None
    if case.get("dram"):  # the weights stream from it (a design built with weights in DRAM), maybe the maps too
        dram = start_dram(dut, case["dram"], rng.random(), CLOCK_NS)
    await _reset(dut)
    outputs, cycles, problems, layers = [], [], [], []
    for i, (beats, expected) in enumerate(zip(case["inputs"], case["expected"])):
        snaps = [] if case.get("snapshots") is not None else None
        limit = case.get("timeout_cycles", 0)
        work = _image(dut, case, i, beats, expected, stall, rng, snaps, dram)
        try:
            got, lasts = await (with_timeout(work, limit * CLOCK_NS, "ns") if limit else work)
        except SimTimeoutError:
            problems.append(f"image {i}: no complete output within {limit} cycles")
            layers.append(snaps)
            break
        outputs.append(got)
        layers.append(snaps)
        cycles.append(int(dut.cycles.value))
        if lasts != [0] * (len(lasts) - 1) + [1]:
            problems.append(f"image {i}: last must mark only the final beat, found it on beats "
                            f"{[k for k, v in enumerate(lasts) if v]}")
        if case.get("dram") and dut.dram_error.value:
            problems.append(f"image {i}: the DRAM answered a read with an error response")
        if got != expected:
            k = next((k for k, (g, e) in enumerate(zip(got, expected)) if g != e), len(got))
            problems.append(f"image {i}: output value {k}: expected {expected[k]}, got {got[k]}")
    with open(os.environ["HWGEN_RESULT"], "w") as f:
        json.dump({"outputs": outputs, "cycles": cycles, "problems": problems, "layers": layers}, f)
    assert not problems, problems[0]
