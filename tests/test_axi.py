"""The AXI4 DMA pair (rtl/axi.py): bursts obey AXI4's rules (amaranth.sim), and in Verilator against
cocotbext-axi's AxiRam every word written lands where it should and reads back equal, with the last flag on
each command's final beat, also with random pauses on every AXI channel and on the streams (p = 0.3)."""
import random

import pytest
from amaranth.sim import Simulator

from hwgen.rtl.axi import BOUNDARY, MAX_BURST, BurstSplitter, check_beat_bytes
from hwgen.sim.axi import simulate_axi


def _bursts(commands, beat_bytes, ready_p=0.6, seed=0):
    """Every burst a splitter makes of ``commands``, with the burst side stalling at random."""
    dut = BurstSplitter(24, 12, beat_bytes)
    rng, seen = random.Random(seed), []

    async def bench(ctx):
        for addr, beats in commands:
            ctx.set(dut.cmd.payload, {"addr": addr, "beats": beats})
            ctx.set(dut.cmd.valid, 1)
            await ctx.tick().until(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 0)
            left = beats
            while left:
                ready = rng.random() < ready_p
                ctx.set(dut.burst.ready, ready)
                await ctx.delay(1e-9)
                if ready and ctx.get(dut.burst.valid):
                    b = ctx.get(dut.burst.payload)
                    seen.append((b.addr, b.len, b.final))
                    left -= b.len
                await ctx.tick()
            ctx.set(dut.burst.ready, 0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.parametrize("beat_bytes", [1, 2, 8, 64])
def test_bursts_cover_each_command_within_axi4_rules(beat_bytes):
    rng = random.Random(beat_bytes)
    commands = [(0, 1), (BOUNDARY - beat_bytes, 3), (BOUNDARY * 3 - 5 * beat_bytes, 700)]
    commands += [(rng.randrange(0, 1 << 18) // beat_bytes * beat_bytes, rng.randrange(1, 1200)) for _ in range(6)]
    seen = iter(_bursts(commands, beat_bytes))
    for addr, beats in commands:
        at, left = addr, beats
        while left:
            b_addr, b_len, final = next(seen)
            assert b_addr == at and 1 <= b_len <= min(MAX_BURST, left)
            assert b_addr // BOUNDARY == (b_addr + b_len * beat_bytes - 1) // BOUNDARY, "crosses 4 KB"
            at, left = at + b_len * beat_bytes, left - b_len
            assert final == (left == 0)
    assert next(seen, None) is None


def test_a_data_width_that_is_not_a_power_of_two_bytes_is_refused():
    for beat_bytes in (3, 0, 256):
        with pytest.raises(ValueError, match=f"power of two of 8 to 1024 bits, found {beat_bytes * 8}"):
            check_beat_bytes(beat_bytes)


def _case(data_width, stall, seed):
    """Commands that cross 4 KB boundaries, run past 256 beats, sit back to back and apart."""
    rng, beat = random.Random(seed), data_width // 8
    regions = [(BOUNDARY - 2 * beat, 5), (BOUNDARY * 2, 300), (BOUNDARY * 5 - beat, 1), (BOUNDARY * 5, 40),
               (BOUNDARY * 9 + 64 * beat, 600)]
    writes = [[addr, [rng.getrandbits(data_width) for _ in range(n)]] for addr, n in regions]
    reads = [[addr, n] for addr, n in reversed(regions)] + [[BOUNDARY * 2 + 10 * beat, 7]]
    return {"writes": writes, "reads": reads, "stall": stall, "seed": seed, "timeout_cycles": 200_000}


def _expected_reads(case, beat):
    words = {addr + k * beat: w for addr, ws in case["writes"] for k, w in enumerate(ws)}
    out, lasts = [], []
    for addr, n in case["reads"]:
        out += [words[addr + k * beat] for k in range(n)]
        lasts += [0] * (n - 1) + [1]
    return out, lasts


@pytest.mark.parametrize("data_width", [16, 64])
def test_dma_writes_and_reads_back_exactly_under_random_pauses(data_width, tmp_path):
    cases = [_case(data_width, stall, seed) for stall, seed in ((0.0, 1), (0.3, 2))]
    for case, seen in zip(cases, simulate_axi(cases, tmp_path, addr_width=20, data_width=data_width)):
        beat = data_width // 8
        assert seen["w_error"] == seen["r_error"] == 0
        for (addr, words), mem in zip(case["writes"], seen["memory"]):  # AxiRam's bytes, little-endian
            assert bytes.fromhex(mem) == b"".join(w.to_bytes(beat, "little") for w in words), hex(addr)
        assert (seen["read"], seen["last"]) == _expected_reads(case, beat)
