"""Weights and maps from DRAM (docs/dram.md): the DRAM image holds exactly the ROM words; designs that stream
weights into their cache (in passes, too) and maps through band buffers run bit-exact in Verilator, with
cycles == predicted against the deterministic memory and exact outputs under cocotbext-axi's random pauses;
DRAM-side faults are caught and localised."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from amaranth import Shape

from hwgen.build.generate import BuildConfig, build
from hwgen.compile.lower import UnsupportedError, predicted_cycles
from hwgen.compile.roms import pe_roms, schedule_rom
from hwgen.compile.dram import dram_image, read_words, stream_cycles
from hwgen.compile.units import dma_programs, unit_beats, units, word_beats
from hwgen.contract.hardware import pe_rom_width, schedule_layout, widths
from hwgen.contract.dram_layout import (READS_IMAGE, WEIGHTS_IMAGE, WRITES_IMAGE, entry_beats, read_command_layout,
                                        step_beats, write_command_layout)
from hwgen.frontends import zoo
from hwgen.frontends.synthetic import NetBuilder
from hwgen.sim.stream import random_images, simulate


@pytest.fixture(scope="module")
def net():
    """A stem, a max pool, a block with an option-A shortcut (stride 2) and one with a 1x1 downsample, the
    global pool and a classifier: stored and generated (fixed-pattern) weights, residuals, stride 2."""
    b = NetBuilder("dram_net", (3, 9, 9), pe=4, density=0.5, seed=11)
    b.conv(16, 3, dense=True)
    b.maxpool(3, 2, 1)
    x = b.last
    skip = b.shortcut_a(32, 2, source=x)
    b.conv(32, 3, 2, source=x)
    b.conv(32, 3, 1, residual=skip)
    y = b.last
    skip = b.conv(48, 1, 2, 0, source=y, relu=False)
    b.conv(48, 3, 2, source=y)
    b.conv(48, 3, 1, residual=skip)
    b.avgpool()
    b.linear(10)
    return b.finish()


def _field(word: int, layout, name: str) -> int:
    f = layout[name]
    return (word >> f.offset) & ((1 << Shape.cast(f.shape).width) - 1)


@pytest.mark.parametrize("data_bits", [16, 64])
def test_dram_image_holds_the_rom_words_and_nothing_else(net, data_bits):
    cfg = BuildConfig(pe=4, weights="dram")
    prog = cfg.lower(net)
    if data_bits != 16:
        prog = BuildConfig(pe=4, capacity=replace(prog.cap, dram_data_bits=data_bits)).lower(net)
    wd = widths(prog)
    image, fetch = dram_image(prog), read_words(prog)
    layout = read_command_layout(prog, wd)
    entry_bits, pe_bits = schedule_layout(wd).size, pe_rom_width(prog, wd)
    assert any(l.pattern for l in prog.layers) and not all(l.pattern for l in prog.layers)
    # decode the image from the fetch words alone, back into schedule entries and PE words
    entries, words, at = [], [[] for _ in range(prog.pe)], 0
    layers = [u.layer for u in units(prog)]  # the wide layers in passes (Capacity.acc_locals)
    assert len(layers) > len(prog.layers)
    for k, (l, f) in enumerate(zip(layers, fetch)):
        addr, beats = _field(f, layout, "addr"), _field(f, layout, "beats")
        assert addr == at * data_bits // 8 and _field(f, layout, "end") == (k == len(layers) - 1)
        assert _field(f, layout, "entry_only") == l.pattern and _field(f, layout, "to_cache")
        assert _field(f, layout, "waddr") == (k % 2) * prog.cap.weight_cache
        per_step = entry_beats(prog, wd) if l.pattern else step_beats(prog, wd)
        assert beats == l.n_steps * per_step
        for s in range(l.n_steps):
            bits = sum(b << (i * data_bits) for i, b in enumerate(image[at + s * per_step:at + (s + 1) * per_step]))
            entries.append(bits & ((1 << entry_bits) - 1))
            if not l.pattern:
                for p in range(prog.pe):
                    words[p].append((bits >> (entry_bits + p * pe_bits)) & ((1 << pe_bits) - 1))
            assert bits >> (entry_bits + (0 if l.pattern else prog.pe * pe_bits)) == 0  # padding is zero
        at += beats
    assert at == len(image) == sum(unit_beats(prog))
    assert entries == schedule_rom(prog, wd, layers)
    assert words == pe_roms(prog, wd, layers)


def test_stream_cycles_add_the_wait_and_the_fetches(net):
    prog = BuildConfig(pe=4, weights="dram").lower(net)
    rom = predicted_cycles(BuildConfig(pe=4).lower(net))
    fast, slow = sum(stream_cycles(prog, 1)), sum(stream_cycles(prog, 200))
    # at least one wait cycle per layer and the first layer's whole fetch; more latency never helps
    assert fast >= rom + len(prog.layers) + unit_beats(prog)[0]
    assert slow > fast
    with pytest.raises(ValueError, match="latency of 1 to 256"):
        stream_cycles(prog, 0)


def test_a_layer_larger_than_half_the_cache_runs_in_passes(net):
    prog = BuildConfig(pe=4, weights="dram", weight_cache=100).lower(net)
    us = units(prog)
    split = {prog.layers[u.index].name for u in us if not (u.first_local == 0 and u.last)}
    widest = prog.cap.acc_locals * prog.pe  # the accumulators' channels (stream_capacity bounds them)
    assert 0 < widest < max(l.out_shape[0] for l in prog.layers)
    assert split == {l.name for l in prog.layers if l.n_steps > 100 or l.out_shape[0] > widest}
    assert len(us) == prog.cap.layers
    for u in us:  # each pass within a half and the accumulators, a layer's passes covering its channels in order
        assert u.layer.n_steps <= 100 and u.layer.out_shape[0] <= widest
    for i, l in enumerate(prog.layers):
        mine = [u for u in us if u.index == i]
        firsts = np.cumsum([0] + [u.layer.out_shape[0] for u in mine[:-1]])
        assert [u.first_local * prog.pe for u in mine] == list(firsts)
        assert sum(u.layer.out_shape[0] for u in mine) == l.out_shape[0] and [u.last for u in mine][-1]
    assert any(prog.layers[u.index].res_buf is not None for u in us if not u.last)  # a residual layer split
    with pytest.raises(UnsupportedError, match="16 of its output channels take 90 steps, more than half the weight "
                                               r"cache \(80 steps\)"):
        BuildConfig(pe=4, weights="dram", weight_cache=80).lower(net)


def test_a_fixed_pattern_layer_in_passes_bit_exact_with_cycles_as_predicted(tmp_path):
    """The digits network's global pool, a fixed-pattern layer, in two passes (cache 128). (Passes of convs
    with a residual run in the band build below.)"""
    model = zoo.build("digits", pe=4)
    cfg = BuildConfig(pe=4, weights="dram", weight_cache=128)
    us = units(cfg.lower(model))
    assert [sum(u.index == i for u in us) for i, l in enumerate(model.layers) if l.kind == "avgpool"] == [2]
    out = tmp_path / "passes"
    man = build(model, cfg, out)
    result = simulate(model, out, random_images(model, 2, seed=8))
    assert result["mismatches"] == 0 and not result["stream_problems"], result
    assert result["cycles_per_image"] == man["predicted_cycles"]


@pytest.fixture(scope="module")
def dram_build(net, tmp_path_factory):
    """The design with weights from DRAM, built and compiled once (its first run compiles it): (folder,
    manifest, images)."""
    out = tmp_path_factory.mktemp("dram") / "build"
    man = build(net, BuildConfig(pe=4, weights="dram"), out)
    return out, man, random_images(net, 3, seed=5)


def test_weights_from_dram_bit_exact_with_cycles_as_predicted(net, dram_build):
    out, man, images = dram_build
    names = {p.name for p in out.iterdir()}
    assert {WEIGHTS_IMAGE, READS_IMAGE} <= names and not any(n.startswith(("pe", "sched")) for n in names)
    exact = simulate(net, out, images)
    assert exact["mismatches"] == 0 and not exact["stream_problems"], exact
    assert exact["outputs_checked"] == 3 * man["output_beats"]
    assert exact["cycles_per_image"] == man["predicted_cycles"] == sum(stream_cycles(BuildConfig(
        pe=4, weights="dram").lower(net)))
    # cocotbext-axi's RAM with random pauses on the address and data channels, streams stalled too
    paused = simulate(net, out, images, stall=0.3, seed=2, compiled=out / "sim_build")
    assert paused["mismatches"] == 0 and not paused["stream_problems"], paused
    assert min(paused["cycles_per_image"]) > man["predicted_cycles"]


def _mutant(out: Path, tmp_path: Path, image: str, change) -> Path:
    """A copy of build ``out`` whose ``image`` (one hex word per line) is ``change(lines)``."""
    copy = tmp_path / "mutant"
    copy.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    (copy / image).write_text("".join(f"{w}\n" for w in change((copy / image).read_text().split())))
    return copy


def _stored_layer(prog, nth: int) -> int:
    return [i for i, l in enumerate(prog.layers) if not l.pattern][nth]


@pytest.mark.parametrize("fault", ["burst address", "dropped beat", "flipped bit"])
def test_dram_faults_are_caught_and_localised(net, dram_build, tmp_path, fault):
    """A fetch word pointing one step off, a beat missing from the DRAM image, or one bit of a weight beat
    flipped: the run differs from the reference, and the first differing layer is the one whose words it hit."""
    out, _, images = dram_build
    images = images[:1]
    if not (out / "sim_build").exists():  # run alone: compile the model first
        assert simulate(net, out, images)["mismatches"] == 0
    prog = BuildConfig(pe=4, weights="dram").lower(net)
    wd = widths(prog)
    k = _stored_layer(prog, 1)
    layer = prog.layers[k]
    start = sum(unit_beats(prog)[:k])  # the layer's first beat in weights.hex
    steps = step_beats(prog, wd)
    layout = read_command_layout(prog, wd)
    if fault == "burst address":
        file = READS_IMAGE
        digits = len((out / READS_IMAGE).read_text().split()[0])

        def change(lines):
            word = int(lines[k], 16) + ((steps * prog.cap.dram_data_bits // 8) << layout["addr"].offset)
            return lines[:k] + [f"{word:0{digits}x}"] + lines[k + 1:]
    elif fault == "dropped beat":
        file = WEIGHTS_IMAGE

        def change(lines):
            return lines[:start + steps // 2] + lines[start + steps // 2 + 1:]
    else:
        file = WEIGHTS_IMAGE
        at = start + steps * (layer.n_steps // 2) + steps - 1  # a PE word's beat in the middle of the layer

        def change(lines):
            word = int(lines[at], 16) ^ 1
            return lines[:at] + [f"{word:04x}"] + lines[at + 1:]
    result = simulate(net, _mutant(out, tmp_path, file, change), images, compiled=out / "sim_build")
    assert result["mismatches"] == 1
    assert result["first_difference"].startswith(f"image 0: layer '{layer.name}':"), result["first_difference"]


def test_the_dram_side_adds_no_multiplier(net):
    """The engines, the caches and the masters cut and count with adders and shifts: the design's only
    multipliers stay the requant units', one per PE, as with everything on chip."""
    from hwgen.fpga.netlist import cell_counts, multipliers
    from hwgen.rtl.top import Top

    for cfg in (BuildConfig(pe=4), BuildConfig(pe=4, weights="dram"), BuildConfig(pe=4, weights="dram", band_words=64)):
        assert multipliers(cell_counts(Top(cfg.lower(net)))) == 4, cfg


