"""One check for every PE kind: random activations (signed or not, extremes included) and weights drawn by
the kind, streamed through the pipelined PE in amaranth.sim one case per cycle, each sum compared with plain
integers ``PE_LATENCY`` cycles later."""
import random

from amaranth.sim import Simulator

from hwgen.rtl.pe import PE_LATENCY


def check_pe_dot_products(dut, lanes: int, bits: int, seed: int, draw_weight, extreme_weight: int,
                          set_inputs) -> None:
    """``draw_weight(rng)``: one lane's weight; ``extreme_weight``: the weight of the largest-magnitude
    cases; ``set_inputs(ctx, signed, acts, weights)``: drive the PE's ports."""
    rng = random.Random(seed)
    cases = []
    for _ in range(300):
        signed = rng.random() < 0.5
        acts = [rng.randrange(-128, 128) if signed else rng.randrange(256) for _ in range(lanes)]
        weights = [draw_weight(rng) for _ in range(lanes)]
        if rng.random() < 0.1:  # the largest magnitudes: the sum must still fit the PE's output width
            acts, weights = [-128 if signed else 255] * lanes, [extreme_weight] * lanes
        cases.append((signed, acts, weights, sum(a * w for a, w in zip(acts, weights))))

    def drive(ctx, i):
        if i < len(cases):
            set_inputs(ctx, *cases[i][:3])

    def check(ctx, k):
        signed, acts, weights, expected = cases[k]
        assert ctx.get(dut.sum) == expected, (signed, acts, weights)

    stream_cases(dut, len(cases), PE_LATENCY, drive, check)


def stream_cases(dut, count: int, latency: int, drive, check) -> None:
    """One case a cycle through a pipelined ``dut`` in amaranth.sim: ``drive(ctx, i)`` sets the inputs of
    cycle i (cases 0..count-1, then idle cycles); ``check(ctx, k)`` asserts the outputs of case k
    ``latency`` cycles after it went in. Every case is checked."""
    async def bench(ctx):
        checked = 0
        for i in range(count + latency):
            drive(ctx, i)
            await ctx.tick()
            k = i + 1 - latency
            if 0 <= k < count:
                check(ctx, k)
                checked += 1
        assert checked == count

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
