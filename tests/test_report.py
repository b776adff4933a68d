"""`autocompress report`: a real run rendered in headless Chromium, PNGs, escaping, dashboard."""
import json
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import pytest
from matplotlib import image
from onnx import TensorProto, helper

from autocompress import api
from autocompress.cli import main
from autocompress.report import browser
from autocompress.report.build import write_report
from autocompress.search.objectives import Budget

TINY = "tests.tiny_workload:make_workload"
BUDGET = 30_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    config = api.SearchConfig(model=TINY, target="jetson-nano", trials=6, seed=0,
                              budget=Budget(max_size_bytes=BUDGET), out=str(out), finalize_s=0.0,
                              command=["autocompress", "search", "--model", TINY])
    api.search(config)
    return out


@pytest.fixture(scope="module")
def report(run):
    return write_report(run)


def chromium_render(page: Path, shot: Path) -> browser.Rendered:
    try:
        browser.find_chromium()
    except browser.BrowserError as err:
        pytest.fail(f"{err} — the report test needs it (CI installs it)")
    return browser.render(page, shot, width=1280, height=1000, full_page=True)


def colours(png: Path) -> tuple[int, float]:
    """Distinct colours and the share of pixels that are not the background."""
    pixels = (image.imread(str(png))[..., :3].reshape(-1, 3) * 255).round().astype(np.uint32)
    packed = pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]
    background = np.all(pixels >= 250, axis=1).mean()
    return len(np.unique(packed)), 1.0 - background


def test_report_renders_in_chromium_with_a_clean_console(report, tmp_path):
    rendered = chromium_render(report.html, tmp_path / "shot.png")
    assert rendered.console == []
    distinct, ink = colours(rendered.screenshot)
    assert distinct > 200, "a blank or single-colour page"
    assert ink > 0.05
    height = image.imread(str(rendered.screenshot)).shape[0]
    assert height > 1500, "full page: tables, figures and reproducibility block"


def test_console_check_sees_errors_and_failed_loads(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><body><h1>x</h1><img src="missing.png">'
                    '<script>console.error("boom")</script></body>')
    console = chromium_render(page, tmp_path / "bad.png").console
    assert any("boom" in line for line in console)
    assert any("ERR_FILE_NOT_FOUND" in line for line in console)


def test_pngs_exist_and_are_not_trivial(report):
    assert set(report.pngs) == {"projections", "parallel", "plan_heatmap"}
    for png in report.pngs.values():
        distinct, ink = colours(png)
        assert png.stat().st_size > 20_000
        assert distinct > 100 and ink > 0.02, png.name


def test_report_is_self_contained_with_a_badge_on_every_number(run, report):
    page = report.html.read_text(encoding="utf-8")
    document = json.loads((run / "pareto.json").read_text())
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "no network"
    assert page.count("<svg") == 2     # projections + parallel coordinates, inline
    rows = len(document["front"]) + 1  # + the uncompressed baseline
    assert page.count('class="b m"') + page.count('class="b p"') == 8 * rows + 2   # + legend
    assert page.count('class="b p"') - 1 == 3 * rows   # latency, energy, RAM on the board
    assert 'predicted by the roofline-v0 cost model for jetson-nano' in page
    assert "measured on host with onnxruntime" in page
    best = document["front"][0]
    assert f"point {best['id']} keeps" in page and "30.0 kB size budget on jetson-nano" in page
    for package, dist in (("torch", "torch"), ("onnxruntime", "onnxruntime"),
                          ("tvm", "apache-tvm"), ("optuna", "optuna")):
        assert f"<dt>{package}</dt><dd>{metadata.version(dist)}</dd>" in page
    assert "<dt>seed</dt><dd>0</dd>" in page
    assert "autocompress search --model tests.tiny_workload:make_workload" in page
    assert "Per-layer plans" in page and "weight bits" in page


