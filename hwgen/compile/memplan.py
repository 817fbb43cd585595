"""The memory tier's plan (docs/dram.md): for an on-chip budget, where each feature map and each layer's
weights live, the DRAM traffic that follows, and a roofline estimate of the cycles per image.

- Feature maps stay in on-chip buffers while every map live at the same time fits the budget left for
  them; the others go through DRAM, read once per pass (a ring of rows on chip holds the kernel's halo) and
  written once.
- Weights stay in on-chip ROM when all of them fit; otherwise each layer's step words (its schedule entries
  and the PE words of its kept groups, nothing of a pruned group) stream from DRAM into a double-buffered
  weight cache, in passes over slices of the output channels small enough for one half of the cache. A
  layer of more passes reads its input map once per pass.
- Fixed-pattern layers (pools, option-A shortcuts, ``HwLayer.pattern``) have no stored weights: the
  hardware generates them.
- A layer costs the larger of its compute cycles and its memory cycles (transfers overlap compute), plus
  the latency and the first rows it must wait for. This is an estimate of the design, not yet a prediction
  checked in simulation (the DRAM datapath is not built); its inputs are exact: shapes, steps, words.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..contract import mapping
from ..contract.hardware import pe_rom_width, rq_width, schedule_layout, widths
from .lower import RESULT_BUF, HwLayer, Program, layer_cycles

INPUT = "input"  # the tensor the host streams in


@dataclass(frozen=True)
class Dram:
    """An external memory as the plan sees it: sustained bytes per accelerator cycle and the cycles from a
    request to its first data. Default: 16-bit SDR SDRAM clocked with the accelerator (ULX3S), peak rate."""
    bytes_per_cycle: float = 2.0
    latency: int = 16

    def cycles(self, nbytes: int) -> int:
        return -(-nbytes * 1000 // round(self.bytes_per_cycle * 1000)) if nbytes else 0


@dataclass(frozen=True)
class LayerPlan:
    name: str
    compute_cycles: int
    passes: int  # slices of the output channels, each with its weights in one half of the cache
    input_dram: bool
    output_dram: bool
    residual_dram: bool
    weights: str  # "rom" | "stream" | "generated"
    read_bytes: int  # maps and weights read from DRAM
    write_bytes: int  # maps written to DRAM
    memory_cycles: int
    cycles: int

    @property
    def bound(self) -> str:
        return "memory" if self.memory_cycles > self.compute_cycles else "compute"


@dataclass(frozen=True)
class MemoryPlan:
    budget_bits: int
    onchip_bits: dict[str, int]  # what the on-chip memories hold: ROMs, cache, buffers, rings, result
    cache_bits: int  # one half of the weight cache (0: weights in ROM)
    layers: tuple[LayerPlan, ...]
    dram: Dram = field(default_factory=Dram)

    @property
    def cycles(self) -> int:
        return sum(l.cycles for l in self.layers)

    @property
    def compute_cycles(self) -> int:
        return sum(l.compute_cycles for l in self.layers)

    @property
    def traffic_bytes(self) -> int:
        return sum(l.read_bytes + l.write_bytes for l in self.layers)

    @property
    def uses_dram(self) -> bool:
        return self.traffic_bytes > 0


class PlanError(ValueError):
    pass


# ---------------------------------------------------------------- what each layer reads, writes and stores

@dataclass(frozen=True)
class _Tensors:
    """The program's feature maps, named by their producer (INPUT for the streamed input): each layer's input,
    residual and output, and the layers during which each map must be held."""
    source: tuple[str, ...]
    residual: tuple[str | None, ...]
    bits: dict[str, int]
    live: dict[str, tuple[int, int]]  # first and last layer index


def map_bits(shape: tuple[int, int, int], lanes: int, act_bits: int) -> int:
    c, h, w = shape
    return mapping.num_blocks(c, lanes) * h * w * lanes * act_bits


def _tensors(prog: Program) -> _Tensors:
    holder = {0: INPUT}  # buffer -> the map it holds now (the allocator never overwrites a live map)
    bits = {INPUT: map_bits(prog.input_shape, prog.lanes, prog.act_bits)}
    live, source, residual = {INPUT: (0, 0)}, [], []
    for i, l in enumerate(prog.layers):
        src, res = holder[l.in_buf], None if l.res_buf is None else holder[l.res_buf]
        source.append(src)
        residual.append(res)
        for t in (src, res):
            if t is not None:
                live[t] = (live[t][0], i)
        if l.out_buf != RESULT_BUF:
            holder[l.out_buf] = l.name
            bits[l.name] = map_bits(l.out_shape, prog.lanes, prog.act_bits)
            live[l.name] = (i, i)
    return _Tensors(tuple(source), tuple(residual), bits, live)


def step_bits(prog: Program) -> int:
    """Bits of one step's weights: its schedule entry and one PE word per PE."""
    wd = widths(prog)
    return schedule_layout(wd).size + prog.pe * pe_rom_width(prog, wd)


