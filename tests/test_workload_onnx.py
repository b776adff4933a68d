"""ONNX files as other exporters write them (issue 15): Constant weights, weights in If
branches and recurrent ops, free dimensions, integer inputs, real data, label-free metrics.
The models are tests/foreign_models.py; silero-vad itself is benchmarks/foreign_onnx.py."""
import numpy as np
import onnx
import pytest

from autocompress.api import discover_knobs, discover_skips
from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.cli import main
from autocompress.compression.apply import apply_plan
from autocompress.compression.weights.onnx_graph import weights
from autocompress.compression.plan import Plan
from autocompress.workloads import WorkloadError, load_workload
from tests import foreign_models


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))


def uniform(workload, **settings) -> Plan:
    units = {}
    for knob in discover_knobs(workload):
        value = settings.get(knob.name)
        if value is not None and value in knob.choices:
            units.setdefault(knob.unit, {})[knob.name] = value
    return Plan(units)


def test_constant_node_weights_become_knobs_and_compress(tmp_path):
    path = foreign_models.constant_mlp(tmp_path / "mlp.onnx")
    assert not onnx.load(str(path)).graph.initializer          # every weight is a Constant node
    workload = load_workload(str(path))
    units = {k.unit for k in discover_knobs(workload) if k.name == "quant"}
    assert units == {"w1", "w2"}
    art = apply_plan(uniform(workload, quant="w4"), workload, tmp_path / "w4.onnx")
    assert art.size_bytes < path.stat().st_size / 4
    quality = workload.score(run_batches(make_session(art.path), workload.evaluation))
    assert quality.metric == "top1_agreement" and quality.value >= 0.8


def test_weights_in_if_branches_are_found_moved_and_compressed(tmp_path):
    path = foreign_models.branch_model(tmp_path / "branches.onnx")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for rate in (16000, 8000):     # both branches run: one .npz per sample rate
        np.savez(data / f"{rate}.npz", audio=rng.standard_normal((6, 1, 1, 400)).astype(np.float32),
                 sr=np.array(rate, np.int64))
    workload = load_workload(str(path), data=str(data))
    found = weights(onnx.load(str(workload.onnx_path)))
    assert set(found) == {"wide_conv_w", "wide_head", "narrow_conv_w", "narrow_head"}
    assert {kind for kind, _ in found.values()} == {"conv:inner", "matmul:inner"}
    quant = {k.unit: k.choices for k in discover_knobs(workload) if k.name == "quant"}
    assert "w8a8" not in quant["wide_conv_w"] and "w4" in quant["wide_conv_w"]  # weight-only there
    art = apply_plan(uniform(workload, quant="w8"), workload, tmp_path / "w8.onnx")
    compressed, original = make_session(art.path), make_session(path)
    for rate in (16000, 8000):
        feed = {"audio": np.ones((1, 1, 400), np.float32), "sr": np.array(rate, np.int64)}
        got, want = compressed.run(None, feed)[0], original.run(None, feed)[0]
        assert np.allclose(got, want, rtol=0.05, atol=0.02)
    stored = {i.name for i in onnx.load(str(art.path)).graph.initializer}
    assert "wide_conv_w" not in stored and "wide_conv_w_codes_codes" in stored   # packed int8 codes


def test_recurrent_weights_take_weight_only_storage(tmp_path):
    path = foreign_models.recurrent_model(tmp_path / "lstm.onnx")
    workload = load_workload(str(path))
    found = weights(onnx.load(str(workload.onnx_path)))
    assert found["W"][0] == found["R"][0] == "recurrent"
    for quant in ("w8", "w4", "w3"):
        art = apply_plan(uniform(workload, quant=quant), workload, tmp_path / f"{quant}.onnx")
        quality = workload.score(run_batches(make_session(art.path), workload.evaluation))
        assert quality.metric == "output_cosine" and quality.value > 0.95, (quant, quality)
        assert art.size_bytes < path.stat().st_size * (0.5 if quant == "w8" else 0.3)


def test_free_dimensions_need_a_shape_and_take_the_one_given(tmp_path):
    path = foreign_models.image_model(tmp_path / "image.onnx")
    with pytest.raises(WorkloadError, match=r"free dimension at axis 2 \('H'\).*--input-shape image=1x3xNxN"):
        load_workload(str(path))
    workload = load_workload(str(path), input_shapes=["image=2x3x24x32"])
    assert workload.example["image"].shape == (2, 3, 24, 32)
    assert workload.synthetic_inputs and "synthetic" in workload.description


