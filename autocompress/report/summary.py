"""Words for a run: the plain-language recommendation and provenance descriptions.

Shared by the HTML report and the Markdown summary, so both say the same thing.
Returns plain text; the HTML writer escapes it.
"""
from __future__ import annotations

from ..units import format_energy, format_size, format_time

FORMATTERS = {"latency_s": format_time, "size_bytes": format_size, "energy_j": format_energy,
              "peak_ram_bytes": format_size, "host_latency_s": format_time,
              "host_peak_ram_bytes": format_size, "quality": lambda q: f"{q:.4f}"}


def fmt(key: str, value) -> str:
    return "n/a" if value is None else FORMATTERS[key](value)


def is_measured(provenance: dict | None) -> bool:
    return bool(provenance) and provenance.get("kind") == "measured"


def describe_provenance(provenance: dict | None) -> str:
    """One line: how a number was obtained (for badges' tooltips and footnotes)."""
    if not provenance:
        return "provenance not recorded"
    if provenance.get("kind") == "measured":
        parts = [f"measured on {provenance.get('device', 'this machine')}"
                 + (f" with {provenance['runtime']}" if provenance.get("runtime") else "")]
        if provenance.get("repeats"):
            parts.append(f"median of {provenance['repeats']} runs, p10 "
                         f"{format_time(provenance['p10_s'])}, p90 {format_time(provenance['p90_s'])}")
        if provenance.get("method"):
            parts.append(provenance["method"])
        if provenance.get("data"):
            parts.append(provenance["data"])
        return "; ".join(parts)
    error = provenance.get("calibration_error")
    calibration = ("uncalibrated on this device: an estimate" if error is None
                   else f"calibration error {error:.0%}")
    return (f"predicted by the {provenance.get('model', '?')} cost model for "
            f"{provenance.get('device', '?')} ({calibration})")


def budget_phrase(budget: dict) -> str:
    parts = []
    if budget.get("max_size_bytes"):
        parts.append(f"a {format_size(budget['max_size_bytes'])} size budget")
    if budget.get("max_latency_s"):
        parts.append(f"a {format_time(budget['max_latency_s'])} latency limit")
    if budget.get("max_energy_j"):
        parts.append(f"a {format_energy(budget['max_energy_j'])} energy limit")
    if budget.get("min_quality") is not None:
        parts.append(f"a minimum quality of {budget['min_quality']}")
    if not parts:
        return "With no budget"
    return "For " + (" and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1])
                     + " and " + parts[-1])


def _latency_words(p: dict) -> str:
    prov = p["provenance"]["latency_s"]
    error = prov.get("calibration_error")
    how = ("measured" if is_measured(prov)
           else f"predicted by {prov.get('model')}"
           + (", uncalibrated" if error is None else f", calibration error {error:.0%}"))
    return f"{format_time(p['latency_s'])} ({how})"


def _kept(p: dict, baseline: dict | None) -> str:
    metric = p.get("quality_metric", "quality")
    if baseline and baseline["quality"] > 0:
        share = p["quality"] / baseline["quality"]
        return (f"keeps {share:.1%} of the uncompressed model's {metric} "
                f"({p['quality']:.4f} vs {baseline['quality']:.4f})")
    return f"reaches {metric} {p['quality']:.4f}"


def recommendation(document: dict) -> str:
    """A paragraph a non-engineer can act on: which point to ship, and what it costs."""
    target = document["target"]["name"]
    lead = f"{budget_phrase(document['budget'])} on {target}"
    front, baseline = document["front"], document.get("baseline")
    if not front:
        reason = document.get("infeasible_reason") or "no candidate met the constraints"
        return (f"{lead}, {reason}. Loosen the budget or continue the search with more trials "
                "(autocompress search --resume RUN --trials N).")
    best = front[0]
    text = (f"{lead}, point {best['id']} {_kept(best, baseline)} at "
            f"{_latency_words(best)} in {format_size(best['size_bytes'])}")
    if baseline and baseline["size_bytes"] > best["size_bytes"]:
        text += f", {baseline['size_bytes'] / best['size_bytes']:.1f}× smaller than the original"
    text += "."
    close = [p for p in front if p["quality"] >= 0.95 * best["quality"]]
    fastest = min(close, key=lambda p: p["latency_s"])
    if fastest is not best and fastest["latency_s"] < 0.8 * best["latency_s"]:
        text += (f" If speed matters more, point {fastest['id']} is the fastest point within 5% "
                 f"of that quality: "
                 f"{format_time(fastest['latency_s'])}, and {_kept(fastest, baseline)}.")
    if not is_measured(best["provenance"]["latency_s"]):
        text += (f" Latency, energy and RAM on {target} are cost-model estimates: measure the "
                 "chosen point on the board before committing.")
    return text


def planning_sentence(rows: list[dict]) -> str:
    """One sentence over ``plan.json`` rows: which targets fit, with which point."""
    fits = [f"{r['target']} (trial {r['best']['id']}, quality {r['best']['quality']:.4f}, "
            f"{format_time(r['best']['latency_s'])})" for r in rows if r["best"]]
    misses = [r["target"] for r in rows if not r["best"]]
    text = ("Within these constraints the model fits " + ", ".join(fits) + "."
            if fits else "No target meets these constraints.")
    if misses and fits:
        text += f" It does not fit {', '.join(misses)} (see the deployment table for why)."
    return text


def inputs_note(doc: dict) -> str | None:
    """The warning every report carries when quality was measured on synthetic inputs."""
    workload = doc.get("workload") or {}
    if not workload.get("synthetic_inputs"):
        return None
    return ("Quality was measured on synthetic inputs (no --data given): it says how closely "
            "the compressed outputs follow the original's on made-up inputs, not on real ones.")
