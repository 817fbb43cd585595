"""``report.md``: the build in numbers a person reads — per layer cycles, utilization, groups, memory bits
and accumulator widths, totals, compression, and what unbalanced pruning would cost."""
from __future__ import annotations

from dataclasses import replace

from ..contract.ir import signed_width
from ..contract.mapping import prunable
from ..compile.lower import HwLayer, Program, layer_cycles, predicted_cycles, real_lanes, utilization

def compression(prog: Program) -> dict:
    """The papers' figure (docs/design.md §2) over the prunable layers: 32-bit float weights against
    2·t_ex-bit ones, pruned groups not stored, so 16 / (t_ex · kept fraction) for one layer; over several,
    16 · groups / Σ t_ex · kept groups, and parameter-weighted, 16 · weights / Σ t_ex · kept weights."""
    layers = prunable(prog.layers)
    kept = sum(int(l.kept.sum()) for l in layers)
    total = sum(int(l.kept.size) for l in layers)
    stored = sum(l.tex * int(l.kept.sum()) for l in layers)
    weights_stored = sum(l.tex * int((l.kept * real_lanes(l, prog.lanes)).sum()) * l.kh * l.kw
                         for l in layers)
    weights = sum(l.weight.size for l in layers)
    density = kept / total if total else 1.0
    return {"prunable_groups": total, "kept_groups": kept, "group_density": round(density, 6),
            "compression": round(16 * total / stored, 3) if stored else None,
            "parameter_compression": round(16 * weights / weights_stored, 3) if weights_stored else None}


