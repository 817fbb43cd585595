"""Testbench of the UART link (hwgen_uart): driver (8N1 bytes on ``rx``), monitor (8N1 bytes from ``tx``).

The case file named by HWGEN_CASE holds the host's frames (hex) and the bit time in clock cycles, and with the
maps in DRAM the weights frame, sent first, and the DRAM (sim/tb_dram.py, empty at the start); the
answers go to HWGEN_RESULT as hex, and the host code parses and checks them (hwgen.host.protocol). Between the
image and its answer the hardware runs alone: the monitor waits on the falling edge of a start bit.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout

from .tb_dram import start_dram

CLOCK_NS = 10


async def _reset(dut):
    dut.rst.value = 1
    dut.rx.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)


async def _send_byte(dut, byte, div):
    for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:  # start, 8 data bits LSB first, stop
        dut.rx.value = bit
        await ClockCycles(dut.clk, div)


async def _receive_byte(dut, div):
    """One byte from tx, sampled in the middle of each bit."""
    if dut.tx.value:
        await FallingEdge(dut.tx)
    await ClockCycles(dut.clk, div // 2)
    await ReadOnly()
    assert not dut.tx.value, "the start bit must still be low half a bit after its edge"
    value = 0
    for i in range(8):
        await ClockCycles(dut.clk, div)
        await ReadOnly()
        value |= int(dut.tx.value) << i
    await ClockCycles(dut.clk, div)
    await ReadOnly()
    assert dut.tx.value, f"the stop bit of byte 0x{value:02x} must be high"
    await RisingEdge(dut.clk)
    return value


@cocotb.test()
async def uart_images(dut):
    with open(os.environ["HWGEN_CASE"]) as f:
        case = json.load(f)
    div, count = case["divisor"], case["answer_bytes"]
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    if case.get("dram"):  # the maps in DRAM: the memory starts empty, and the weights come over the line
        start_dram(dut, case["dram"], 1, CLOCK_NS)
    await _reset(dut)
    answers, loaded = [], None
    if case.get("weights"):
        for byte in bytes.fromhex(case["weights"]):
            await _send_byte(dut, byte, div)
        loaded = await with_timeout(_receive_byte(dut, div), 50_000_000, "ns")
    for frame in case["frames"]:
        for byte in bytes.fromhex(frame):
            await _send_byte(dut, byte, div)
        # the engine may take long for a large net: time out only when far beyond any image of the tests
        answer = [await with_timeout(_receive_byte(dut, div), 50_000_000, "ns")]
        for _ in range(count - 1):
            answer.append(await with_timeout(_receive_byte(dut, div), 10 * 100 * div, "ns"))  # 100 bit times
        answers.append(bytes(answer).hex())
    with open(os.environ["HWGEN_RESULT"], "w") as f:
        json.dump({"answers": answers, "weights_answer": loaded}, f)
