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

    async def bench(ctx):
        checked = 0
        for i in range(len(cases) + PE_LATENCY):
            if i < len(cases):
                signed, acts, weights, _ = cases[i]
                set_inputs(ctx, signed, acts, weights)
            await ctx.tick()
            if i + 1 >= PE_LATENCY and i + 1 - PE_LATENCY < len(cases):
                signed, acts, weights, expected = cases[i + 1 - PE_LATENCY]
                assert ctx.get(dut.sum) == expected, (signed, acts, weights)
                checked += 1
        assert checked == len(cases)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
