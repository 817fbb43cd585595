"""The DRAM behind the accelerator's AXI4 read port (``m_axi``) in the stream testbench (sim/tb_top.py).

- ``fixed_latency_dram``: the deterministic memory the cycle model assumes (compile/weights_stream.py): the
  address channel is always ready, a burst's first beat is presented ``latency`` cycles after its address
  was taken, then one beat per cycle, bursts in order. Under it simulated cycles equal the prediction.
- ``random_dram``: cocotbext-axi's ``AxiRamRead`` with random pauses (probability ``pause`` per cycle) on the
  address and data channels: the outputs must stay exact and nothing may hang; the cycles only grow.

Both hold ``image``, the build's weights.hex (one beat of ``data_bits`` per line from address 0).
"""
import random
from collections import deque

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiReadBus, AxiRamRead

PREFIX = "m_axi_"  # Amaranth names the port's members m_axi__<name>


def image_bytes(path: str, data_bits: int) -> bytes:
    with open(path) as f:
        beats = [int(line, 16) for line in f if line.strip()]
    return b"".join(b.to_bytes(data_bits // 8, "little") for b in beats)


def _signal(dut, name):
    return getattr(dut, f"{PREFIX}_{name}")


async def fixed_latency_dram(dut, mem: bytes, data_bits: int, latency: int):
    beat_bytes = data_bits // 8
    ar = {n: _signal(dut, n) for n in ("arvalid", "araddr", "arlen")}
    r = {n: _signal(dut, n) for n in ("rvalid", "rready", "rdata", "rlast", "rresp", "rid")}
    _signal(dut, "arready").value = 1
    r["rvalid"].value, r["rresp"].value, r["rid"].value = 0, 0, 0
    bursts = deque()  # [first cycle its data may be presented, next byte address, beats left]
    cycle, presented = 0, False
    while True:
        await RisingEdge(dut.clk)  # the values read now are those of the cycle that ended (``cycle``)
        if presented and r["rready"].value:  # that beat was taken
            bursts[0][1] += beat_bytes
            bursts[0][2] -= 1
            if not bursts[0][2]:
                bursts.popleft()
        if ar["arvalid"].value:  # an address taken in that cycle
            bursts.append([cycle + latency, int(ar["araddr"].value), int(ar["arlen"].value) + 1])
        cycle += 1
        presented = bool(bursts) and bursts[0][0] <= cycle
        if presented:
            at = bursts[0][1]
            r["rdata"].value = int.from_bytes(mem[at:at + beat_bytes].ljust(beat_bytes, b"\0"), "little")
            r["rlast"].value = int(bursts[0][2] == 1)
        r["rvalid"].value = int(presented)


def _pauses(rng, p):
    while True:
        yield rng.random() < p


def random_dram(dut, mem: bytes, pause: float, seed: int) -> AxiRamRead:
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, PREFIX), dut.clk, dut.rst, size=max(4096, 1 << (len(mem) - 1).bit_length()))
    ram.write(0, mem)
    rng = random.Random(seed)
    for channel in (ram.ar_channel, ram.r_channel):
        channel.set_pause_generator(_pauses(random.Random(rng.random()), pause))
    return ram


def start_dram(dut, dram: dict, seed: int):
    """The DRAM a case file's ``dram`` entry asks for: {"image", "data_bits", "latency", "pause"}."""
    mem = image_bytes(dram["image"], dram["data_bits"])
    if dram.get("pause"):
        return random_dram(dut, mem, dram["pause"], seed)
    return cocotb.start_soon(fixed_latency_dram(dut, mem, dram["data_bits"], dram["latency"]))