def test_a_placeholder_on_several_axes_is_not_one_dimension(tmp_path):
    """Paddle2ONNX writes "?" on every free axis (rapidocr's text-direction classifier:
    x [-1, 3, ?, ?]); a 48x192 image must not be refused as two sizes of one dimension."""
    path = foreign_models.image_model(tmp_path / "image.onnx")
    model = onnx.load(str(path))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "?"
    onnx.save(model, str(path))
    with pytest.raises(WorkloadError, match=r"free dimension at axis 2: give --input-shape"):
        load_workload(str(path))
    workload = load_workload(str(path), input_shapes=["image=1x3x24x32"])
    assert workload.example["image"].shape == (1, 3, 24, 32)


def test_one_named_dimension_given_two_sizes_names_both_places(tmp_path):
    path = foreign_models.image_model(tmp_path / "image.onnx")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "H"
    onnx.save(model, str(path))
    with pytest.raises(WorkloadError, match=r"dimension 'H' is 24 at 'image' axis 2 and 32 at "
                                            r"'image' axis 3"):
        load_workload(str(path), input_shapes=["image=1x3x24x32"])


def test_a_free_batch_dimension_is_one(tmp_path):
    workload = load_workload(str(foreign_models.constant_mlp(tmp_path / "mlp.onnx")))
    assert workload.example["x"].shape == (1, 64)


def test_an_integer_input_of_unknown_meaning_is_never_made_up(tmp_path):
    path = foreign_models.branch_model(tmp_path / "branches.onnx")
    with pytest.raises(WorkloadError, match="integer input 'sr'.*--data"):
        load_workload(str(path), input_shapes=["audio=1x1x400"])


