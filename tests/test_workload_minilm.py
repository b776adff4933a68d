"""The MiniLM workload: our torch encoder matches the reference, data and scoring behave."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# autocompress is not pip-installed in the venv; make the repo root importable for plain `pytest`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.workloads import minilm

SENTENCES = [
    "Return a JSON string representation of a Python data structure.",
    "Set handler as the new event loop exception handler.",
    "A short one.",
    "Differ is a class for comparing sequences of lines of text, and producing human-readable differences.",
]


@pytest.fixture(scope="module")
def workload():
    return minilm.make_minilm_workload()


def _embed(model: nn.Module, batch) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])).numpy()


def _reference_embeddings(sentences: list[str]) -> np.ndarray:
    """sentence-transformers on the packaged model; transformers + mean pooling as a fallback."""
    path = str(minilm.model_dir())
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device="cpu")
        return st.encode(sentences, convert_to_numpy=True, normalize_embeddings=True)
    except Exception:  # sentence-transformers cannot load offline: compare with plain transformers
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
        enc = tokenizer(sentences, padding=True, truncation=True, max_length=minilm.MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_matches_reference_implementation():
    ours = _embed(minilm.load_minilm(), minilm.tokenize(SENTENCES))
    reference = _reference_embeddings(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_padding_does_not_change_embeddings():
    model = minilm.load_minilm()
    alone = _embed(model, minilm.tokenize(SENTENCES[2:3]))
    padded = _embed(model, minilm.tokenize(SENTENCES[2:3], pad_to=minilm.MAX_TOKENS))
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_load_minilm_returns_independent_copies():
    a, b = minilm.load_minilm(), minilm.load_minilm()
    a.layers[0].ffn.fc1 = nn.Linear(384, 8)
    assert isinstance(b.layers[0].ffn.fc1, nn.Linear) and b.layers[0].ffn.fc1.out_features == 1536


def test_sentences_disjoint_and_sized(workload):
    calibration, evaluation = minilm.split_sentences(640, 256)
    assert len(calibration) == 640 and len(evaluation) == 256
    assert len(set(calibration)) == 640 and len(set(evaluation)) == 256
    assert not set(calibration) & set(evaluation)
    for s in calibration + evaluation:
        assert s.isascii() and s.endswith(".") and 6 <= len(s.split()) <= 40
    assert sum(len(b["input_ids"]) for b in workload.calibration) == 640
    assert sum(len(b["input_ids"]) for b in workload.evaluation) == 256


def test_split_raises_when_too_few_sentences():
    with pytest.raises(RuntimeError, match="sentences"):
        minilm.split_sentences(len(minilm.collect_sentences()), 1)


def test_workload_shape(workload):
    assert workload.name == "minilm"
    assert workload.input_names == ("input_ids", "attention_mask")
    assert workload.output_names == ("embedding",)
    assert set(workload.dynamic_axes) == {"input_ids", "attention_mask", "embedding"}
    for name in workload.input_names:
        assert workload.example[name].shape == (1, minilm.MAX_TOKENS)
        assert workload.example[name].dtype == np.int64
    mask = workload.example["attention_mask"][0]
    n = int(mask.sum())
    assert 10 < n <= minilm.MAX_TOKENS and mask[:n].all() and not mask[n:].any()
    batch = workload.evaluation[0]
    assert batch["input_ids"].dtype == np.int64 and batch["input_ids"].shape == batch["attention_mask"].shape
    # padded per batch to the longest sentence in it
    assert batch["attention_mask"].sum(axis=1).max() == batch["input_ids"].shape[1]


@pytest.fixture(scope="module")
def model_outputs(workload):
    """The uncompressed model's outputs on every evaluation batch, run once (CPU time is scarce)."""
    return [[_embed(workload.model, batch)] for batch in workload.evaluation]


