"""apply(plan) produces real artifacts: smaller tensors, low-bit storage, close outputs."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from autocompress.backends.ort_runner import make_session, run_batches
from autocompress.compression.apply import apply_plan, compress_torch
from autocompress.compression.knobs import torch_knobs
from autocompress.compression.plan import Plan
from tests.tiny_workload import make_workload
from tests.fixture_models import small_cnn_workload


def all_units(knobs, name, value):
    units = {}
    for knob in knobs:
        if knob.name == name and value in knob.choices:
            units.setdefault(knob.unit, {})[name] = value
    return units


@pytest.fixture(scope="module")
def tiny():
    return make_workload()


def outputs(path, workload):
    return np.concatenate([o[0] for o in run_batches(make_session(path), workload.evaluation)])


def reference(workload):
    with torch.no_grad():
        return np.concatenate([workload.model(torch.from_numpy(b["x"])).numpy()
                               for b in workload.evaluation])


def weight_tensors(path):
    model = onnx.load(str(path))
    return [i for i in model.graph.initializer if len(i.dims) == 2 and not i.name.endswith("_scale")]


def test_reported_size_is_the_file_size(tmp_path, tiny):
    artifact = apply_plan(Plan({"fc1": {"quant": "w8"}}), tiny, tmp_path / "a.onnx")
    assert artifact.size_bytes == (tmp_path / "a.onnx").stat().st_size
    assert not list(tmp_path.glob("*.tmp*"))


def test_uncompressed_plan_reproduces_the_model(tmp_path, tiny):
    artifact = apply_plan(Plan(), tiny, tmp_path / "a.onnx")
    np.testing.assert_allclose(outputs(artifact.path, tiny), reference(tiny), atol=1e-5)
    assert artifact.n_params >= sum(p.numel() for p in tiny.model.parameters())


def test_same_plan_gives_the_same_bytes(tmp_path, tiny):
    plan = Plan({"fc1": {"quant": "w4", "rank_ratio": 0.25}, "fc2": {"quant": "w8a8"}})
    a = apply_plan(plan, tiny, tmp_path / "a.onnx")
    b = apply_plan(plan, tiny, tmp_path / "b.onnx")
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_weight_only_plans_reuse_the_torch_stage_with_the_same_bytes(tmp_path, tiny):
    from autocompress.compression import apply as apply_module

    structure = {"fc1": {"rank_ratio": 0.25}}
    first = Plan({**structure, "fc2": {"quant": "w8"}})
    second = Plan({"fc1": {"rank_ratio": 0.25, "quant": "w4"}, "fc2": {"clusters": 16}})
    timings = {}
    apply_module._EXPORTS.clear()
    apply_plan(first, tiny, tmp_path / "a.onnx", timings)
    assert timings["apply"] > 0
    reused = apply_plan(second, tiny, tmp_path / "b.onnx", timings)
    assert timings["apply"] == 0.0            # same structure: export taken from memory
    apply_module._EXPORTS.clear()
    fresh = apply_plan(second, tiny, tmp_path / "c.onnx", timings)
    assert timings["apply"] > 0
    assert reused.sha256 == fresh.sha256      # remembered export = a fresh one, byte for byte
    with pytest.raises(apply_module.PlanError, match="does not have"):
        apply_plan(Plan({"nope": {"quant": "w8"}}), tiny, tmp_path / "d.onnx")


def test_float_edits_are_remembered_read_only_and_bounded():
    from autocompress.compression.weights import storage as ws

    rng = np.random.default_rng(0)
    init = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")
    plan = ws.WeightPlan(sparsity=0.5, clusters=16)
    first = ws._float_edits(onnx.TensorProto.FromString(init.SerializeToString()), plan)
    second = ws._float_edits(onnx.TensorProto.FromString(init.SerializeToString()), plan)
    assert all(a is b for a, b in zip(ws._arrays(first), ws._arrays(second)))
    assert not first[0].flags.writeable and int(first[1].sum()) == 64 * 32 // 2
    assert np.unique(first[0][first[1]]).size == 16
    entries = [(np.copy(first[0]), np.copy(first[1]), None) for _ in range(3)]
    cache = ws._EditCache(max_bytes=2 * ws._nbytes(entries[0]))
    for k, entry in enumerate(entries):
        cache.put(k, entry)
    assert cache.get(0) is None and cache.get(2) is not None and cache.bytes <= cache.max_bytes


def test_pruned_artifact_has_fewer_parameters(tmp_path):
    workload = small_cnn_workload()
    knobs = torch_knobs(workload.model, [torch.from_numpy(workload.example["image"])])
    prune = all_units(knobs, "prune_ratio", 0.5)
    assert prune, "the CNN offers channel-pruning knobs"
    full = apply_plan(Plan(), workload, tmp_path / "full.onnx")
    pruned = apply_plan(Plan(prune), workload, tmp_path / "pruned.onnx")
    assert pruned.n_params < 0.75 * full.n_params
    assert pruned.size_bytes < full.size_bytes
    out = run_batches(make_session(pruned.path), workload.evaluation)[0][0]
    assert out.shape == (8, 10)


def test_pruning_shrinks_transformer_heads_and_neurons():
    from autocompress.workloads.minilm import make_minilm_workload

    workload = make_minilm_workload()
    plan = Plan({"layers.0.attention": {"prune_ratio": 0.5}, "layers.1.ffn": {"prune_ratio": 0.75}})
    model = compress_torch(plan, workload)
    assert model.layers[0].attention.num_heads == 6
    assert model.layers[0].attention.q.weight.shape == (6 * 32, 384)
    assert model.layers[0].attention.o.weight.shape == (384, 6 * 32)
    assert model.layers[1].ffn.fc1.weight.shape == (384, 384)
    assert model.layers[1].ffn.fc2.weight.shape == (384, 384)
    assert workload.model.layers[0].attention.num_heads == 12, "the workload's model is untouched"


def test_int8_and_int4_weights_are_stored_in_low_bits(tmp_path, tiny):
    knobs = torch_knobs(tiny.model, [torch.from_numpy(tiny.example["x"])])
    for choice, dtype, ratio in (("w8", TensorProto.INT8, 3.2), ("w4", TensorProto.INT4, 5.0)):
        artifact = apply_plan(Plan(all_units(knobs, "quant", choice)), tiny, tmp_path / f"{choice}.onnx")
        weights = weight_tensors(artifact.path)
        assert weights and all(w.data_type == dtype for w in weights)
        float_size = apply_plan(Plan(), tiny, tmp_path / "f.onnx").size_bytes
        assert artifact.size_bytes * ratio < float_size * 1.0 + 4096 * ratio
        out = outputs(artifact.path, tiny)
        ref = reference(tiny)
        assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9
        assert np.abs(out - ref).max() < (0.5 if choice == "w8" else 3.0)


def test_int4_packing_is_two_values_per_byte(tmp_path, tiny):
    artifact = apply_plan(Plan({"fc1": {"quant": "w4"}}), tiny, tmp_path / "a.onnx")
    packed = [i for i in onnx.load(str(artifact.path)).graph.initializer if i.data_type == TensorProto.INT4]
    assert len(packed) == 1
    assert len(packed[0].raw_data) == 64 * 128 // 2
    values = numpy_helper.to_array(packed[0]).astype(np.int8)
    assert values.min() >= -8 and values.max() <= 7


def test_w8a8_runs_on_int8_kernels(tmp_path, tiny):
    artifact = apply_plan(Plan({"fc1": {"quant": "w8a8"}, "fc2": {"quant": "w8a8"}}), tiny,
                          tmp_path / "a.onnx")
    ops = [n.op_type for n in onnx.load(str(artifact.path)).graph.node]
    assert ops.count("MatMulInteger") == 2 and "DynamicQuantizeLinear" in ops
    out, ref = outputs(artifact.path, tiny), reference(tiny)
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.95


def test_low_rank_replaces_the_layer(tmp_path, tiny):
    full = apply_plan(Plan(), tiny, tmp_path / "f.onnx")
    factored = apply_plan(Plan({"fc1": {"rank_ratio": 0.25}}), tiny, tmp_path / "r.onnx")
    shapes = sorted(tuple(w.dims) for w in weight_tensors(factored.path))
    assert (64, 16) in shapes and (16, 128) in shapes and (64, 128) not in shapes
    assert factored.n_params < full.n_params


def test_embedding_table_quantizes_to_int8_rows(tmp_path):
    from autocompress.workloads.minilm import make_minilm_workload

    workload = make_minilm_workload()
    plan = Plan({"embeddings.word": {"quant": "w8", "rank_ratio": 1.0}})
    full = apply_plan(Plan(), workload, tmp_path / "f.onnx")
    quant = apply_plan(plan, workload, tmp_path / "q.onnx")
    saved = full.size_bytes - quant.size_bytes
    assert saved == pytest.approx(30522 * 384 * 3 - 30522 * 4, rel=0.01)
    session = make_session(quant.path)
    score = workload.score(run_batches(session, workload.evaluation))
    assert score.value > 0.99


def test_vocabulary_pruning_keeps_the_corpus_rows(tmp_path):
    """The kept rows are the tokens of calibration and the training set (never evaluation)."""
    from autocompress.workloads.minilm import make_minilm_workload

    workload = make_minilm_workload()
    corpus = set(np.concatenate([b["input_ids"].ravel() for b in
                                 [*workload.calibration, *workload.training]]).tolist())
    corpus.add(workload.vocab_fallback_id)
    evaluation = set(np.concatenate([b["input_ids"].ravel() for b in workload.evaluation]).tolist())
    assert not evaluation <= corpus       # some held-out tokens really are unseen
    model = compress_torch(Plan({"embeddings.word": {"vocab": "corpus"}}), workload)
    assert model.embeddings.word.embed.weight.shape == (len(corpus), 384)
    full = apply_plan(Plan(), workload, tmp_path / "f.onnx")
    pruned = apply_plan(Plan({"embeddings.word": {"vocab": "corpus", "quant": "w8"}}), workload,
                        tmp_path / "v.onnx")
    expected_saving = 30522 * 384 * 4 - len(corpus) * (384 + 4) - 30522 * 4
    assert full.size_bytes - pruned.size_bytes == pytest.approx(expected_saving, rel=0.01)
    session = make_session(pruned.path)
    assert workload.score(run_batches(session, workload.evaluation)).value > 0.98   # unseen ids -> [UNK]
    # a calibration sentence's ids are all kept: its embedding is unchanged by the pruning alone
    only_vocab = apply_plan(Plan({"embeddings.word": {"vocab": "corpus"}}), workload, tmp_path / "o.onnx")
    batch = workload.calibration[0]
    with torch.no_grad():
        ref = workload.model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
    out = make_session(only_vocab.path).run(None, dict(batch))[0]
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4)


def test_a_position_table_gets_storage_knobs_and_a_tiny_table_none():
    """Few rows but many weights (MiniLM's 512 x 384 positions: 786 kB in float) is worth
    storing in fewer bits; a 2-row token-type table is not."""
    from autocompress.compression.weights.knobs import torch_weight_knobs

    model = nn.ModuleDict({"position": nn.Embedding(512, 384), "token_type": nn.Embedding(2, 384),
                           "word": nn.Embedding(5000, 8)})
    units = {k.unit for k in torch_weight_knobs(model)[0] if k.name == "quant"}
    assert units == {"position", "word"}


def test_minilm_position_table_stored_in_four_bits(tmp_path):
    from autocompress.workloads.minilm import make_minilm_workload

    workload = make_minilm_workload()
    full = apply_plan(Plan(), workload, tmp_path / "f.onnx")
    small = apply_plan(Plan({"embeddings.position": {"quant": "w4"}}), workload, tmp_path / "p.onnx")
    assert full.size_bytes - small.size_bytes > 0.8 * 512 * 384 * 3.5
    out = run_batches(make_session(small.path), workload.evaluation)
    assert workload.score(out).value > 0.98
