"""A Markdown summary of a run, for pasting into tickets (GitHub-flavoured tables)."""
from __future__ import annotations

import shlex

from .run import Run
from .summary import fmt, inputs_note, is_measured, planning_sentence, recommendation
from .table import plan_summary


def cell(text) -> str:
    """Table-safe text: pipes and newlines would break the row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _tagged(key: str, p: dict) -> str:
    prov = p["provenance"].get(key)
    if key in ("quality", "size_bytes"):
        return fmt(key, p[key])
    return f"{fmt(key, p[key])} {'(m)' if is_measured(prov) else '(p)'}"


def render(run: Run, planning_rows: list[dict] | None = None) -> str:
    doc = run.document
    target = doc["target"]["name"]
    warnings = [m for m in ((doc.get("verdict") or {}).get("message"), inputs_note(doc)) if m]
    lines = [f"## autocompress: {cell(doc['workload']['name'])} on {cell(target)}", "",
             *[line for w in warnings for line in (f"**{w}**", "")],
             recommendation(doc), "",
             f"| point | quality | size | latency ({cell(target)}) | energy | peak RAM | plan |",
             "|---|---|---|---|---|---|---|"]
    baseline = doc.get("baseline")
    rows = ([("uncompressed", baseline)] if baseline else []) + [(p["id"], p) for p in run.front]
    for label, p in rows:
        lines.append(f"| {cell(label)} | " + " | ".join(
            _tagged(k, p) for k in ("quality", "size_bytes", "latency_s", "energy_j",
                                    "peak_ram_bytes")) + f" | {cell(plan_summary(p['plan']))} |")
    lines += ["", "(m) measured, (p) predicted by the cost model from the device profile "
              "(uncalibrated unless stated in the HTML report)."]
    if planning_rows:
        lines += ["", planning_sentence(planning_rows), "", "| target | meets constraints | trial | quality | latency | energy |",
                  "|---|---|---|---|---|---|"]
        for r in planning_rows:
            best = r.get("best")
            lines.append(f"| {cell(r['target'])} | yes | {best['id']} | {fmt('quality', best['quality'])}"
                         f" | {_tagged('latency_s', best)} | {_tagged('energy_j', best)} |"
                         if best else f"| {cell(r['target'])} | no: {cell(r['reason'])} | | | | |")
    versions = doc.get("environment", {}).get("packages", {})
    lines += ["", f"Run `{run.run_dir.name}`, {doc['study']['n_trials']} trials, seed "
              f"{doc['config'].get('seed')}; autocompress {doc['tool']['version']}"
              + "".join(f", {k} {v}" for k, v in versions.items() if v and k != "autocompress")
              + "."]
    if doc["command"]:
        lines.append(f"Command: `{shlex.join(doc['command'])}`")
    lines.append("Full report: `report/report.html` in the run folder.")
    return "\n".join(lines) + "\n"
