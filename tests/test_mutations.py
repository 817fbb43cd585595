"""Mutation checks: flip one bit of a weight ROM word, a requant constant or a layer descriptor in the
images of a build, run the unchanged compiled model on them, and require the check to fail and to name the
mutated layer (and, for weights and requant constants, the mutated channel) with expected and got.

The network (netgen.mutation_net) has inputs >= 1, shift-0 requantization with distinct per-channel
constants and output widths from the worst case, so every mutation below changes some output value: none
is an equivalent mutant, and "caught" means the hardware check really saw it. The unmutated images pass.
"""
import re
import shutil

import numpy as np
import pytest

from hwgen.contract.hardware import DESC_IMAGE, PE_ROM_READ, descriptor_layout, pe_image, pe_rom_width, rq_image, widths
from hwgen.contract.encoding import REQUANT_MUL_BITS
from hwgen.compile.lower import lower
from hwgen.contract.hardware import rom_word_position
from hwgen.sim.stream import simulate
from netgen import CAPACITY, LANES, PE, TILE, compiled_model, mutation_images, mutation_net

DESC_FIELDS = ("n_steps", "sched_base", "rq_base", "w_in", "locals", "in_signed")


def mutations():
    """(label, image file, word, bit, layer name, channel or None), seeded and deterministic."""
    model = mutation_net()
    prog = lower(model, PE, LANES, TILE, capacity=CAPACITY)
    wd = widths(prog)
    fields = {name: (f.offset, f.width) for name, f in descriptor_layout(prog, wd)}
    rng = np.random.default_rng(3)
    out, step, rq = [], 0, 0
    for i, l in enumerate(prog.layers):
        c_in, locals_ = l.in_shape[0], l.locals(PE)
        while True:  # a word of a kept group (idle slots hold zero codes)
            p, s = int(rng.integers(PE)), step + int(rng.integers(l.n_steps))
            o = int(l.schedule.slots[(s - step) // (l.kh * l.kw), p])
            if o >= 0:
                break
        block = int(l.schedule.block[(s - step) // (l.kh * l.kw)])
        lo, lane = o // PE, int(rng.integers(min(LANES, c_in - block * LANES)))  # a real channel's lane
        out.append((f"{l.name} weight code", pe_image(p), s, 2 * lane, l.name, lo * PE + p))
        if locals_ > 1:
            out.append((f"{l.name} weight channel", pe_image(p), s, 2 * LANES, l.name, None))
        p, lo = int(rng.integers(PE)), int(rng.integers(locals_))
        if lo * PE + p >= l.out_shape[0]:
            lo = 0
        base = REQUANT_MUL_BITS + prog.bias_bits
        for what, bit in (("mul", int(rng.integers(REQUANT_MUL_BITS))),
                          ("bias", REQUANT_MUL_BITS + int(rng.integers(8))), ("shift", base)):
            out.append((f"{l.name} requant {what}", rq_image(p), rq + lo, bit, l.name, lo * PE + p))
        desc = {"n_steps": l.n_steps, "sched_base": step, "rq_base": rq, "w_in": l.in_shape[2],
                "locals": locals_, "in_signed": int(l.in_signed)}
        for name in DESC_FIELDS:
            value = desc[name]
            if bin(value).count("1") < (1 if name in ("sched_base", "rq_base", "in_signed") else 2):
                continue  # clearing the only set bit of a count would leave a zero-length loop
            low = (value & -value).bit_length() - 1  # clear the lowest set bit: a smaller value, still valid
            out.append((f"{l.name} descriptor {name}", DESC_IMAGE, i, fields[name][0] + low, l.name, None))
        step += l.n_steps
        rq += locals_
    return out


MUTATIONS = mutations()


def _copy(anchor, dst):
    shutil.copytree(anchor, dst, ignore=shutil.ignore_patterns("sim_build*", "*.v", "sim_*.json", "*.log"))
    return dst


def _flip(path, word, bit):
    lines = path.read_text().splitlines()
    if path.name.startswith("pe"):  # PE ROMs are stored in banks side by side (hardware.rom_layout)
        prog = lower(mutation_net(), PE, LANES, TILE, capacity=CAPACITY)
        word, low = rom_word_position(word, pe_rom_width(prog, widths(prog)), CAPACITY.steps, PE_ROM_READ)
        bit += low
    lines[word] = f"{int(lines[word], 16) ^ (1 << bit):0{len(lines[word])}x}"
    path.write_text("\n".join(lines) + "\n")


def test_unmutated_images_pass(tmp_path, tmp_path_factory):
    anchor, compiled = compiled_model(tmp_path_factory)
    model = mutation_net()
    result = simulate(model, _copy(anchor, tmp_path / "clean"), mutation_images(model), compiled=compiled,
                      snapshots=True)
    assert result["mismatches"] == 0 and result["first_difference"] is None, result


def test_every_layer_and_every_kind_of_word_is_mutated():
    kinds = {(m[4], m[0].split(" ", 1)[1].split()[0]) for m in MUTATIONS}
    assert kinds == {(f"conv{i}", k) for i in (1, 2, 3) for k in ("weight", "requant", "descriptor")}


@pytest.mark.parametrize("label,image,word,bit,layer,channel", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_is_caught_and_located(label, image, word, bit, layer, channel, tmp_path, tmp_path_factory):
    anchor, compiled = compiled_model(tmp_path_factory)
    model = mutation_net()
    case = _copy(anchor, tmp_path / "mutant")
    _flip(case / image, word, bit)
    result = simulate(model, case, mutation_images(model), compiled=compiled)
    assert result["mismatches"] > 0, f"{label}: not caught"
    where = result["first_difference"]
    assert re.search(rf"layer '{layer}': channel \d+, pixel \(y=\d+, x=\d+\): expected -?\d+, got -?\d+", where), where
    if channel is not None:
        assert f"channel {channel}," in where, where
