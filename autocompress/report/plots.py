"""Report figures (matplotlib, no display): Pareto projections, parallel coordinates, plan heat map.

Each figure is saved as a PNG (for slides) and returned as SVG text to inline into the
HTML, so the report needs no files beside it. Front points keep one colour across
figures; dominated and infeasible trials are grey; budget lines are dashed red.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..compression import registry  # noqa: E402
from .run import Run, knob_value, quant_label  # noqa: E402
from .summary import is_measured  # noqa: E402

GREY, FAINT, BUDGET = "#9a9a9a", "#d0d0d0", "#c62828"
AXES = (("latency_s", 1e3, "latency (ms)", "max_latency_s"),
        ("size_bytes", 1e-3, "size (kB)", "max_size_bytes"),
        ("energy_j", 1e3, "energy (mJ)", "max_energy_j"))


def text(value) -> str:
    """A user string as literal matplotlib text (``$`` would start mathtext)."""
    return str(value).replace("$", r"\$")


def front_colours(run: Run) -> dict[int, str]:
    cycle = plt.get_cmap("tab10").colors
    return {p["id"]: matplotlib.colors.to_hex(cycle[i % 10]) for i, p in enumerate(run.front)}


def _provenance_note(run: Run, key: str) -> str:
    if key == "size_bytes":
        return "measured file size"
    if not run.front:
        return ""
    prov = run.front[0]["provenance"][key]
    if is_measured(prov):
        return f"measured on {prov.get('device')}"
    error = prov.get("calibration_error")
    return (f"predicted, {prov.get('model')}, "
            + ("uncalibrated" if error is None else f"calibration error {error:.0%}"))


def projections(run: Run):
    """Quality against latency, size and energy on the run's target, with budget lines."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    colours = front_colours(run)
    budget = run.document["budget"]
    others = [t for t in run.trials if not t.on_front]
    target = run.document["target"]["name"]
    for ax, (key, scale, label, limit) in zip(axes, AXES):
        for feasible, marker, colour, name in ((True, "o", GREY, "dominated"),
                                               (False, "x", FAINT, "infeasible")):
            pts = [t for t in others if t.feasible == feasible]
            if pts:
                ax.scatter([getattr(t, key) * scale for t in pts], [t.quality for t in pts],
                           c=colour, marker=marker, s=22, label=name, zorder=2)
        front = [t for t in run.trials if t.on_front]
        ax.scatter([getattr(t, key) * scale for t in front], [t.quality for t in front],
                   c=[colours.get(t.id, "k") for t in front], s=60, edgecolors="black",
                   linewidths=0.6, label="Pareto front", zorder=3)
        for t in front:
            ax.annotate(str(t.id), (getattr(t, key) * scale, t.quality), fontsize=8,
                        xytext=(4, 4), textcoords="offset points", zorder=4)
        baseline = run.document.get("baseline")
        if baseline:
            ax.scatter([baseline[key] * scale], [baseline["quality"]], marker="*", s=140,
                       c="white", edgecolors="black", label="uncompressed", zorder=3)
        if budget.get(limit):
            ax.axvline(budget[limit] * scale, color=BUDGET, ls="--", lw=1.2, label="budget")
        if budget.get("min_quality") is not None:
            ax.axhline(budget["min_quality"], color=BUDGET, ls=":", lw=1.2, label="min quality")
        values = [getattr(t, key) * scale for t in run.trials] or [1]
        if min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        where = "" if key == "size_bytes" else f" on {text(target)}"
        ax.set_xlabel(f"{label}{where} [{_provenance_note(run, key)}]")
        ax.set_ylabel(_quality_label(run))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{text(run.document['workload']['name'])} on {text(target)}: "
                 f"{len(run.trials)} trials, {len(run.front)} on the front", fontsize=11)
    return fig


def _quality_label(run: Run) -> str:
    metric = run.front[0]["quality_metric"] if run.front else "quality"
    return f"quality ({metric}, higher is better)"


PARALLEL = (("quality", "quality"), ("latency_s", "latency"), ("size_bytes", "size"),
            ("energy_j", "energy"), ("peak_ram_bytes", "peak RAM"))


