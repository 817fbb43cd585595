"""IR -> Verilog, ROM images and manifest.json, written atomically into one output folder."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog

from .. import __version__
from . import outdir
from ..compile.lower import Program, layer_cycles, lower, predicted_cycles, utilization
from ..compile.roms import descriptor_words, net_word, pe_roms, rq_roms, schedule_rom
from ..compile.dram import MODEL_LATENCY, dram_image, read_words, stream_capacity, stream_cycles, write_words
from ..compile.units import dma_programs, dram_map, units, word_beats
from ..contract.hardware import (DESC_IMAGE, NET_IMAGE, PE_ROM_READ, SCHED_IMAGE, SCHED_ROM_READ, Capacity,
                                 descriptor_layout, hex_image, net_layout, pe_image, pe_rom_width, rq_image, rq_width,
                                 schedule_layout, widths)
from ..contract.dram_layout import (READS_IMAGE, RQ_IMAGE, WEIGHTS_IMAGE, WEIGHT_WAIT_CYCLES, WRITES_IMAGE,
                                    read_command_layout, write_command_layout)
from ..contract.ir import Model
from ..rtl.extmem import MEM_VERILOG
from ..rtl.top import Top
from .report import render, unbalanced_program

TOP_NAME = "hwgen_top"
VERILOG_FILES = ("hwgen_top.v", "hwgen_mem.v")


@dataclass(frozen=True)
class BuildConfig:
    pe: int
    lanes: int = 16
    tile: int = 16
    capacity: Capacity | None = None  # hardware sizes to fit the network into (default: its own)
    pe_kind: str = "ternary"  # encoding.PE_KINDS; "mac" is the int8 multiply-accumulate baseline
    weights: str = "rom"  # WEIGHT_PLACES: "dram" streams them into a weight cache (docs/dram.md)
    weight_cache: int | None = None  # with "dram": step words per half of the cache (None: the largest layer's)
    band_words: int = 0  # with "dram": the maps through DRAM too, in bands of buffers of this many words
    out_band_words: int = 0  # of the residual and output band buffers (0: band_words)
    stem: str = "im2col"  # lower.STEMS: the host's transform of the input for the first conv

    def lower(self, model: Model) -> Program:
        """The program this configuration builds ``model`` into: the one lowering every stage (build, sim,
        synth, run) works from."""
        if self.weights not in WEIGHT_PLACES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_PLACES)}, found {self.weights!r}")
        capacity = self.capacity
        if self.band_words and self.weights != "dram":
            raise ValueError("maps in DRAM (band_words) need the weights in DRAM too (weights='dram')")
        if self.weights == "dram" and not (capacity and capacity.weight_cache):  # sizes of its own
            own = lower(model, self.pe, self.lanes, self.tile, self.stem, capacity=capacity, pe_kind=self.pe_kind)
            capacity = stream_capacity(own, self.weight_cache, self.band_words, self.out_band_words)
        # a given capacity with band buffers: band_words is then the budget of this network's bands
        budget = self.band_words if self.capacity and self.capacity.band_words else 0
        return lower(model, self.pe, self.lanes, self.tile, self.stem, capacity=capacity, pe_kind=self.pe_kind,
                     band_budget=budget)


WEIGHT_PLACES = ("rom", "dram")


def manifest(model: Model, prog: Program) -> dict:
    streamed = bool(prog.cap.weight_cache)
    word_bits = prog.pe * pe_rom_width(prog, widths(prog))  # a step's PE words; a fixed pattern has none
    rom_bits = {l.name: 0 if l.pattern else l.n_steps * word_bits for l in prog.layers}
    cycles = per_layer(prog, stream_cycles(prog)) if streamed else [layer_cycles(prog, l) for l in prog.layers]
    # what the units would take if DRAM never kept them waiting: their own compute and one wait cycle each
    unit_cycles = per_layer(prog, [layer_cycles(prog, u.layer) + WEIGHT_WAIT_CYCLES for u in units(prog)]) \
        if streamed else None
    kept = sum(int(l.kept.sum()) for l in prog.layers)
    total = sum(l.kept.size for l in prog.layers)
    return {
        "generator": f"{outdir.HWGEN.name} {__version__}", "model": model.name, "top": TOP_NAME,
        "pe": prog.pe, "lanes": prog.lanes, "tile": prog.tile, "pe_kind": prog.pe_kind,
        "predicted_cycles": sum(cycles), "utilization": round(utilization(prog), 6),
        "rom_bits": sum(rom_bits.values()), "kept_groups": kept, "total_groups": total,
        "idle_slots": sum(l.schedule.idle_slots * l.kh * l.kw for l in prog.layers),
        "act_bits": prog.act_bits, "acc_bits": prog.acc_bits, "out_bits": prog.out_bits,
        "out_signed": prog.out_signed, "input_beats": prog.input_beats, "output_beats": prog.output_beats,
        "input_shape": list(model.input.shape), "stream_shape": list(prog.input_shape),
        "im2col": list(prog.im2col) if prog.im2col else None, "output_shape": list(prog.layers[-1].out_shape),
        **({"space_to_depth": list(prog.space_to_depth)} if prog.space_to_depth else {}),
        "buffer_bits": buffer_bits(prog),
        "files": list(VERILOG_FILES), "capacity": prog.cap.to_json(),
        **({"dram": dram_summary(prog, cycles)} if streamed else {}),
        "layers": [{
            "name": l.name, "kind": l.kind, "in_shape": list(l.in_shape), "out_shape": list(l.out_shape),
            "kernel": [l.kh, l.kw], "stride": l.stride, "padding": l.pad, "in_buf": l.in_buf, "out_buf": l.out_buf,
            "kept_groups": int(l.kept.sum()), "total_groups": int(l.kept.size), "waves": list(l.schedule.waves),
            "steps": l.n_steps, "rom_bits": rom_bits[l.name], "acc_bound": l.acc_bound, "cycles": cycles[k],
            **({"compute_cycles": layer_cycles(prog, l), "units": sum(u.index == k for u in units(prog)),
                "unit_cycles": unit_cycles[k]}
               if streamed else {}),
            "utilization": round(utilization(prog, [l]), 6),
        } for k, l in enumerate(prog.layers)],
    }


def dram_summary(prog: Program, layer_cycles_: list[int]) -> dict:
    """The DRAM traffic per image and what it costs, against the memory of the prediction (compile/dram.py);
    ``layer_cycles_``: the predicted cycles per layer."""
    where, dma = dram_map(prog), dma_programs(prog)
    beat_bytes = prog.cap.dram_data_bits // 8

    def per(unit_beats):  # (unit, beats) pairs -> beats per layer
        sums = [0] * len(units(prog))
        for k, beats in unit_beats:
            sums[k] += beats
        return per_layer(prog, sums)
    weight_beats = per((r.unit, r.beats) for r in dma.reads if r.to_cache)
    read_beats = per((r.unit, r.beats) for r in dma.reads if not r.to_cache)
    write_beats = per((w.after - 1, w.words * word_beats(prog)) for w in dma.writes)  # after the unit that wrote it
    layer_beats = [sum(x) for x in zip(weight_beats, read_beats, write_beats)]
    # The model's memory reads and writes at once, a beat each way per cycle; an SDR SDRAM has one data bus.
    # On it a layer takes about its predicted cycles or its beats, whichever is more (an estimate, not a
    # bound: a layer's fetches may overlap its neighbours' compute, and turns between the two cost more).
    return {"model_latency": MODEL_LATENCY, "data_bits": prog.cap.dram_data_bits,
            "shared_bus_estimate": sum(max(c, b) for c, b in zip(layer_cycles_, layer_beats)),
            "weights_bytes": sum(weight_beats) * beat_bytes, "compute_cycles": predicted_cycles(prog),
            "layer_beats": layer_beats,
            "bytes": where.end, "maps": where.maps,
            "word_bytes": word_beats(prog) * beat_bytes if prog.cap.band_words else 0,
            "map_read_bytes": sum(read_beats) * beat_bytes, "map_write_bytes": sum(write_beats) * beat_bytes}


def per_layer(prog: Program, values: list[int]) -> list[int]:
    """Per-unit figures (``units.units``) summed per layer."""
    sums = [0] * len(prog.layers)
    for u, v in zip(units(prog), values):
        sums[u.index] += v
    return sums


def buffer_bits(prog: Program) -> int:
    """Bits of the activation buffers and the result memory, as rtl.top instantiates them."""
    return prog.n_bufs * prog.buf_depth * prog.lanes * prog.act_bits + prog.res_depth * prog.pe * prog.out_bits


def generate(model: Model, cfg: BuildConfig, note: str = "", compare_unbalanced: bool = False,
             prog: Program | None = None) -> dict[str, str]:
    """All output files as name -> text. Pure: the same model and config give the same bytes. ``prog`` is
    ``cfg.lower(model)`` when the caller has it already, so that a model is lowered once."""
    prog = cfg.lower(model) if prog is None else prog
    files = {"hwgen_top.v": verilog.convert(Top(prog), name=TOP_NAME, emit_src=False), "hwgen_mem.v": MEM_VERILOG}
    files.update(images(prog))
    man = manifest(model, prog)
    files["manifest.json"] = json.dumps(man, indent=1) + "\n"
    unbalanced = unbalanced_program(model, cfg) if compare_unbalanced else None
    files["report.md"] = render(man, prog, note or f"Model '{model.name}' from its IR.", unbalanced)
    return files


def images(prog: Program) -> dict[str, str]:
    """The ROM images: all that differs between networks built into the same capacity."""
    wd = widths(prog)
    files = {DESC_IMAGE: hex_image(descriptor_words(prog), descriptor_layout(prog, wd).size),
             NET_IMAGE: hex_image([net_word(prog)], net_layout(prog).size)}
    per_pe, width = rq_roms(prog), rq_width(prog)
    if prog.cap.weight_cache:  # the step words live in DRAM; the read program says where
        files[READS_IMAGE] = hex_image(read_words(prog), read_command_layout(prog, wd).size)
        if prog.cap.band_words:
            files[WRITES_IMAGE] = hex_image(write_words(prog), write_command_layout(prog, wd).size)
        files[WEIGHTS_IMAGE] = hex_image(dram_image(prog), prog.cap.dram_data_bits)
        # one requant ROM of every PE's words side by side (rtl/top.py)
        files[RQ_IMAGE] = hex_image([sum(w << (p * width) for p, w in enumerate(row)) for row in zip(*per_pe)],
                                    prog.pe * width)
    else:
        files = {SCHED_IMAGE: hex_image(schedule_rom(prog, wd), schedule_layout(wd).size, prog.cap.steps,
                                        SCHED_ROM_READ), **files}
        for p, words in enumerate(pe_roms(prog, wd)):
            files[pe_image(p)] = hex_image(words, pe_rom_width(prog, wd), prog.cap.pe_steps, PE_ROM_READ)
        for p, words in enumerate(per_pe):
            files[rq_image(p)] = hex_image(words, width)
    return files


def write_atomically(files: dict[str, str], out: Path) -> None:
    """Write into a temporary sibling folder and rename it into place (hwgen.build.outdir): a failure leaves the
    previous output intact, and only an output of hwgen is replaced. ``files`` holds manifest.json, which
    marks the folder as hwgen's."""
    out = Path(out)
    tmp = outdir.sibling(out)
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        outdir.swap_in(tmp, out, outdir.HWGEN)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def build_images(model: Model, cfg: BuildConfig, out: Path) -> dict:
    """The ROM images and manifest.json alone, no Verilog: enough to run the network on a model compiled
    from any build with the same pe, lanes, tile and capacity (hwgen.sim.stream.compile_model)."""
    outdir.check(out, outdir.HWGEN)  # before any work
    prog = cfg.lower(model)
    man = manifest(model, prog)
    write_atomically({**images(prog), "manifest.json": json.dumps(man, indent=1) + "\n"}, out)
    return man


def build(model: Model, cfg: BuildConfig, out: Path, note: str = "", compare_unbalanced: bool = False) -> dict:
    outdir.check(out, outdir.HWGEN)  # before any work
    files = generate(model, cfg, note, compare_unbalanced)
    write_atomically(files, out)
    return json.loads(files["manifest.json"])
