"""Testbench of the AXI4 DMA pair (hwgen_axi_pair): cocotbext-axi's AxiRam is the DRAM, with random pauses
on all five channels when the case asks for them, and the command and data streams are driven and drained
with random gaps. It writes what it read, the last flags and what the RAM holds to HWGEN_RESULT; the host
compares them with what it wrote."""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiRam

CLOCK_NS = 10


def _pauses(rng, p):
    while True:
        yield rng.random() < p


async def _push(dut, port, payloads, rng, stall):
    """Each payload on stream ``port`` (valid/ready/payload), with random gaps."""
    valid, payload, ready = (getattr(dut, f"{port}__{s}") for s in ("valid", "payload", "ready"))
    for value in payloads:
        while stall and rng.random() < stall:
            valid.value = 0
            await RisingEdge(dut.clk)
        valid.value, payload.value = 1, value
        while True:
            await RisingEdge(dut.clk)
            if ready.value:
                break
    valid.value = 0


async def _drain(dut, count, data_width, rng, stall):
    words, lasts = [], []
    while len(words) < count:
        take = not (stall and rng.random() < stall)
        dut.rdata__ready.value = int(take)
        await RisingEdge(dut.clk)
        if take and dut.rdata__valid.value:
            raw = int(dut.rdata__payload.value)
            words.append(raw & ((1 << data_width) - 1))
            lasts.append(raw >> data_width)
    dut.rdata__ready.value = 0
    return words, lasts


async def _idle(dut, name):
    await RisingEdge(dut.clk)
    while getattr(dut, name).value:
        await RisingEdge(dut.clk)


@cocotb.test()
async def dma(dut):
    with open(os.environ["HWGEN_CASE"]) as f:
        case = json.load(f)
    rng, stall = random.Random(case.get("seed", 0)), case.get("stall", 0.0)
    aw, dw = case["addr_width"], case["data_width"]
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=1 << aw)
    if stall:
        for channel in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                        ram.read_if.ar_channel, ram.read_if.r_channel):
            channel.set_pause_generator(_pauses(random.Random(rng.random()), stall))
    for port in ("rcmd", "wcmd", "wdata"):
        getattr(dut, f"{port}__valid").value = 0
    dut.rdata__ready.value = 0
    dut.rst.value = 1
    for _ in range(4):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    limit = case["timeout_cycles"] * CLOCK_NS

    async def write_all():
        cmds = [addr | (len(words) << aw) for addr, words in case["writes"]]
        beats = [w for _, words in case["writes"] for w in words]
        done = cocotb.start_soon(_push(dut, "wdata", beats, rng, stall))
        await _push(dut, "wcmd", cmds, rng, stall)
        await done
        await _idle(dut, "w_busy")

    async def read_all():
        cmds = [addr | (beats << aw) for addr, beats in case["reads"]]
        drained = cocotb.start_soon(_drain(dut, sum(b for _, b in case["reads"]), dw, rng, stall))
        await _push(dut, "rcmd", cmds, rng, stall)
        words, lasts = await drained
        await _idle(dut, "r_busy")
        return words, lasts

    start = cocotb.utils.get_sim_time("ns")
    await with_timeout(write_all(), limit, "ns")
    words, lasts = await with_timeout(read_all(), limit, "ns")
    await ReadOnly()
    memory = [ram.read(addr, len(ws) * dw // 8).hex() for addr, ws in case["writes"]]
    result = {"read": words, "last": lasts, "memory": memory, "w_error": int(dut.w_error.value),
              "r_error": int(dut.r_error.value), "cycles": int((cocotb.utils.get_sim_time("ns") - start) // CLOCK_NS)}
    with open(os.environ["HWGEN_RESULT"], "w") as f:
        json.dump(result, f)