def parallel_coordinates(run: Run):
    """Every trial as a line across the objectives, each axis scaled to its min..max."""
    fig, ax = plt.subplots(figsize=(11, 4.2), constrained_layout=True)
    keys = [k for k, _ in PARALLEL]
    data = np.array([[getattr(t, k) for k in keys] for t in run.trials], dtype=float)
    if data.size == 0:
        data = np.zeros((0, len(keys)))
    low = data.min(axis=0) if len(data) else np.zeros(len(keys))
    high = data.max(axis=0) if len(data) else np.ones(len(keys))
    span = np.where(high > low, high - low, 1.0)
    x = np.arange(len(keys))
    colours = front_colours(run)
    order = sorted(range(len(run.trials)), key=lambda i: run.trials[i].on_front)
    for i in order:
        t = run.trials[i]
        y = (data[i] - low) / span
        if t.on_front:
            ax.plot(x, y, color=colours.get(t.id, "k"), lw=2.2, marker="o", label=f"point {t.id}")
        else:
            ax.plot(x, y, color=GREY if t.feasible else FAINT, lw=0.8, alpha=0.8)
    from .summary import fmt

    ax.set_xticks(x, [f"{name}\n{fmt(k, lo)} .. {fmt(k, hi)}"
                      for (k, name), lo, hi in zip(PARALLEL, low, high)], fontsize=8)
    ax.set_yticks([0, 1], ["min", "max"])
    for xi in x:
        ax.axvline(xi, color="black", lw=0.6)
    ax.set_title("parallel coordinates (grey: dominated, light grey: infeasible)", fontsize=10)
    if run.front:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig




def heat_values(run: Run) -> list[tuple[str, list[str], list[list[str]], np.ndarray]]:
    """Per knob: (title, units, labels[unit][point], shade[unit][point] in 0..1).

    Shade is the chosen value's position in that unit's choices (0 = left as is, 1 = the
    last, usually the most compressing, choice)."""
    if not run.front:
        return []
    titles = registry.titles()   # panel order (the registry's); others follow, by name
    order = list(titles) + sorted(set(run.knob_choices) - set(titles))
    out = []
    for knob in order:
        per_unit = run.knob_choices.get(knob)
        if not per_unit:
            continue
        units = sorted(per_unit)
        labels, shades = [], []
        for unit in units:
            choices = per_unit[unit]
            row_labels, row_shades = [], []
            for p in run.front:
                value = knob_value(p["plan"], unit, knob, choices[0] if choices else None)
                row_labels.append(quant_label(value) if knob == "quant" else f"{value:g}"
                                  if isinstance(value, float) else str(value))
                index = choices.index(value) if value in choices else (0 if choices else 1)
                row_shades.append(index / max(1, len(choices) - 1))
            labels.append(row_labels)
            shades.append(row_shades)
        out.append((titles.get(knob, knob), [u or "(whole model)" for u in units], labels,
                    np.array(shades, dtype=float)))
    return out


def plan_heatmap(run: Run):
    """Per-layer plan of each front point, one heat map per knob (darker = more compressed)."""
    panels = heat_values(run)
    if not panels:
        return None
    columns = min(4, len(panels))
    grid_rows = -(-len(panels) // columns)
    rows = max(len(units) for _, units, _, _ in panels)
    width = max(2.6, 0.45 * len(run.front) + 2.6)
    fig, axes = plt.subplots(grid_rows, columns, squeeze=False, constrained_layout=True,
                             figsize=(width * columns, grid_rows * (0.2 * rows + 1.4)))
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, units, labels, shades) in zip(axes.flat, panels):
        ax.imshow(shades, aspect="auto", cmap="Blues", vmin=-0.15, vmax=1.15)
        ax.set_xticks(range(len(run.front)), [str(p["id"]) for p in run.front], fontsize=7)
        ax.set_yticks(range(len(units)), [text(u) for u in units], fontsize=6)
        ax.set_xlabel("front point", fontsize=7)
        ax.set_title(title, fontsize=8)
        for (r, c), shade in np.ndenumerate(shades):
            ax.text(c, r, text(labels[r][c]), ha="center", va="center", fontsize=5.5,
                    color="white" if shade > 0.55 else "black")
    return fig


def save(fig, png: Path) -> str:
    """Write ``png`` (150 dpi) and return the figure as SVG text for inlining (text as text)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150, metadata={"Software": None})
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": png.stem}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]