@pytest.fixture(scope="module")
def band_build(net, tmp_path_factory):
    """The network with its maps through DRAM in bands, and its largest convs (one with a residual) in up to
    three passes within each band, built and compiled once, run bit-exact with cycles == predicted:
    (folder, program, images)."""
    cfg = BuildConfig(pe=4, weights="dram", band_words=64, weight_cache=100)
    prog = cfg.lower(net)
    passes = [sum(u.index == i and u.band == b for u in units(prog)) for i in range(len(net.layers))
              for b in {u.band for u in units(prog) if u.index == i}]
    assert max(passes) == 3 and any(l.res_buf is not None and l.n_steps > 100 for l in prog.layers)
    out = tmp_path_factory.mktemp("bands") / "build"
    build(net, cfg, out)
    images = random_images(net, 1, seed=4)
    clean = simulate(net, out, images)
    assert clean["mismatches"] == 0 and clean["cycles_match"], clean
    return out, cfg.lower(net), images


def _with_word(out: Path, tmp_path: Path, image: str, index: int, change) -> Path:
    """A copy of build ``out`` whose ``image`` has word ``index`` replaced by ``change(word)``."""
    def swap(lines):
        return lines[:index] + [f"{change(int(lines[index], 16)):0{len(lines[index])}x}"] + lines[index + 1:]
    return _mutant(out, tmp_path, image, swap)


