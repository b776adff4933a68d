"""Terminal table of a front (rich)."""
from __future__ import annotations

from rich.table import Table

from ..units import format_energy, format_size, format_time
from .summary import inputs_note


def _tag(provenance: dict) -> str:
    return "m" if provenance.get("kind") == "measured" else "p"


def plan_summary(plan: dict) -> str:
    counts: dict[str, dict[str, int]] = {}
    for knobs in plan.get("units", {}).values():
        for knob, value in knobs.items():
            counts.setdefault(knob, {})
            counts[knob][str(value)] = counts[knob].get(str(value), 0) + 1
    short = {"quant": "q", "prune_ratio": "prune", "rank_ratio": "rank"}
    parts = [f"{short.get(k, k)} " + " ".join(f"{v}x{n}" for v, n in sorted(c.items()))
             for k, c in sorted(counts.items())]
    return "; ".join(parts) or "uncompressed"


def front_table(document: dict, target: str | None = None) -> Table:
    """The run's front, or (multi-target search) the front of one of its other targets."""
    points = document["front"] if target is None else document["fronts"][target]
    target = target or document["target"]["name"]
    table = Table(title=f"Pareto front: {document['workload']['name']} on {target} "
                        f"({len(points)} points; m = measured, p = predicted)")
    for column in ("id", "quality", "size", "latency", "energy", "peak RAM", "host lat."):
        table.add_column(column, justify="right", no_wrap=True)
    for p in points:
        prov = p["provenance"]
        table.add_row(
            str(p["id"]), f"{p['quality']:.4f}", format_size(p["size_bytes"]),
            f"{format_time(p['latency_s'])} {_tag(prov['latency_s'])}",
            f"{format_energy(p['energy_j'])} {_tag(prov['energy_j'])}",
            f"{format_size(p['peak_ram_bytes'])} {_tag(prov['peak_ram_bytes'])}",
            f"{format_time(p['host_latency_s'])} m")
    note = inputs_note(document)
    table.caption = ((note + "\n" if note else "") +
                     f"latency, energy and peak RAM on {target}; host lat. = ONNX Runtime on "
                     "this machine. Plans:\n" + "\n".join(
                         f"{p['id']}: {plan_summary(p['plan'])}" for p in points))
    table.caption_justify = "left"
    return table