def test_teacher_scores_itself_perfectly(workload, model_outputs):
    quality = workload.score(model_outputs)
    assert quality.metric == "teacher_cosine"
    assert quality.value == pytest.approx(1.0, abs=1e-5)
    assert quality.details["cosine_min"] == pytest.approx(1.0, abs=1e-5)
    assert quality.details["spearman"] == pytest.approx(1.0, abs=1e-6)


def test_perturbed_outputs_score_lower(workload, model_outputs):
    clean = model_outputs
    rng = np.random.default_rng(0)
    noisy = [[out[0] + rng.normal(0.0, 0.03, out[0].shape).astype(np.float32)] for out in clean]
    quality = workload.score(noisy)
    assert 0.5 < quality.value < 0.999
    assert quality.details["spearman"] < 0.999
    # scaling does not matter: embeddings are renormalised before comparison
    assert workload.score([[3.0 * out[0]] for out in clean]).value == pytest.approx(1.0, abs=1e-5)


def test_nan_outputs_score_zero(workload, model_outputs):
    broken = [[out[0].copy()] for out in model_outputs]
    broken[0][0][0, 0] = np.nan
    assert workload.score(broken).value == 0.0


def test_rebuilding_is_cheap_and_does_not_share_the_model(workload):
    again = minilm.make_minilm_workload()
    assert again.model is not workload.model
    assert again.evaluation[0]["input_ids"] is not workload.evaluation[0]["input_ids"]
    np.testing.assert_array_equal(again.evaluation[0]["input_ids"], workload.evaluation[0]["input_ids"])


def test_head_pruning_keeps_the_strongest_heads_and_the_encoder_runs():
    from autocompress.compression.structural.pruning import prune_heads

    model = minilm.load_minilm()
    attention = model.layers[1].attention
    before = _embed(model, minilm.tokenize(SENTENCES))
    prune_heads(attention, 0.5)
    assert attention.num_heads == 6
    assert attention.q.out_features == attention.k.out_features == 6 * attention.head_dim
    assert attention.o.in_features == 6 * attention.head_dim
    out = _embed(model, minilm.tokenize(SENTENCES))
    assert out.shape == (len(SENTENCES), 384) and np.isfinite(out).all()
    cosine = (out * before).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(before, axis=1)
    assert 0.5 < cosine.min() < 1.0     # changed, not broken (half of one layer's heads)


def test_low_rank_factorization_of_an_ffn_layer_and_the_word_table_runs():
    from autocompress.compression.structural.lowrank import LowRank, factorize

    model = minilm.load_minilm()
    before = _embed(model, minilm.tokenize(SENTENCES))
    model.layers[0].ffn.fc1 = factorize(model.layers[0].ffn.fc1, 256)
    model.embeddings.word = factorize(model.embeddings.word, 192)
    assert isinstance(model.layers[0].ffn.fc1, LowRank) and isinstance(model.embeddings.word, LowRank)
    assert [tuple(p.shape) for p in model.embeddings.word.parameters()][:1] == [(30522, 192)]
    out = _embed(model, minilm.tokenize(SENTENCES))
    assert out.shape == (len(SENTENCES), 384) and np.isfinite(out).all()
    cosine = (out * before).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(before, axis=1)
    assert 0.6 < cosine.min() < 1.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo=False is the legacy exporter, on purpose
def test_onnx_export_matches_torch(workload, tmp_path):
    import onnxruntime as ort

    path = tmp_path / "minilm.onnx"
    example = tuple(torch.from_numpy(workload.example[n]) for n in workload.input_names)
    torch.onnx.export(
        workload.model, example, str(path), dynamo=False, opset_version=17,
        input_names=list(workload.input_names), output_names=list(workload.output_names),
        dynamic_axes={k: dict(v) for k, v in workload.dynamic_axes.items()},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (workload.example, workload.evaluation[0]):  # fixed 64 tokens, then a different shape
        (onnx_out,) = session.run(["embedding"], dict(batch))
        np.testing.assert_allclose(onnx_out, _embed(workload.model, batch), atol=1e-4)
