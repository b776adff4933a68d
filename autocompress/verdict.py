"""Plain words on a budget: does the best model that fits keep enough of the original?

When the best point within the budget keeps less than ``TOO_TIGHT`` of the uncompressed
model's quality, every report says so first, and names the smallest size (with its
latency) at which the search kept 90% and 95% of the quality, whatever the budget: the
reader learns what the budget costs and what a looser one would buy.
"""
from __future__ import annotations

from .trial_record import metrics_of

TOO_TIGHT = 0.90
LEVELS = (0.90, 0.95)


def judge(points: list[dict], complete: list, baseline, budget, finals: dict) -> dict | None:
    """The verdict record for pareto.json (None without an uncompressed trial to compare)."""
    metrics = None if baseline is None else metrics_of(baseline)
    if metrics is None:
        return None
    base = float(metrics.quality)
    if base <= 0:
        return None
    best = max((p for p in points), key=lambda p: p["quality"], default=None)
    keeps = (best["quality"] / base) if best else 0.0
    found = _found(complete, finals)
    smallest = {}
    for level in LEVELS:
        ok = [f for f in found if f["quality"] >= level * base]
        pick = min(ok, key=lambda f: (f["size_bytes"], f["latency_s"]), default=None)
        smallest[f"{level:.2f}"] = pick
    record = {"uncompressed_quality": base, "best_in_budget": best["quality"] if best else None,
              "best_id": best["id"] if best else None, "keeps": keeps,
              "too_tight": keeps < TOO_TIGHT, "smallest_keeping": smallest}
    record["message"] = message(record)
    return record


def _found(complete: list, finals: dict) -> list[dict]:
    """Every fully evaluated trial (and every recovered final) as (id, quality, size, latency)."""
    out = []
    for t in complete:
        m = metrics_of(t)
        if m is None or m.fidelity != "full":
            continue
        out.append({"id": t.number, "quality": m.quality, "size_bytes": m.size_bytes,
                    "latency_s": m.target["latency_s"], "recovered": False})
    for number, r in finals.items():
        out.append({"id": number, "quality": r["quality"], "size_bytes": r["size_bytes"],
                    "latency_s": r["target"]["latency_s"], "recovered": True})
    return out


def kept_share(keeps: float) -> str:
    """A share rounded down to 0.1%: 0.895 reads 89.5%, never the 90% it falls short of."""
    import math

    return f"{math.floor(keeps * 1000 + 1e-9) / 10:.1f}%"


def message(record: dict) -> str:
    """One or two sentences for the terminal and the reports ('' when the budget is fine)."""
    from .units import format_size, format_time

    if not record or not record.get("too_tight"):
        return ""
    base = record["uncompressed_quality"]
    if record["best_in_budget"] is None:
        head = "The budget is too tight for this model: no candidate fits it."
    else:
        head = (f"The budget is too tight for this model: the best model within it keeps "
                f"{kept_share(record['keeps'])} of the uncompressed quality "
                f"({record['best_in_budget']:.4f} of {base:.4f}).")
    parts = []
    for level, pick in record["smallest_keeping"].items():
        share = f"{float(level):.0%}"
        if pick is None:
            parts.append(f"no candidate kept {share}")
        else:
            parts.append(f"{share} at {format_size(pick['size_bytes'])} "
                         f"({format_time(pick['latency_s'])}, trial {pick['id']})")
    return f"{head} The search kept " + "; ".join(parts) + "."