@pytest.mark.parametrize("fault", ["map read address", "short map write"])
def test_band_faults_are_caught_and_localised(net, band_build, tmp_path, fault):
    """A band's input read from one word off, or a band's write one word short: the maps in DRAM (read after
    the image) name the layer that read wrong rows, or the layer whose output was not all written."""
    out, prog, images = band_build
    wd = widths(prog)
    us, dma = units(prog), dma_programs(prog)
    if fault == "map read address":
        layout, image = read_command_layout(prog, wd), READS_IMAGE
        k = next(i for i, r in enumerate(dma.reads) if not r.to_cache and prog.layers[us[r.unit].index].kind == "conv"
                 and us[r.unit].index > 0 and r.beats > word_beats(prog))
        layer = prog.layers[us[dma.reads[k].unit].index]
        word_bytes = word_beats(prog) * prog.cap.dram_data_bits // 8
        change = lambda w: w + (word_bytes << layout["addr"].offset)  # noqa: E731
    else:
        layout, image = write_command_layout(prog, wd), WRITES_IMAGE
        k = len(dma.writes) // 2
        layer = prog.layers[us[dma.writes[k].after - 1].index]
        change = lambda w: w - (1 << layout["words"].offset)  # noqa: E731
    result = simulate(net, _with_word(out, tmp_path, image, k, change), images, compiled=out / "sim_build")
    assert result["mismatches"] == 1
    assert result["first_difference"].startswith(f"image 0: layer '{layer.name}':"), result["first_difference"]