def ring_bits(prog: Program, layer: HwLayer) -> int:
    """A ring of input rows for a map read from DRAM: the rows a tile's outputs reach (kernel halo and
    stride), and as many again to fill while they are read; never more than the whole map."""
    c, h_in, w_in = layer.in_shape
    rows = layer.kh + layer.stride * (-(-prog.tile // layer.out_shape[2]))
    return min(2 * rows, h_in) * mapping.num_blocks(c, prog.lanes) * w_in * prog.lanes * prog.act_bits


# ---------------------------------------------------------------- the plan

def _maps_on_chip(t: _Tensors, n_layers: int, budget: int) -> set[str]:
    """Smallest maps first, each kept on chip if, at every layer while it is live, the maps kept so far and
    it fit ``budget``."""
    load, kept = [0] * n_layers, set()
    for name in sorted(t.bits, key=lambda n: (t.bits[n], n)):
        first, last = t.live[name]
        if all(load[i] + t.bits[name] <= budget for i in range(first, last + 1)):
            kept.add(name)
            for i in range(first, last + 1):
                load[i] += t.bits[name]
    return kept


def _layer(prog: Program, layer: HwLayer, t: _Tensors, i: int, on_chip: set[str], cache: int,
           dram: Dram) -> LayerPlan:
    act_bytes = lambda name: t.bits[name] // 8  # noqa: E731
    src, res = t.source[i], t.residual[i]
    generated, stream = layer.pattern, cache > 0
    layer_bits = layer.n_steps * step_bits(prog)
    passes = 1 if generated or not stream else max(1, -(-layer_bits // cache))
    passes = min(passes, layer.locals(prog.pe))  # a pass holds at least one output channel per PE
    steps = -(-layer.n_steps // passes)
    compute = passes * layer_cycles(prog, layer, steps, -(-layer.locals(prog.pe) // passes))
    input_dram, res_dram = src not in on_chip, res is not None and res not in on_chip
    output_dram = layer.out_buf != RESULT_BUF and layer.name not in on_chip
    weight_bytes = 0 if generated or not stream else -(-layer_bits // 8)
    read = (passes * act_bytes(src) if input_dram else 0) + (act_bytes(res) if res_dram else 0) + weight_bytes
    write = act_bytes(layer.name) if output_dram else 0
    memory = dram.cycles(read + write)
    # before the first tile: a request's latency, its first input rows and the first pass's weights
    first = (ring_bits(prog, layer) // 2 // 8 if input_dram else 0) + weight_bytes // passes
    fill = dram.latency + dram.cycles(first) if read + write else 0
    return LayerPlan(layer.name, compute, passes, input_dram, output_dram, res_dram,
                     "generated" if generated else "stream" if stream else "rom", read, write, memory,
                     max(compute, memory) + fill)


def _plan_with(prog: Program, budget: int, cache: int, dram: Dram) -> MemoryPlan | None:
    t = _tensors(prog)
    rq = prog.pe * rq_width(prog) * sum(l.locals(prog.pe) for l in prog.layers)
    stored = [l for l in prog.layers if not l.pattern]
    rom = sum(l.n_steps for l in stored) * step_bits(prog) if cache == 0 else 0
    result = prog.res_depth * prog.pe * prog.out_bits
    fixed = {"requant ROM": rq, "weight ROM": rom, "weight cache": 2 * cache, "result memory": result}
    left = budget - sum(fixed.values())
    if left < 0:
        return None
    # one ring, as large as the largest a layer reading its input from DRAM needs: the maps are planned in
    # what it leaves, which may send more maps to DRAM and so need a larger ring (a few rounds settle it)
    rings = 0
    while True:  # rings only grow, up to the largest of all: this ends
        on_chip = _maps_on_chip(t, len(prog.layers), left - rings)
        need = max((ring_bits(prog, l) for i, l in enumerate(prog.layers) if t.source[i] not in on_chip),
                   default=0)
        if need <= rings:
            break
        rings = need
    fixed["input ring"] = rings
    peak = max(sum(t.bits[n] for n in on_chip if t.live[n][0] <= i <= t.live[n][1])
               for i in range(len(prog.layers)))
    onchip = {**fixed, "map buffers": peak}
    if sum(onchip.values()) > budget:
        return None
    layers = tuple(_layer(prog, l, t, i, on_chip, cache, dram) for i, l in enumerate(prog.layers))
    return MemoryPlan(budget, {k: v for k, v in onchip.items() if v}, cache, layers, dram)


def plan(prog: Program, budget_bits: int, dram: Dram = Dram()) -> MemoryPlan:
    """The plan of fewest estimated cycles within ``budget_bits`` of on-chip memory: weights in ROM if they
    fit, else the weight cache size (a power of two of step words) that leaves the best room for maps."""
    best = _plan_with(prog, budget_bits, 0, dram)
    largest = max(l.n_steps for l in prog.layers if not l.pattern) * step_bits(prog)
    cache = step_bits(prog)
    while cache <= 2 * largest:
        candidate = _plan_with(prog, budget_bits, cache, dram)
        if candidate is not None and (best is None or candidate.cycles < best.cycles):
            best = candidate
        cache *= 2
    if best is None:
        raise PlanError(f"no memory plan fits {budget_bits:,} bits on chip: the requant ROM, the result memory "
                        f"and the smallest weight cache alone need more")
    return best