def test_report_without_the_study_shows_the_front_and_says_why(run, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    document = json.loads((run / "pareto.json").read_text())
    document["study"]["storage"] = f"sqlite:///{tmp_path / 'gone' / 'study.db'}"
    (moved / "pareto.json").write_text(json.dumps(document))
    page = write_report(moved).html.read_text(encoding="utf-8")
    assert "study storage not found: only the front is shown" in page
    assert page.count('<td class="name">uncompressed</td>') == 1
    for p in document["front"]:
        assert f'<td class="name">{p["id"]}</td>' in page


def test_markdown_summary(run, report):
    text = report.markdown.read_text(encoding="utf-8")
    document = json.loads((run / "pareto.json").read_text())
    for p in document["front"]:
        assert re.search(rf"^\| {p['id']} \| {p['quality']:.4f} \|", text, re.M)
    assert text.count("(p)") >= 3 * len(document["front"])
    assert f"point {document['front'][0]['id']} keeps" in text


HOSTILE = ('<script>alert("x")</script>',
           "<img src=x onerror=\"console.error('xss')\">'&$\\frac$")   # $..$ is mathtext to matplotlib


def hostile_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor(HOSTILE[0], TensorProto.FLOAT, (16, 32),
                            rng.standard_normal(16 * 32).astype(np.float32))
    w2 = helper.make_tensor(HOSTILE[1], TensorProto.FLOAT, (32, 4),
                            rng.standard_normal(32 * 4).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", HOSTILE[0]], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", HOSTILE[1]], ["y"])], "hostile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_hostile_layer_names_are_escaped(tmp_path):
    model = hostile_model(tmp_path / "hostile.onnx")
    out = tmp_path / "run"
    api.search(api.SearchConfig(model=str(model), target="host", trials=3, out=str(out)))
    files = write_report(out)
    page = files.html.read_text(encoding="utf-8")
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;console.error(&#x27;xss&#x27;)&quot;&gt;&#x27;&amp;$\\frac$" in page
    assert "plan_heatmap" in {p.stem for p in files.pngs.values()}
    rendered = chromium_render(files.html, tmp_path / "hostile.png")
    assert rendered.console == [], "an unescaped name would run or load something"


def test_cli_report_and_a_missing_run(run, capsys, tmp_path):
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "report.md").is_file()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autocompress: error: ") and "pareto.json" in err[0]


def test_optuna_dashboard_opens_the_run_storage(run):
    from io import BytesIO

    from optuna_dashboard import wsgi

    document = json.loads((run / "pareto.json").read_text())
    app = wsgi(document["study"]["storage"])

    def get(path: str):
        status = []
        body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
                             "SERVER_NAME": "x", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                             "wsgi.input": BytesIO()}, lambda s, h, *a: status.append(s)))
        assert status[0].startswith("200"), (path, status, body[:300])
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["autocompress"]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert len(detail["trials"]) == document["study"]["n_trials"]
    assert len(detail["directions"]) == 3


def test_a_too_tight_budget_is_said_first_in_both_reports(run, tmp_path):
    """verdict.py's plain words lead report.md and report.html (escaped like the rest)."""
    from autocompress import verdict

    document = json.loads((run / "pareto.json").read_text())
    record = {"uncompressed_quality": 0.98, "best_in_budget": 0.49, "best_id": 3, "keeps": 0.5,
              "too_tight": True, "smallest_keeping": {
                  "0.90": {"id": 4, "quality": 0.9, "size_bytes": 52_000, "latency_s": 0.002},
                  "0.95": None}}
    record["message"] = verdict.message(record)
    document["verdict"] = record
    moved = tmp_path / "tight"
    moved.mkdir()
    (moved / "pareto.json").write_text(json.dumps(document))
    files = write_report(moved)
    lines = [line for line in files.markdown.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[1] == f"**{record['message']}**"
    assert "50.0% of the uncompressed quality" in lines[1] and "52.0 kB" in lines[1]
    page = files.html.read_text(encoding="utf-8")
    warn = page.index('<p class="warn">')
    assert warn < page.index("<h2>Recommendation</h2>")
    assert "no candidate kept 95%" in page[warn:page.index("</p>", warn)]
