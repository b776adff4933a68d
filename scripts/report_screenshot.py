"""Regenerate the README's report screenshot from a real run.

    .venv/bin/python scripts/report_screenshot.py             # the search takes minutes
    .venv/bin/python scripts/report_screenshot.py --rerender  # re-report the saved run

Runs `autocompress search --model digits-cnn --target jetson-nano --budget 100KB --trials 30`
into results/report_demo/run/, writes its report (results/report_demo/run/report/), renders it
in headless Chromium, and saves results/report_screenshot.png (top of the page, 256-colour PNG
under 300 kB). `--rerender` rewrites the report of that run and screenshots it again.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402  (matplotlib's dependency)

from autocompress.cli import main  # noqa: E402
from autocompress.report.browser import render  # noqa: E402

COMMAND = ["search", "--model", "digits-cnn", "--target", "jetson-nano", "--budget", "100KB",
           "--trials", "30", "--seed", "0"]


def shrink(png: Path, width: int = 1000) -> None:
    image = Image.open(png).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)


def screenshot(page: Path) -> Path:
    shot = ROOT / "results" / "report_screenshot.png"
    rendered = render(page, shot, width=1280, height=1500)
    if rendered.console:
        raise SystemExit(f"console messages while rendering: {rendered.console}")
    shrink(shot)
    return shot


DEMO = ROOT / "results" / "report_demo" / "run"


def run() -> None:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    if main([*COMMAND, "--out", str(DEMO)]) != 0:
        raise SystemExit("search failed")
    rerender()


def rerender() -> None:
    if main(["report", str(DEMO)]) != 0:
        raise SystemExit("report failed")
    shot = screenshot(DEMO / "report" / "report.html")
    print(f"{shot} ({shot.stat().st_size // 1000} kB), {DEMO}")


if __name__ == "__main__":
    rerender() if "--rerender" in sys.argv[1:] else run()
