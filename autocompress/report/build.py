"""``autocompress report RUN``: the HTML report, its PNG figures and the Markdown summary."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import html, markdown, plots
from .run import load_run


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    pngs: dict[str, Path]


def write_report(run_dir: Path | str, out_dir: Path | str | None = None) -> ReportFiles:
    """Read a finished run folder; write ``report.html``, ``report.md`` and PNGs to ``out_dir``
    (default ``RUN/report``)."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir else run.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = {"projections": plots.projections(run), "parallel": plots.parallel_coordinates(run)}
    heat = plots.plan_heatmap(run)
    if heat is not None:
        figures["plan_heatmap"] = heat
    pngs = {name: out / f"{name}.png" for name in figures}
    svgs = {name: plots.save(fig, pngs[name]) for name, fig in figures.items()}
    rows = (run.planning or {}).get("targets")
    page = out / "report.html"
    page.write_text(html.render(run, svgs, rows), encoding="utf-8")
    summary = out / "report.md"
    summary.write_text(markdown.render(run, rows), encoding="utf-8")
    return ReportFiles(page, summary, pngs)