def test_space_to_depth_stem_in_bands_bit_exact_with_cycles_as_predicted(tmp_path):
    """A 7x7/2 stem (padding 3) over the host's space-to-depth: a 4x4 stride-1 conv over 12-channel blocks,
    in bands through DRAM, then a max pool; bit-exact against the reference with cycles == predicted, and
    under cocotbext-axi's random pauses."""
    b = NetBuilder("s2d_net", (3, 18, 14), pe=4, density=0.5, seed=3)
    b.conv(8, 7, 2, 3)
    b.maxpool(3, 2, 1)
    b.conv(8, 3)
    b.avgpool()
    b.linear(5)
    model = b.finish()
    cfg = BuildConfig(pe=4, weights="dram", band_words=80, stem="space_to_depth")
    prog = cfg.lower(model)
    assert prog.space_to_depth == (2, 3, 12, 10) and prog.im2col is None
    assert (prog.layers[0].in_shape, prog.layers[0].kh, prog.layers[0].stride) == ((12, 12, 10), 4, 1)
    assert len({u.band for u in units(prog) if u.index == 0}) > 1
    im2col = BuildConfig(pe=4, weights="dram", band_words=80).lower(model)
    # one word of 12 channels per pixel of the 12x10 grid, where im2col has ten of 147 per output pixel
    assert prog.input_beats == 12 * 10 and im2col.input_beats == 10 * 9 * 7
    out = tmp_path / "s2d"
    man = build(model, cfg, out)
    assert man["space_to_depth"] == [2, 3, 12, 10]
    # on one data bus for both directions a layer takes at least its beats, and no less than predicted
    dram = man["dram"]
    assert dram["shared_bus_estimate"] >= max(man["predicted_cycles"], sum(dram["layer_beats"]))
    assert dram["shared_bus_estimate"] == sum(max(l["cycles"], b) for l, b in zip(man["layers"], dram["layer_beats"]))
    images = random_images(model, 2, seed=6)
    exact = simulate(model, out, images)
    assert exact["mismatches"] == 0 and not exact["stream_problems"], exact
    assert exact["cycles_per_image"] == man["predicted_cycles"]
    paused = simulate(model, out, images, stall=0.3, seed=3, compiled=out / "sim_build")
    assert paused["mismatches"] == 0 and not paused["stream_problems"], paused
