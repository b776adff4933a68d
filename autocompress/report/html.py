"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, no network).

Every string that reaches the page goes through :func:`e` (``html.escape``): unit names
are user ONNX initializer or module names and may hold anything, ``<script>`` included.
Every number carries a provenance badge (M = measured, P = predicted) whose tooltip says
on which device, with which runtime or cost model.
"""
from __future__ import annotations

import html
import json
import shlex

from .plots import heat_values
from .run import Run
from .summary import (describe_provenance, fmt, inputs_note, is_measured, planning_sentence,
                      recommendation)

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1320px;padding:18px 28px;color:#1d1d1f;background:#fff;line-height:1.45}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#555;font-size:.9em}.rec{background:#eef6ee;border-left:5px solid #2e7d32;padding:10px 14px}.warn{background:#fff4e5;border-left:5px solid #e65100;padding:10px 14px}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f6;white-space:normal}td.name{text-align:left;font-family:ui-monospace,monospace}
.b{display:inline-block;font-size:.7em;font-weight:700;border-radius:3px;padding:0 3px;
margin-left:3px;vertical-align:1px;cursor:help}.b.m{background:#2e7d32;color:#fff}
.b.p{background:#ef6c00;color:#fff}.no{color:#b71c1c;font-weight:600}.yes{color:#2e7d32;font-weight:600}
figure{margin:.6em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
.heat{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.heat td.v{text-align:center;min-width:2.4em}dl{display:grid;grid-template-columns:max-content auto;
gap:2px 14px;font-size:.9em}dt{font-weight:600}dd{margin:0;font-family:ui-monospace,monospace}
pre{background:#f6f6f8;padding:8px;overflow:auto;font-size:.8em}.dim{color:#888}
"""


COUNTED = {"n_params": {"kind": "measured", "device": "the artifact file",
                        "method": "elements stored in its initializers"},
           "macs": {"kind": "measured", "device": "the artifact file",
                    "method": "multiply-accumulates counted in its ONNX graph at the example "
                              "input's shape (batch 1)"}}
"""Counts read from the artifact itself: exact, not predicted."""


def e(value) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def badge(provenance: dict | None) -> str:
    kind = "m" if is_measured(provenance) else "p"
    return (f'<span class="b {kind}" title="{e(describe_provenance(provenance))}">'
            f'{"M" if kind == "m" else "P"}</span>')


def number(key: str, value, provenance: dict | None) -> str:
    return f"{e(fmt(key, value))}{badge(provenance)}"


def render(run: Run, svgs: dict[str, str], planning_rows: list[dict] | None = None) -> str:
    """The whole page. ``svgs``: figure name -> inline SVG text made by plots.save."""
    doc = run.document
    title = f"autocompress report: {doc['workload']['name']} on {doc['target']['name']}"
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="sub">{e(doc["workload"].get("description") or "")} — run '
        f'<code>{e(run.run_dir.name)}</code>, {e(doc["created"])}; {e(doc["study"]["n_trials"])} '
        f'trials ({e(doc["study"]["n_complete"])} complete, {e(doc["study"]["n_failed"])} failed, '
        f'{e(doc["study"]["n_feasible"])} within the constraints)</p>',
        _verdict(doc),
        '<h2>Recommendation</h2>', f'<p class="rec">{e(recommendation(doc))}'
        + (f"<br>{e(planning_sentence(planning_rows))}" if planning_rows else "") + "</p>",
        _front_table(run),
        _figures(run, svgs),
        _heat_tables(run),
        _planning_table(planning_rows) if planning_rows else "",
        _failures(doc),
        _reproducibility(run),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _verdict(doc: dict) -> str:
    """The too-tight warning (verdict.py) and the synthetic-inputs one above everything else."""
    messages = [m for m in ((doc.get("verdict") or {}).get("message"), inputs_note(doc)) if m]
    return "".join(f'<p class="warn"><strong>{e(m)}</strong></p>' for m in messages)


