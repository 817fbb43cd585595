"""Testbench of hwgen_top: driver (input stream), monitor (output stream), checker (exact equality).

The case file named by HWGEN_CASE holds, per image, the input beats and the expected result values from
hwgen.reference; the testbench writes what it saw to HWGEN_RESULT. Between input and output the
hardware runs alone: Python waits on the output's valid rather than on every clock. With ``stall`` > 0
in the case file, the driver leaves random gaps between input beats and the monitor drops ready at
random, so every handshake path of both streams is exercised.
"""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

# The payload is a struct {data, last}: data in the low bits, last above it.


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


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
            data = raw & ((1 << bits) - 1)
            values.append(_signed(data, bits) if signed else data)
            lasts.append(raw >> bits)
    dut.out__ready.value = 0
    return values, lasts


@cocotb.test()
async def stream_images(dut):
    with open(os.environ["HWGEN_CASE"]) as f:
        case = json.load(f)
    rng = random.Random(case.get("seed", 0))
    stall = case.get("stall", 0.0)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await _reset(dut)
    outputs, cycles, problems = [], [], []
    for i, (beats, expected) in enumerate(zip(case["inputs"], case["expected"])):
        await _send(dut, [int(b, 16) for b in beats], case["in_bits"], stall, rng)
        got, lasts = await _receive(dut, len(expected), case["out_bits"], case["out_signed"], stall, rng)
        outputs.append(got)
        cycles.append(int(dut.cycles.value))
        if lasts != [0] * (len(lasts) - 1) + [1]:
            problems.append(f"image {i}: last must mark only the final beat, found it on beats "
                            f"{[k for k, v in enumerate(lasts) if v]}")
        if got != expected:
            k = next((k for k, (g, e) in enumerate(zip(got, expected)) if g != e), len(got))
            problems.append(f"image {i}: output value {k}: expected {expected[k]}, got {got[k]}")
    with open(os.environ["HWGEN_RESULT"], "w") as f:
        json.dump({"outputs": outputs, "cycles": cycles, "problems": problems}, f)
    assert not problems, problems[0]