def table_model(path):
    """Token ids [1, 12] -> a 50 x 16 embedding table -> mean: 4 distinct plans in all."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]),
         helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0)], "ids",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        initializer=[numpy_helper.from_array(table, "table")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_token_ids_are_drawn_from_their_table(tmp_path):
    workload = load_workload(str(table_model(tmp_path / "ids.onnx")))
    ids = np.concatenate([b["ids"] for b in workload.evaluation])
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 25


@pytest.mark.parametrize("arrays, says", [
    ({"audio": np.zeros((3, 1, 1, 400), np.float32)}, "lacks input(s) sr"),
    ({"audio": np.zeros((3, 1, 1, 400), np.float32), "sr": np.array(16000, np.int64),
      "extra": np.zeros(2)}, "has array(s) extra the model has no input for"),
    ({"audio": np.zeros((3, 1, 1, 400), np.float64), "sr": np.array(16000, np.int64)},
     "input 'audio' is float64, the model takes float32"),
    ({"audio": np.zeros((3, 1, 2, 400), np.float32), "sr": np.array(16000, np.int64)},
     "input 'audio' axis 1 must be 1, got 2"),
    ({"audio": np.zeros((1, 1, 400), np.float32), "sr": np.array(16000, np.int64)},
     "holds 1 input set; at least 2"),
])
def test_bad_data_is_one_line_and_exit_2(tmp_path, capsys, arrays, says):
    path = foreign_models.branch_model(tmp_path / "branches.onnx")
    np.savez(tmp_path / "data.npz", **arrays)
    assert main(["techniques", "--model", str(path), "--data", str(tmp_path / "data.npz")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and says in err[0], err


def test_data_that_does_not_run_is_one_line(tmp_path, capsys):
    path = foreign_models.branch_model(tmp_path / "branches.onnx")
    np.savez(tmp_path / "data.npz", audio=np.zeros((3, 1, 1, 0), np.float32), sr=np.array(16000, np.int64))
    assert main(["techniques", "--model", str(path), "--data", str(tmp_path / "data.npz")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "does not run on --data" in err[0] and "Invalid input shape" in err[0], err


def test_pickled_data_is_refused(tmp_path, capsys):
    path = foreign_models.constant_mlp(tmp_path / "mlp.onnx")
    np.savez(tmp_path / "data.npz", x=np.array([object()] * 4, dtype=object))
    assert main(["techniques", "--model", str(path), "--data", str(tmp_path / "data.npz")]) == 2
    assert "not a readable .npz of arrays" in capsys.readouterr().err


def test_data_is_split_into_disjoint_calibration_and_evaluation(tmp_path):
    path = foreign_models.constant_mlp(tmp_path / "mlp.onnx")
    x = np.arange(40 * 64, dtype=np.float32).reshape(40, 1, 64)
    np.savez(tmp_path / "data.npz", x=x)
    workload = load_workload(str(path), data=str(tmp_path / "data.npz"))
    first = lambda sets: {float(b["x"][0, 0]) for b in sets}   # noqa: E731
    assert len(first(workload.calibration)) == 20 and len(first(workload.evaluation)) == 20
    assert not first(workload.calibration) & first(workload.evaluation)
    assert not workload.synthetic_inputs and "real inputs" in workload.description


def test_metric_is_chosen_from_the_output_shape_or_named(tmp_path, monkeypatch):
    path = foreign_models.constant_mlp(tmp_path / "mlp.onnx")
    workload = load_workload(str(path))
    outputs = run_batches(make_session(path), workload.evaluation)
    assert workload.score(outputs).metric == "top1_agreement"   # classifier-shaped: the default
    assert load_workload(str(path), metric="cosine").score(outputs).metric == "output_cosine"
    (tmp_path / "my_metric.py").write_text(
        "import numpy as np\n"
        "def l1(outputs, reference):\n"
        "    return -float(np.mean([np.abs(o['logits'] - r['logits']).mean()\n"
        "                           for o, r in zip(outputs, reference)]))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    own = load_workload(str(path), metric="my_metric:l1").score(outputs)
    assert own.metric == "my_metric:l1" and own.value == 0.0
    recurrent = foreign_models.recurrent_model(tmp_path / "lstm.onnx")
    with pytest.raises(WorkloadError, match=r"top1 needs a first output shaped \[N, classes\]"):
        load_workload(str(recurrent), metric="top1")


def test_one_valued_outputs_are_scored_across_the_evaluation_set(tmp_path):
    """A [1, 1] output (a speech probability) scored per input set would always be 1."""
    from autocompress.workloads.onnx_metrics import cosine_quality

    reference = [[np.array([[p]], np.float32)] for p in (0.1, 0.9, 0.2, 0.8)]
    flipped = [[np.array([[p]], np.float32)] for p in (0.9, 0.1, 0.8, 0.2)]
    assert cosine_quality(reference, reference).value == pytest.approx(1.0)
    assert cosine_quality(flipped, reference).value < 0.5


def test_techniques_names_the_path_and_why(tmp_path, capsys):
    path = foreign_models.constant_mlp(tmp_path / "mlp.onnx")
    assert main(["techniques", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "techniques path: the ONNX graph is compressed as given" in out
    assert "inputs: synthetic inputs" in out
    workload = load_workload(str(path))
    assert not any("structural" in s.message() for s in discover_skips(workload))


def test_a_model_with_nothing_to_compress_is_refused(tmp_path, capsys):
    path = foreign_models.weightless_model(tmp_path / "none.onnx")
    assert main(["search", "--model", str(path), "--trials", "2", "--out", str(tmp_path / "run")]) == 2
    assert "nothing to compress in none" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_already_quantized_model_is_refused_saying_so(tmp_path, capsys):
    """A file whose weights ONNX Runtime already stored as int8 (ddddocr's common_old.onnx
    ships that way): the one line says which integer ops hold them."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = foreign_models.image_model(tmp_path / "image.onnx")
    path = tmp_path / "image_int8.onnx"
    quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    assert main(["search", "--model", str(path), "--input-shape", "image=1x3x8x8",
                 "--trials", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nothing to compress in image_int8" in err and len(err.strip().splitlines()) == 1
    assert "already quantized (" in err and "1 ConvInteger" in err and "MatMulInteger" in err
    assert not (tmp_path / "run").exists()


def test_search_on_a_constant_weight_model_finds_smaller_points(tmp_path, capsys):
    import json

    path = foreign_models.constant_mlp(tmp_path / "mlp.onnx")
    run = tmp_path / "run"
    assert main(["search", "--model", str(path), "--target", "host", "--trials", "8",
                 "--budget", "20KB", "--out", str(run)]) == 0
    assert "Quality was measured on synthetic inputs" in " ".join(capsys.readouterr().out.split())
    assert main(["report", str(run)]) == 0
    for name in ("report.md", "report.html"):
        assert "Quality was measured on synthetic inputs" in (run / "report" / name).read_text(encoding="utf-8")
    doc = json.loads((run / "pareto.json").read_text())
    assert doc["workload"]["synthetic_inputs"] is True
    assert "synthetic" in doc["workload"]["inputs"]
    fits = [p for p in doc["front"] if p["size_bytes"] <= 20_000]
    assert fits and max(p["quality"] for p in fits) >= 0.9
    assert len({p["plan_digest"] for p in doc["front"]}) == len(doc["front"])


def test_a_plan_already_measured_is_answered_not_counted(tmp_path):
    """4 plans exist; 6 trials asked: every plan is measured once, the repeats are
    answered from the first trial, and the search ends (at most one blank per trial)."""
    import json

    path = table_model(tmp_path / "ids.onnx")
    assert [k.choices for k in discover_knobs(load_workload(str(path)))] == [("float", "w8", "w16", "w4")]
    run = tmp_path / "run"
    assert main(["search", "--model", str(path), "--target", "host", "--trials", "6",
                 "--no-sensitivity", "--out", str(run)]) == 0
    doc = json.loads((run / "pareto.json").read_text())
    import optuna

    trials = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{run}/study.db").trials
    new_work = [t for t in trials if "duplicate_of" not in t.user_attrs]
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]
    digests = [t.user_attrs["plan_digest"] for t in new_work]
    assert len(digests) == len(set(digests)) == 4          # each plan measured once
    assert repeats and doc["study"]["n_duplicates"] == len(repeats)
    assert len(trials) <= 2 * 6                           # one blank per repeat, at most 6
    for t in repeats:
        first = trials[t.user_attrs["duplicate_of"]]
        assert t.user_attrs["plan_digest"] == first.user_attrs["plan_digest"]
        assert t.user_attrs["metrics"] == first.user_attrs["metrics"]


def test_entropy_histograms_stay_within_their_bins():
    """ORT widens a histogram at its bin width when a later batch reaches further; the
    entropy search then runs over every bin (525 s for one silero-vad trial)."""
    from autocompress.compression.weights.calibration import cap_bins

    rng = np.random.default_rng(0)
    data = np.concatenate([rng.standard_normal(1000), 50 * rng.standard_normal(10)])
    edges = np.linspace(-60.0, 60.0, 6001)
    hist, _ = np.histogram(data, edges)
    histograms = {"t": (hist, edges, float(data.min()), float(data.max()), 60.0)}
    cap_bins(histograms, 512)
    capped, capped_edges, _, _, threshold = histograms["t"]
    assert len(capped) <= 512 and len(capped_edges) == len(capped) + 1
    assert capped.sum() == hist.sum() and threshold >= 60.0
    assert capped_edges[0] == -threshold and capped_edges[-1] == threshold
    centre = np.argmax(capped)
    assert abs((capped_edges[centre] + capped_edges[centre + 1]) / 2) < 1.0   # still around 0


def test_a_compressed_branch_model_with_a_scalar_input_compiles_with_tvm(tmp_path):
    """The stored artifact stays a model TVM compiles (If branches reading hoisted weights,
    a 0-d ``sr`` input) and its host library agrees with ONNX Runtime on the real inputs."""
    from autocompress.backends import tvm_check, tvm_compile
    from autocompress.device_profiles import resolve_target

    path = foreign_models.branch_model(tmp_path / "branches.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", audio=rng.standard_normal((6, 1, 1, 400)).astype(np.float32),
             sr=np.array(16000, np.int64))
    workload = load_workload(str(path), data=str(tmp_path / "data.npz"))
    art = apply_plan(uniform(workload, quant="w8"), workload, tmp_path / "w8.onnx")
    shapes = {n: workload.example[n].shape for n in workload.input_names}
    assert shapes["sr"] == ()
    library = tvm_compile.compile_onnx(art.path, shapes, resolve_target("host"))
    agreement = tvm_check.compare(library.path, art.path, workload.evaluation,
                                  workload.input_names, shapes)
    assert agreement.inputs == len(workload.evaluation) and agreement.ok and agreement.exact < 1e-4
