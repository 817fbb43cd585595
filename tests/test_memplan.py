"""The memory plan: what it moves through DRAM is what the network's shapes and kept groups say (worked out
here from the IR, not from the plan's own bookkeeping), nothing moves when everything fits, and one bit less
than a full fit sends something off chip."""
import pytest

from hwgen.compile.lower import lower, predicted_cycles
from hwgen.compile.memplan import Dram, PlanError, plan, step_bits
from hwgen.contract.mapping import num_blocks
from hwgen.frontends import zoo

PE, LANES = 4, 16
LOTS = 1 << 40


def _smallest_budget(prog):
    lo, hi = 0, sum(plan(prog, LOTS).onchip_bits.values())  # lo fails, hi fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            plan(prog, mid)
            hi = mid
        except PlanError:
            lo = mid
    return hi


@pytest.fixture(scope="module")
def resnet():
    """Residuals, option-A shortcuts, stride 2, a global pool: every kind of map traffic."""
    model = zoo.build("resnet20", pe=PE, input_size=8, density=0.5)
    return model, lower(model, PE, LANES, 16)


def _map_bytes(shape, act_bits):
    c, h, w = shape
    return num_blocks(c, LANES) * h * w * LANES * act_bits // 8


def _expected_traffic(model, prog, p):
    """Per layer (read, write) bytes from the IR: each map written once, read once per pass and as a
    residual once; streamed weights are the step words of the kept groups' waves alone, so a pruned group is
    never fetched."""
    shapes = {"input": prog.input_shape, **{l.name: l.out_shape for l in model.layers}}
    out = {}
    for l, hw, lp in zip(model.layers, prog.layers, p.layers):
        read = lp.passes * _map_bytes(shapes[l.source], prog.act_bits) if lp.input_dram else 0
        read += _map_bytes(shapes[l.residual], prog.act_bits) if lp.residual_dram else 0
        if lp.weights == "stream":  # wave w of block j: each PE's w-th kept group of that block
            waves = sum(int(max(k[p::PE, j].sum() for p in range(PE))) for k in hw.plane_kept
                        for j in range(k.shape[1]))
            read += -(-waves * hw.kh * hw.kw * step_bits(prog) // 8)
        write = _map_bytes(shapes[l.name], prog.act_bits) if lp.output_dram else 0
        out[l.name] = (read, write)
    return out


def test_everything_on_chip_moves_nothing(resnet):
    _, prog = resnet
    p = plan(prog, LOTS)
    assert not p.uses_dram and p.cache_bits == 0
    assert {lp.weights for lp, l in zip(p.layers, prog.layers) if not l.pattern} == {"rom"}
    assert p.cycles == p.compute_cycles == predicted_cycles(prog)


def test_one_bit_less_than_a_full_fit_goes_off_chip(resnet):
    _, prog = resnet
    need = sum(plan(prog, LOTS).onchip_bits.values())
    assert not plan(prog, need).uses_dram
    tight = plan(prog, need - 1)
    assert tight.uses_dram and sum(tight.onchip_bits.values()) <= need - 1


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5, 0.9])
def test_traffic_is_what_the_shapes_and_kept_groups_say(resnet, share):
    """From the smallest budget any plan fits (share 0) to nearly a full fit."""
    model, prog = resnet
    least, need = _smallest_budget(prog), sum(plan(prog, LOTS).onchip_bits.values())
    p = plan(prog, least + int((need - 1 - least) * share))
    assert p.uses_dram and sum(p.onchip_bits.values()) <= p.budget_bits
    assert {l.name: (l.read_bytes, l.write_bytes) for l in p.layers} == _expected_traffic(model, prog, p)
    # a map a later layer reads from DRAM was written there
    written = {l.name for l in p.layers if l.output_dram}
    for l, lp in zip(model.layers, p.layers):
        if lp.input_dram and l.source != "input":
            assert l.source in written


def test_a_layer_costs_at_least_its_compute_and_its_transfers(resnet):
    _, prog = resnet
    dram = Dram(bytes_per_cycle=1.5, latency=30)
    p = plan(prog, _smallest_budget(prog), dram)
    for lp in p.layers:
        moved = lp.read_bytes + lp.write_bytes
        assert lp.memory_cycles == -(-moved * 2 // 3)  # 1.5 bytes a cycle
        assert lp.cycles >= max(lp.compute_cycles, lp.memory_cycles) + (dram.latency if moved else 0)
    assert p.cycles >= p.compute_cycles >= predicted_cycles(prog)


def test_a_budget_too_small_for_any_plan_is_refused(resnet):
    _, prog = resnet
    with pytest.raises(PlanError, match="no memory plan fits 1,000 bits on chip"):
        plan(prog, 1000)
