"""The AXI4-to-LiteDRAM-native bridge (rtl/native.py) under a model of the native port: commands taken at
random, write data taken some cycles after its command (and required then), read data returned in order
after a latency with no backpressure. The accelerator's DMA pair (rtl/axi.py) drives it."""
import random
from collections import deque

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hwgen.rtl.axi import DmaPair
from hwgen.rtl.native import AxiToNative

ADDR, WORDS, DATA = 16, 15, 16  # byte addresses, native word addresses, 16-bit beats


class _Bench(wiring.Component):
    def __init__(self):
        self.dma, self.bridge = DmaPair(ADDR, DATA), AxiToNative(ADDR, WORDS, DATA)
        members = {n: m for n, m in self.dma.signature.members.items() if n != "m_axi"}
        super().__init__({**members, "native": self.bridge.signature.members["native"],
                          "overrun": self.bridge.signature.members["overrun"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma, m.submodules.bridge = self.dma, self.bridge
        wiring.connect(m, self.dma.m_axi, self.bridge.axi)
        for name in ("rcmd", "wcmd", "wdata"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(self.dma, name))
        wiring.connect(m, self.dma.rdata, wiring.flipped(self.rdata))
        wiring.connect(m, self.bridge.native, wiring.flipped(self.native))
        m.d.comb += self.overrun.eq(self.bridge.overrun)
        return m


def _run(reads, writes, seed, p_ready=0.6, latency=(1, 9), p_data=0.3, cycles=40000):
    """reads: [(byte address, beats)]; writes: [(byte address, [beat values])], their beats offered with
    probability ``p_data`` a cycle (so write commands can run ahead of their data). Returns (read beats per
    command, memory afterwards, memory before, problems)."""
    rng = random.Random(seed)
    dut = _Bench()
    mem = {a: rng.randrange(1 << DATA) for a in range(1 << WORDS)}
    before = dict(mem)
    got, problems = [[] for _ in reads], []

    async def bench(ctx):
        n = dut.native
        queue = deque()  # (due cycle, we, word address)
        rq, wq = deque(reads), deque(writes)
        wbeats = deque()
        rk = 0
        for cycle in range(cycles):
            # the native port's side: a due command answers, in order
            ctx.set(n.cmd_ready, rng.random() < p_ready)
            ctx.set(n.rdata_valid, 0)
            ctx.set(n.wdata_ready, 0)
            head = queue[0] if queue and queue[0][0] <= cycle else None
            if head is not None:
                _, we, addr = queue.popleft()
                if we:
                    ctx.set(n.wdata_ready, 1)
                    if not ctx.get(n.wdata_valid):
                        problems.append(f"cycle {cycle}: write data missing when the controller takes it")
                    mem[addr] = ctx.get(n.wdata_data)
                else:
                    ctx.set(n.rdata_valid, 1)
                    ctx.set(n.rdata_data, mem[addr])
            if ctx.get(n.cmd_valid) and ctx.get(n.cmd_ready):
                queue.append((cycle + rng.randint(*latency), ctx.get(n.cmd_we), ctx.get(n.cmd_addr)))
            # the DMA's commands and data
            ctx.set(dut.rcmd.valid, bool(rq))
            if rq:
                ctx.set(dut.rcmd.payload, {"addr": rq[0][0], "beats": rq[0][1]})
            ctx.set(dut.wcmd.valid, bool(wq))
            if wq:
                ctx.set(dut.wcmd.payload, {"addr": wq[0][0], "beats": len(wq[0][1])})
            offered = bool(wbeats) and rng.random() < p_data
            ctx.set(dut.wdata.valid, offered)
            if wbeats:
                ctx.set(dut.wdata.payload, wbeats[0])
            ctx.set(dut.rdata.ready, 1)
            if rq and ctx.get(dut.rcmd.ready):
                rq.popleft()
            if wq and ctx.get(dut.wcmd.ready):
                wbeats.extend(wq.popleft()[1])
            if offered and ctx.get(dut.wdata.ready):
                wbeats.popleft()
            if ctx.get(dut.rdata.valid):
                got[rk].append(ctx.get(dut.rdata.payload.data))
                if ctx.get(dut.rdata.payload.last):
                    rk += 1
            await ctx.tick()
            if not (rq or wq or wbeats or queue) and rk == len(reads) and not ctx.get(dut.w_busy):
                break
        else:
            problems.append("the transfers did not finish")
        if ctx.get(dut.overrun):
            problems.append("overrun")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, mem, before, problems


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bursts_through_the_bridge_are_exact(seed):
    rng = random.Random(seed)
    writes = [(0x1000, [rng.randrange(1 << 16) for _ in range(300)]),  # two bursts, one 4 KB crossing
              (0x2FF0, [rng.randrange(1 << 16) for _ in range(40)])]
    reads = [(0x4000, 600), (0x5FFE, 3), (0x7000, 1)]  # 4 KB crossings; none of what the writes change
    got, mem, before, problems = _run(reads, writes, seed)
    assert problems == []
    for (addr, beats), values in zip(reads, got):
        assert values == [before[addr // 2 + k] for k in range(beats)]
    written = {addr // 2 + k: v for addr, values in writes for k, v in enumerate(values)}
    assert all(mem[a] == written.get(a, before[a]) for a in mem)


def test_a_read_after_its_write_answered_sees_the_write():
    values = list(range(100, 164))
    got, mem, before, problems = _run([], [(0x800, values)], 5)
    assert problems == [] and [mem[0x400 + k] for k in range(64)] == values
