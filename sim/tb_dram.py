"""The DRAM behind the accelerator's AXI4 read port (``m_axi``) in the stream testbench (sim/tb_top.py).

- ``fixed_latency_dram``: the deterministic memory the cycle model assumes (compile/dram.py): the
  address channel is always ready, a burst's first beat is presented ``latency`` cycles after its address
  was taken, then one beat per cycle, bursts in order. Under it simulated cycles equal the prediction.
- ``random_dram``: cocotbext-axi's ``AxiRamRead`` with random pauses (probability ``pause`` per cycle) on the
  address and data channels: the outputs must stay exact and nothing may hang; the cycles only grow.

Both hold ``image``, the build's weights.hex (one beat of ``data_bits`` per line from address 0).
"""
import random
from collections import deque

import cocotb
from cocotb.triggers import First, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiRam, AxiRamRead, AxiReadBus

PREFIX = "m_axi_"  # Amaranth names the port's members m_axi__<name>


def image_bytes(path: str, data_bits: int) -> bytes:
    with open(path) as f:
        beats = [int(line, 16) for line in f if line.strip()]
    return b"".join(b.to_bytes(data_bits // 8, "little") for b in beats)


def _signal(dut, name):
    return getattr(dut, f"{PREFIX}_{name}")


class FixedLatencyDram:
    """The deterministic memory: address channels always ready, a read burst's first beat ``latency`` cycles
    after its address was taken, then one beat per cycle, bursts in order; write data always taken, a write
    burst's response ``latency`` cycles after its last beat."""

    def __init__(self, dut, mem: bytes, data_bits: int, latency: int, writes: bool, clock_ns: int):
        self.dut, self.mem, self.latency, self.writes = dut, bytearray(mem), latency, writes
        self.clock_ns = clock_ns
        self.beat_bytes = data_bits // 8
        cocotb.start_soon(self._run())

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.mem[addr:addr + length]).ljust(length, b"\0")

    def _store(self, addr: int, value: int):
        if addr + self.beat_bytes > len(self.mem):
            self.mem.extend(bytes(addr + self.beat_bytes - len(self.mem)))
        self.mem[addr:addr + self.beat_bytes] = value.to_bytes(self.beat_bytes, "little")

    async def _run(self):
        dut, beat_bytes, latency = self.dut, self.beat_bytes, self.latency
        sig = lambda name: _signal(dut, name)  # noqa: E731
        sig("arready").value = 1
        sig("rvalid").value, sig("rresp").value, sig("rid").value = 0, 0, 0
        if self.writes:
            sig("awready").value, sig("wready").value = 1, 1
            sig("bvalid").value, sig("bresp").value, sig("bid").value = 0, 0, 0
        reads, writes, answers = deque(), deque(), deque()  # bursts: [cycle, next address, beats left]
        presented = answered = False
        addresses = [sig("arvalid")] + ([sig("awvalid")] if self.writes else [])
        while True:
            if not (reads or writes or answers) and not any(a.value for a in addresses):
                await First(*(RisingEdge(a) for a in addresses))  # nothing in flight: sleep until an address
            await RisingEdge(dut.clk)  # the values read now are those of the cycle that ended (``cycle``)
            cycle = round(get_sim_time("ns")) // self.clock_ns - 1
            if presented and sig("rready").value:  # that beat was taken
                reads[0][1] += beat_bytes
                reads[0][2] -= 1
                if not reads[0][2]:
                    reads.popleft()
            if sig("arvalid").value:  # an address taken in that cycle
                reads.append([cycle + latency, int(sig("araddr").value), int(sig("arlen").value) + 1])
            if self.writes:
                if answered and sig("bready").value:
                    answers.popleft()
                if sig("awvalid").value:
                    writes.append([cycle, int(sig("awaddr").value), int(sig("awlen").value) + 1])
                if sig("wvalid").value:  # a beat of the oldest burst (its address comes first: the writer)
                    self._store(writes[0][1], int(sig("wdata").value))
                    writes[0][1] += beat_bytes
                    writes[0][2] -= 1
                    if sig("wlast").value:
                        writes.popleft()
                        answers.append(cycle + latency)
            cycle += 1
            presented = bool(reads) and reads[0][0] <= cycle
            if presented:
                at = reads[0][1]
                sig("rdata").value = int.from_bytes(self.read(at, beat_bytes), "little")
                sig("rlast").value = int(reads[0][2] == 1)
            sig("rvalid").value = int(presented)
            if self.writes:
                answered = bool(answers) and answers[0] <= cycle
                sig("bvalid").value = int(answered)


def _pauses(rng, p):
    while True:
        yield rng.random() < p


def random_dram(dut, mem: bytes, pause: float, seed: int, writes: bool):
    size = max(1 << 16, 1 << (len(mem) - 1).bit_length())
    ram = (AxiRam(AxiBus.from_prefix(dut, PREFIX), dut.clk, dut.rst, size=size) if writes else
           AxiRamRead(AxiReadBus.from_prefix(dut, PREFIX), dut.clk, dut.rst, size=size))
    ram.write(0, mem)
    rng = random.Random(seed)
    interfaces = [ram.read_if, ram.write_if] if writes else [ram]
    for i in interfaces:
        for name in ("ar_channel", "r_channel", "aw_channel", "w_channel", "b_channel"):
            if hasattr(i, name):
                getattr(i, name).set_pause_generator(_pauses(random.Random(rng.random()), pause))
    return ram


def start_dram(dut, dram: dict, seed: int, clock_ns: int):
    """The DRAM a case file's ``dram`` entry asks for: {"image" (None: all zeros), "data_bits", "latency",
    "pause", "writes", "size"}; it answers ``read(addr, length)`` for the testbench's snapshots."""
    mem = (image_bytes(dram["image"], dram["data_bits"]) if dram["image"] else b"").ljust(dram.get("size", 0), b"\0")
    if dram.get("pause"):
        return random_dram(dut, mem, dram["pause"], seed, dram.get("writes", False))
    return FixedLatencyDram(dut, mem, dram["data_bits"], dram["latency"], dram.get("writes", False), clock_ns)
