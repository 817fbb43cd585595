"""The memory planner: it picks the on-chip design when that fits, the weights from DRAM when only the maps
fit, bands when nothing else does, always within the budget and with the fewest predicted cycles of what it
tried; its on-chip bits are those of the memories the built design has, and its cycles the build's."""
import pytest

from hwgen.build.generate import BuildConfig, generate
from hwgen.compile.lower import lower, predicted_cycles
from hwgen.compile.memplan import PlanError, onchip_bits, onchip_memories, plan
from hwgen.frontends import zoo

PE, LANES, TILE = 4, 16, 16


@pytest.fixture(scope="module")
def resnet():
    """Residuals, option-A shortcuts, stride 2, a global pool, weights larger than the maps."""
    return zoo.build("resnet20", pe=PE, input_size=16, density=0.5)


def _config(c) -> BuildConfig:
    return BuildConfig(PE, LANES, TILE, weights=c.weights, weight_cache=c.weight_cache or None,
                       band_words=c.band_words, out_band_words=c.out_band_words, stem=c.stem)


def test_the_on_chip_design_when_it_fits(resnet):
    rom = onchip_bits(lower(resnet, PE, LANES, TILE))
    p = plan(resnet, PE, LANES, TILE, sum(rom.values()))
    assert (p.chosen.weights, p.chosen.maps) == ("rom", "chip")
    assert p.chosen.cycles == p.compute_cycles == predicted_cycles(lower(resnet, PE, LANES, TILE))
    assert p.chosen.onchip_bits == rom


@pytest.mark.parametrize("share", [0.7, 0.4])
def test_within_the_budget_and_fastest_of_what_fits(resnet, share):
    full = sum(onchip_bits(lower(resnet, PE, LANES, TILE)).values())
    budget = int(share * full)
    p = plan(resnet, PE, LANES, TILE, budget)
    c = p.chosen
    assert c.weights == "dram" and c.total_bits <= budget
    assert c.maps == ("chip" if share == 0.7 else "dram")
    assert all(o.cycles >= c.cycles for o in p.candidates if o.cycles is not None)
    assert all(o.cycles is None or o.total_bits <= budget for o in p.candidates)
    # what the planner counted and predicted is what the build has
    cfg = _config(c)
    prog = cfg.lower(resnet)
    assert onchip_bits(prog) == c.onchip_bits
    import json
    man = json.loads(generate(resnet, cfg)["manifest.json"])
    assert man["predicted_cycles"] == c.cycles > p.compute_cycles


def test_nothing_fits(resnet):
    with pytest.raises(PlanError, match="no memory plan fits 1,000 bits on chip"):
        plan(resnet, PE, LANES, TILE, 1000)


def test_resnet18_on_the_lfe5u_85f_within_its_block_ram():
    """The headline: 90% of the 208 DP16KD at 32 data bits each, all weights and maps through DRAM."""
    budget = int(0.9 * 208) * 32 * 512
    model = zoo.build("resnet18", pe=16)
    p = plan(model, 16, 16, 16, budget)
    c = p.chosen
    assert (c.weights, c.maps) == ("dram", "dram") and c.total_bits <= budget
    assert c.cycles <= 1.5 * p.compute_cycles  # the target, against the deterministic memory


@pytest.mark.parametrize("cfg", [BuildConfig(PE, LANES, TILE), BuildConfig(PE, LANES, TILE, weights="dram"),
                                 BuildConfig(PE, LANES, TILE, weights="dram", band_words=96, out_band_words=48)],
                         ids=["on chip", "weights from DRAM", "bands"])
def test_the_planned_memories_are_the_designs(resnet, cfg):
    """What the planner costs is what the elaborated design holds: every memory but the accumulators (read
    without a clock: distributed RAM), by width, depth and write lanes."""
    from hwgen.fpga.fit import memories
    from hwgen.rtl.top import Top

    prog = cfg.lower(resnet)
    built = sorted((m.width, m.depth, m.lanes) for m in memories(Top(prog)) if not m.async_read)
    assert sorted((m.width, m.depth, m.lanes) for m in onchip_memories(prog)) == built