def _front_table(run: Run) -> str:
    doc = run.document
    rows = []
    baseline = doc.get("baseline")
    points = ([("uncompressed", baseline)] if baseline else []) + [(p["id"], p) for p in run.front]
    for label, p in points:
        prov = p["provenance"]
        cells = [f'<td class="name">{e(label)}</td>']
        for key in ("quality", "size_bytes", "latency_s", "energy_j", "peak_ram_bytes",
                    "host_latency_s"):
            cells.append(f"<td>{number(key, p.get(key), prov.get(key))}</td>")
        cells.append(f"<td>{e(p['n_params'])}{badge(COUNTED['n_params'])}</td>"
                     f"<td>{e(p.get('macs') or 'n/a')}{badge(COUNTED['macs'])}</td>")
        cells.append(f'<td class="name" title="{e(p["artifact"] or "")}">'
                     f'{e(p["plan_digest"] if p["artifact"] else "—")}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    target = doc["target"]["name"]
    head = ("<tr><th>point</th><th>quality</th><th>size</th>"
            f"<th>latency ({e(target)})</th><th>energy ({e(target)})</th>"
            f"<th>peak RAM ({e(target)})</th><th>latency (host)</th><th>parameters</th>"
            "<th>MACs</th><th>artifact (plan digest)</th></tr>")
    empty = ("" if run.front else
             f'<p class="no">No feasible point: {e(doc.get("infeasible_reason", ""))}</p>')
    return (f"<h2>Pareto front</h2>{empty}<table>{head}{''.join(rows)}</table>"
            '<p class="sub"><span class="b m">M</span> measured, <span class="b p">P</span> '
            "predicted; hover a badge for the device, runtime or cost model behind the number. "
            "Sizes in MB are 10<sup>6</sup> bytes.</p>")


def _figures(run: Run, svgs: dict[str, str]) -> str:
    captions = {
        "projections": "Quality against each cost on the target. Coloured: the Pareto front "
                       "(labels are point ids); grey: dominated; light grey crosses: outside "
                       "the constraints; dashed red: budget lines; star: uncompressed model.",
        "parallel": "Every trial across all objectives (each axis scaled to its own range).",
    }
    out = ["<h2>Trade-offs</h2>"]
    if run.study_note:
        out.append(f'<p class="sub">{e(run.study_note)}</p>')
    for name, caption in captions.items():
        if name in svgs:
            out.append(f"<figure>{svgs[name]}<figcaption>{e(caption)}</figcaption></figure>")
    return "\n".join(out)


def _heat_tables(run: Run) -> str:
    panels = heat_values(run)
    if not panels:
        return ""
    ids = "".join(f"<th>{e(p['id'])}</th>" for p in run.front)
    tables = []
    for title, units, labels, shades in panels:
        rows = []
        for unit, row_labels, row_shades in zip(units, labels, shades):
            cells = "".join(
                f'<td class="v" style="background:hsl(215,70%,{97 - 55 * t:.0f}%);'
                f'color:{"#fff" if t > 0.55 else "#111"}">{e(label)}</td>'
                for label, t in zip(row_labels, row_shades))
            rows.append(f'<tr><td class="name">{e(unit)}</td>{cells}</tr>')
        tables.append(f"<table><caption>{e(title)}</caption><tr><th>unit \\ point</th>{ids}</tr>"
                      f"{''.join(rows)}</table>")
    return ("<h2>Per-layer plans</h2><p class=\"sub\">What each front point does to each unit, "
            "one table per knob; darker = further along the knob's choices from "
            "\u201cleave as is\u201d (32 bits, no pruning, full rank are untouched).</p>"
            f'<div class="heat">{"".join(tables)}</div>')


def _planning_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        best = r.get("best")
        if best:
            prov = best["provenance"]
            cells = (f'<td class="yes">yes</td><td>{e(best["id"])}</td>'
                     f'<td>{number("quality", best["quality"], prov.get("quality"))}</td>'
                     f'<td>{number("size_bytes", best["size_bytes"], prov.get("size_bytes"))}</td>'
                     f'<td>{number("latency_s", best["latency_s"], prov["latency_s"])}</td>'
                     f'<td>{number("energy_j", best["energy_j"], prov["energy_j"])}</td>'
                     f'<td>{number("peak_ram_bytes", best["peak_ram_bytes"], prov["peak_ram_bytes"])}</td>'
                     f'<td class="name">{e(best["plan_summary"])}</td>')
        else:
            cells = f'<td class="no">no</td><td colspan="7" class="name">{e(r["reason"])}</td>'
        body.append(f'<tr><td class="name">{e(r["target"])}</td>{cells}</tr>')
    return ("<h2>Deployment plan across targets</h2><table><tr><th>target</th><th>meets the "
            "constraints</th><th>trial</th><th>quality</th><th>size</th><th>latency</th>"
            "<th>energy</th><th>peak RAM</th><th>plan</th></tr>" + "".join(body) + "</table>"
            '<p class="sub">One search; quality and size measured once per candidate and reused '
            "for every target (quality does not depend on the device).</p>")


def _failures(doc: dict) -> str:
    failures = doc["study"].get("failures") or []
    if not failures:
        return ""
    items = "".join(f"<li>trial {e(f['id'])}: {e(f['reason'])}</li>" for f in failures[:50])
    return f"<h2>Failed trials ({len(failures)})</h2><ul>{items}</ul>"


def _reproducibility(run: Run) -> str:
    from .environment import environment

    doc = run.document
    env = doc.get("environment")
    when = "recorded by the run"
    if env is None:
        env, when = environment(), "at report time (the run did not record them)"
    rows = [("autocompress", env["packages"].get("autocompress") or doc["tool"]["version"])]
    rows += [(name, env["packages"].get(name) or "not installed")
             for name in ("torch", "onnxruntime", "onnx", "tvm", "optuna", "numpy")]
    rows += [("python", env["python"]), ("platform", env.get("platform", "")),
             ("versions", when), ("seed", doc["config"].get("seed")),
             ("device profile", f"{doc['target']['name']}: {doc['target']['description']}"),
             ("TVM target", json.dumps(doc["target"]["tvm_target"])),
             ("study storage", f"{doc['study']['storage']} (study {doc['study']['name']!r})"),
             ("command", shlex.join(doc["command"]) if doc["command"]
              else "(started from the Python API: autocompress.api.search with the config below)")]
    items = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows)
    config = json.dumps(doc["config"], indent=2)
    profile = doc["target"].get("profile")
    extra = (f"<details><summary>device profile</summary><pre>{e(json.dumps(profile, indent=2))}"
             "</pre></details>" if profile else "")
    return (f"<h2>Reproducibility</h2><dl>{items}</dl><details><summary>search configuration"
            f"</summary><pre>{e(config)}</pre></details>{extra}"
            '<p class="sub">Browse every trial: <code>optuna-dashboard '
            f'{e(doc["study"]["storage"])}</code></p>')
