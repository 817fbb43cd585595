"""``python -m hwgen report DIR``: ``DIR/report.html``, one self-contained page (plots as embedded PNG) from
the files a build leaves: ``manifest.json`` always, ``sim_result.json`` and ``synth_report.json`` when
``hwgen sim`` / ``hwgen synth`` ran there.

Plots: per-layer group density (kept / total groups), cycles with utilization, weight-ROM bits, and the
FPGA resources against the part when synthesis ran. The same files give the same bytes (PNG metadata off,
fixed figure sizes and fonts).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os

MANIFEST, SIM, SYNTH = "manifest.json", "sim_result.json", "synth_report.json"


class ReportError(ValueError):
    pass


def _read(folder: str, name: str, required: bool) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if required:
            raise ReportError(f"{folder}: expected a build folder with {name} (from `python -m hwgen build`), "
                              "found none")
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: expected JSON, found unreadable content ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode()


def _layer_plots(man: dict) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = man["layers"]
    names = [l["name"] for l in layers]
    x = range(len(layers))
    width = max(8.0, 0.32 * len(layers))
    plots = []

    def bar(title: str, values, ylabel: str, color: str, extra=None):
        fig, ax = plt.subplots(figsize=(width, 3.2))
        ax.bar(x, values, color=color)
        ax.set_xticks(list(x), names, rotation=90, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        if extra:
            extra(ax)
        fig.tight_layout()
        plots.append((title, _png(fig)))
        plt.close(fig)

    density = [l["kept_groups"] / l["total_groups"] if l["total_groups"] else 1.0 for l in layers]
    bar("Group density per layer (kept / total PE-wise groups)", density, "density", "#4878a8",
        lambda ax: ax.set_ylim(0, 1.05))

    def utilization(ax):
        twin = ax.twinx()
        twin.plot(list(x), [l["utilization"] for l in layers], "o-", color="#c44e52", markersize=3)
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("utilization", color="#c44e52")
    bar("Cycles per image per layer (bars) and PE utilization (line)", [l["cycles"] for l in layers], "cycles",
        "#55a868", utilization)

    bar("Weight ROM bits per layer (pruned groups and fixed patterns take none)", [l["rom_bits"] for l in layers],
        "bits", "#8172b2")
    if "dram" in man:  # the roofline per layer: its units' own compute, and the cycles with DRAM on top
        def compute(ax):
            ax.bar(x, [l["unit_cycles"] for l in layers], color="#55a868", label="compute (its units)")
            ax.legend(fontsize=8)
        bar("Cycles per layer with DRAM (bars: all; green: compute, if DRAM never kept it waiting)",
            [l["cycles"] for l in layers], "cycles", "#dd8452", compute)
    return plots


RESOURCES = (("LUT4", "lut4", "lut"), ("flip-flops", "ff", "ff"), ("block RAMs", "bram", "bram"),
             ("DSPs", "dsp", "dsp"))  # label, synth_report.json field, its "available" field


def _synth_rows(synth: dict) -> list[tuple[str, object]]:
    if not synth.get("built"):
        return [("synthesis", f"build plan written for {synth.get('board') or synth.get('part')}, not run")]
    rows = [("synthesis part", synth.get("part"))]
    avail = synth.get("available") or {}
    rows += [(f"synthesis: {label}", f"{synth[key]:,} of {avail.get(total, '?'):,}" if isinstance(
        avail.get(total), int) else synth[key]) for label, key, total in RESOURCES if isinstance(synth.get(key), int)]
    for clock, c in (synth.get("clocks") or {}).items():
        rows.append((f"Fmax {clock}", f"{c.get('fmax_mhz')} MHz (target {c.get('constraint_mhz')} MHz, "
                                      f"{'met' if c.get('passed') else 'missed'})"))
    if synth.get("images_per_s_at_fmax") is not None:  # a design on the board's SDRAM
        rows.append(("predicted images/s at Fmax (SDRAM at its peak; the host link excluded)",
                     synth["images_per_s_at_fmax"]))
    return rows


def _synth_plot(synth: dict) -> tuple[str, str] | None:
    import matplotlib.pyplot as plt

    avail = synth.get("available") if isinstance(synth.get("available"), dict) else {}
    bars = [(label, synth[key], avail[total]) for label, key, total in RESOURCES
            if isinstance(synth.get(key), int) and isinstance(avail.get(total), int) and avail[total] > 0]
    if not synth.get("built") or not bars:
        return None
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.barh([b[0] for b in bars], [b[1] / b[2] for b in bars], color="#dd8452")
    for i, (_, used, total) in enumerate(bars):
        ax.text(min(used / total, 1.0) + 0.01, i, f"{used:,} / {total:,}", va="center", fontsize=8)
    ax.set_xlim(0, 1.3)
    ax.set_xlabel(f"share of {synth.get('part')}")
    ax.set_title("FPGA resources after place and route", fontsize=10)
    fig.tight_layout()
    out = ("FPGA resources after place and route", _png(fig))
    plt.close(fig)
    return out


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render(folder: str) -> str:
    """The report page of a build folder, as a string."""
    man = _read(folder, MANIFEST, True)
    if not isinstance(man.get("layers"), list) or not man["layers"]:
        raise ReportError(f"{os.path.join(folder, MANIFEST)}: expected a 'layers' list, found none")
    if any("rom_bits" not in l for l in man["layers"]):
        raise ReportError(f"{os.path.join(folder, MANIFEST)}: expected per-layer 'rom_bits', found a manifest of an "
                          f"older hwgen; build the folder again")
    sim, synth = _read(folder, SIM, False), _read(folder, SYNTH, False)
    summary = [("model", man["model"]), ("array", f"{man['pe']} PEs x {man['lanes']} lanes, tile {man['tile']}"),
               ("cycles per image (model)", f"{man['predicted_cycles']:,}"),
               ("PE utilization", f"{man['utilization']:.3f}"),
               ("kept groups", f"{man['kept_groups']:,} of {man['total_groups']:,}"),
               ("weight ROM bits", f"{man['rom_bits']:,}"), ("activation buffer bits", f"{man['buffer_bits']:,}"),
               ("accumulator bits", man["acc_bits"])]
    if "dram" in man:
        d = man["dram"]
        moved = d["weights_bytes"] + d["map_read_bytes"] + d["map_write_bytes"]
        summary += [("DRAM traffic per image", f"{moved:,} bytes (weights {d['weights_bytes']:,}, maps read "
                                               f"{d['map_read_bytes']:,}, written {d['map_write_bytes']:,})"),
                    ("cycles with everything on chip", f"{d['compute_cycles']:,}"),
                    ("images/s at 100 MHz", f"{1e8 / man['predicted_cycles']:,.1f}")]
    if sim:
        summary += [("simulated images", sim.get("images")), ("mismatches", sim.get("mismatches")),
                    ("simulated cycles per image", sim.get("cycles_per_image"))]
    if synth:
        summary += _synth_rows(synth)
    plots = _layer_plots(man)
    if synth and (p := _synth_plot(synth)):
        plots.append(p)
    figures = "".join(f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{b}">'
                      f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, b in plots)
    title = f"{man['model']}: {man['pe']} PEs x {man['lanes']} lanes"
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}th,td{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}"
             "figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:90%;color:#555}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{_table(summary)}{figures}"
            "</body></html>\n")


def write(folder: str) -> str:
    """Render and write ``folder/report.html`` atomically; returns its path."""
    page = render(folder)
    path = os.path.join(folder, "report.html")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(page)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