def balanced_cycles(prog: Program, layer: HwLayer) -> int:
    """Cycles of the layer if its kept groups were spread evenly over the PEs (waves_j = ceil(kept_j / N))."""
    waves = [-(-int(k[:, j].sum()) // prog.pe) for k in layer.plane_kept for j in range(k.shape[1])]
    return layer_cycles(prog, layer, max(1, sum(waves)) * layer.kh * layer.kw)


def render(manifest: dict, prog: Program, note: str, unbalanced: Program | None = None) -> str:
    comp = compression(prog)
    lines = [
        f"# {manifest['model']}: {prog.pe} PEs x {prog.lanes} lanes", "",
        note, "",
        f"- predicted cycles per image: **{manifest['predicted_cycles']:,}**",
        f"- utilization (useful lane-adds / (N·L·cycles)): **{manifest['utilization']:.4f}**",
        f"- {'weights (in DRAM, no weight ROM)' if 'dram' in manifest else 'weight ROM'}: {manifest['rom_bits']:,} "
        f"bits; activation buffers: {manifest['buffer_bits']:,} bits "
        f"({prog.n_bufs} buffers of {prog.buf_depth:,} words)",
        f"- prunable groups kept: {comp['kept_groups']:,} of {comp['prunable_groups']:,} (density "
        f"{comp['group_density']:.3f}); compression 16 / (t_ex · kept fraction) = **{comp['compression']}x**, "
        f"parameter-weighted {comp['parameter_compression']}x",
        f"- accumulator width {prog.acc_bits} bits (the largest per-layer bound below), activations "
        f"{prog.act_bits} bits, results {prog.out_bits} bits",
    ]
    if prog.im2col:
        k, s, p = prog.im2col
        lines.append(f"- the first conv runs as a 1x1 conv over the host's im2col ({k}x{k}, stride {s}, padding {p})")
    if prog.space_to_depth:
        b, p, rows, cols = prog.space_to_depth
        first = prog.layers[0]
        lines.append(f"- the first conv runs as a {first.kh}x{first.kw} stride-1 conv over the host's space-to-depth "
                     f"({b}x{b} blocks of the input padded by {p}: {first.in_shape[0]} channels, {rows}x{cols})")
    idle = manifest["idle_slots"]
    ideal = sum(balanced_cycles(prog, l) for l in prog.layers)
    lines.append(f"- idle PE slots from unbalanced pruning: {idle:,}; the same kept groups spread evenly "
                 f"would take {ideal:,} cycles")
    if unbalanced is not None:
        u_cycles = predicted_cycles(unbalanced)
        # like for like: with DRAM, both without it (the pruning changes the compute, not the traffic)
        ours = manifest["dram"]["compute_cycles"] if "dram" in manifest else manifest["predicted_cycles"]
        lines.append(f"- paper-style (unbalanced) pruning of the same number of groups per layer: "
                     f"{u_cycles:,} cycles{' with everything on chip' if 'dram' in manifest else ''} "
                     f"(**{u_cycles / ours - 1:+.1%}**), utilization "
                     f"{utilization(unbalanced):.4f}: PEs with fewer kept groups in a block idle while the "
                     f"fullest PE finishes its waves")
    lines += _dram_lines(manifest)
    lines += ["", "| layer | kind | in | out | kernel/stride | kept/total groups | waves | cycles | util | "
              "ROM bits | acc bits |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for l, entry in zip(prog.layers, manifest["layers"]):
        waves = entry["waves"]
        wave_text = f"{min(waves)}-{max(waves)}" if min(waves) != max(waves) else str(waves[0])
        lines.append(
            f"| {l.name} | {l.kind}{' +res' if l.res_buf is not None else ''} | {'x'.join(map(str, l.in_shape))} | "
            f"{'x'.join(map(str, l.out_shape))} | {l.kh}x{l.kw}/{l.stride} | {int(l.kept.sum())}/{l.kept.size} | "
            f"{wave_text} | {entry['cycles']:,} | {entry['utilization']:.3f} | "
            f"{entry['rom_bits']:,} | {signed_width(l.acc_bound)} |")
    return "\n".join(lines) + "\n"


def _dram_lines(manifest: dict, clock_mhz: float = 100.0) -> list[str]:
    """With weights (and maps) in DRAM: the traffic per image and, per layer, whether the compute or the DRAM
    bounds it, against the prediction's memory (fixed latency, one beat per cycle)."""
    dram = manifest.get("dram")
    if not dram:
        return []
    total, compute = manifest["predicted_cycles"], dram["compute_cycles"]
    moved = dram["weights_bytes"] + dram["map_read_bytes"] + dram["map_write_bytes"]
    lines = [f"- DRAM traffic per image: {moved:,} bytes over a {dram['data_bits']}-bit port (weights "
             f"{dram['weights_bytes']:,}, maps read {dram['map_read_bytes']:,}, written {dram['map_write_bytes']:,}); "
             f"against a memory of {dram['model_latency']} cycles latency and one beat per cycle: {total:,} cycles, "
             f"{compute:,} with everything on chip (**{total / compute:.3f}x**), {clock_mhz * 1e6 / total:,.1f} "
             f"images/s at {clock_mhz:g} MHz",
             f"- that memory reads and writes at once; on one data bus for both (an SDR SDRAM's), about "
             f"{dram['shared_bus_estimate']:,} cycles (each layer its cycles here or its DRAM beats, whichever is "
             f"more; docs/dram.md)",
             "", "(compute cycles: the layer whole, then its passes and bands, if DRAM never kept them waiting)", "",
             "| layer | compute cycles | in units | DRAM beats | cycles with DRAM | bound |",
             "|---|---|---|---|---|---|"]
    for entry, beats in zip(manifest["layers"], dram["layer_beats"]):
        # transfers overlap the neighbouring units; DRAM bounds a layer whose units wait for them
        bound = "memory" if entry["cycles"] > entry["unit_cycles"] else "compute"
        lines.append(f"| {entry['name']} | {entry['compute_cycles']:,} | {entry['unit_cycles']:,} | {beats:,} | "
                     f"{entry['cycles']:,} | {bound} |")
    return lines


def unbalanced_program(model, cfg, seed: int = 0) -> Program:
    """``model`` with paper-style pruning (hwgen.frontends.synthetic.with_unbalanced_pruning), lowered as ``cfg``
    (build.BuildConfig) lowers but at its own sizes: it needs more steps than a capacity the balanced network
    fits."""
    from ..frontends.synthetic import with_unbalanced_pruning

    return replace(cfg, capacity=None).lower(with_unbalanced_pruning(model, cfg.pe, seed))
