"""Testbench of hwgen_top: driver (input stream), monitor (output stream), checker (exact equality).

The case file named by HWGEN_CASE holds, per image, the input beats and the expected result values from
hwgen.reference; the testbench writes what it saw to HWGEN_RESULT. Between input and output the
hardware runs alone: Python waits on ``out__valid`` rather than on every clock.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


async def _reset(dut):
    dut.rst.value = 1
    dut.inp__valid.value = 0
    dut.out__ready.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _send(dut, beats):
    dut.inp__valid.value = 1
    for beat in beats:
        dut.inp__payload.value = beat
        while True:
            await RisingEdge(dut.clk)
            if dut.inp__ready.value:  # sampled at the edge: the beat was taken at this edge
                break
    dut.inp__valid.value = 0


async def _receive(dut, count, bits, signed):
    if not dut.out__valid.value:
        await RisingEdge(dut.out__valid)
    dut.out__ready.value = 1
    values = []
    while len(values) < count:
        await RisingEdge(dut.clk)
        if dut.out__valid.value:
            raw = int(dut.out__payload.value)
            values.append(_signed(raw, bits) if signed else raw)
    dut.out__ready.value = 0
    return values


@cocotb.test()
async def stream_images(dut):
    with open(os.environ["HWGEN_CASE"]) as f:
        case = json.load(f)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await _reset(dut)
    outputs, cycles, first_bad = [], [], None
    for i, (beats, expected) in enumerate(zip(case["inputs"], case["expected"])):
        await _send(dut, [int(b, 16) for b in beats])
        got = await _receive(dut, len(expected), case["out_bits"], case["out_signed"])
        outputs.append(got)
        cycles.append(int(dut.cycles.value))
        if got != expected and first_bad is None:
            k = next(k for k, (g, e) in enumerate(zip(got, expected)) if g != e)
            first_bad = f"image {i}: output value {k}: expected {expected[k]}, got {got[k]}"
    with open(os.environ["HWGEN_RESULT"], "w") as f:
        json.dump({"outputs": outputs, "cycles": cycles}, f)
    assert first_bad is None, first_bad
