"""The built-in ``digits-cnn`` workload: data splits, accuracy, scoring, caching, ONNX export, pruning."""
from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file
from sklearn.datasets import load_digits
from torch import nn

from autocompress.workloads import digits_cnn as dc
from autocompress.workloads.base import Quality, Workload


@pytest.fixture(scope="session")
def workload() -> Workload:
    """Built once per session; trains (~25 s on 2 cores) only if the weights cache is empty."""
    return dc.make_digits_workload()


@pytest.fixture(scope="session")
def splits() -> dc.DigitsSplits:
    return dc.load_splits()


def _torch_outputs(model: nn.Module, batches) -> list[list[np.ndarray]]:
    with torch.no_grad():
        return [[model(torch.from_numpy(b["image"])).numpy()] for b in batches]


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_workload_record(workload: Workload, splits: dc.DigitsSplits) -> None:
    assert workload.name == "digits-cnn"
    assert workload.input_names == ("image",) and workload.output_names == ("logits",)
    assert workload.dynamic_axes == {"image": {0: "batch"}, "logits": {0: "batch"}}
    assert workload.onnx_path is None and isinstance(workload.model, dc.DigitsCNN)
    assert not workload.model.training
    assert workload.example["image"].shape == (1, 1, 32, 32)
    assert workload.example["image"].dtype == np.float32
    for batch in [*workload.calibration, *workload.evaluation]:
        assert set(batch) == {"image"} and batch["image"].dtype == np.float32
        assert batch["image"].shape[1:] == (1, 32, 32) and len(batch["image"]) <= 64
    assert sum(len(b["image"]) for b in workload.calibration) == len(splits.y_calib)
    assert sum(len(b["image"]) for b in workload.evaluation) == len(splits.y_test)
    assert "accuracy" in workload.description
    assert dc.make_digits_workload() is workload  # lru_cache: built once per process


def test_model_size_and_modules(workload: Workload) -> None:
    assert 50_000 <= _param_count(workload.model) <= 150_000
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU6, nn.Linear, nn.AdaptiveAvgPool2d, nn.Flatten,
               nn.Sequential, dc.InvertedResidual, dc.DigitsCNN)
    assert all(isinstance(m, allowed) for m in workload.model.modules())
    assert workload.model.classifier.in_features == 128
    assert workload.model.classifier.out_features == 10


def test_splits_disjoint_stratified_and_deterministic(splits: dc.DigitsSplits) -> None:
    train, calib, test = (set(map(int, s)) for s in (splits.idx_train, splits.idx_calib, splits.idx_test))
    assert not train & calib and not train & test and not calib & test
    assert len(train) + len(calib) + len(test) == 1797
    assert abs(len(test) / 1797 - 0.25) < 0.01 and abs(len(calib) / 1797 - 0.10) < 0.01
    for labels in (splits.y_train, splits.y_calib, splits.y_test):
        assert set(labels.tolist()) == set(range(10))
        assert np.bincount(labels).min() >= 0.8 * len(labels) / 10  # stratified
    again = dc._split_indices(load_digits().target, dc.TRAIN)
    assert all(np.array_equal(a, b) for a, b in zip(again, (splits.idx_train, splits.idx_calib, splits.idx_test)))
    assert abs(float(splits.x_train.mean())) < 0.2 and 0.8 < float(splits.x_train.std()) < 1.2  # normalised


def test_float_accuracy(workload: Workload, splits: dc.DigitsSplits) -> None:
    quality = workload.score(_torch_outputs(workload.model, workload.evaluation))
    assert isinstance(quality, Quality) and quality.metric == "accuracy"
    assert quality.value >= 0.97
    assert quality.details["accuracy"] == quality.value
    assert quality.details["n"] == len(splits.y_test)
    stored = float(dc.read_metadata(dc.weights_path())["test_accuracy"])
    assert quality.value == pytest.approx(stored, abs=1e-5)


def test_score_perfect_and_constant_logits(workload: Workload, splits: dc.DigitsSplits) -> None:
    sizes = [len(b["image"]) for b in workload.evaluation]
    bounds = np.cumsum([0, *sizes])
    one_hot = np.eye(10, dtype=np.float32)[splits.y_test]
    perfect = [[one_hot[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
    assert workload.score(perfect).value == 1.0
    constant = [(np.zeros((n, 10), np.float32),) for n in sizes]
    assert workload.score(constant).value == pytest.approx(0.1, abs=0.02)
    with pytest.raises(ValueError):
        workload.score(perfect[:-1])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo=False is the legacy exporter on purpose
def test_onnx_export_matches_torch(workload: Workload, tmp_path) -> None:
    path = tmp_path / "digits.onnx"
    torch.onnx.export(
        workload.model, (torch.from_numpy(workload.example["image"]),), str(path),
        dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
        dynamic_axes=dict(workload.dynamic_axes),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = workload.evaluation[0]
    (onnx_logits,) = session.run(["logits"], dict(batch))
    (torch_logits,) = _torch_outputs(workload.model, [batch])[0]
    assert onnx_logits.shape == (len(batch["image"]), 10)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)


def test_cached_weights_reload_without_retraining(workload: Workload) -> None:
    path = dc.weights_path()
    assert path.exists() and path.parent.name == "digits_cnn"
    assert not list(path.parent.glob("*.tmp-*"))  # atomic write left no debris
    runs, mtime = dc.TRAINING_RUNS, path.stat().st_mtime_ns
    model, acc = dc.load_or_train_model()  # bypasses the workload lru_cache
    assert dc.TRAINING_RUNS == runs and path.stat().st_mtime_ns == mtime
    on_disk = load_file(str(path))
    for source in (model.state_dict(), workload.model.state_dict()):
        assert source.keys() == on_disk.keys()
        assert all(torch.equal(source[k], on_disk[k]) for k in on_disk)
    assert acc == float(dc.read_metadata(path)["test_accuracy"])


def test_cache_key_tracks_config(monkeypatch) -> None:
    key = dc.cache_key()
    assert key == dc.cache_key() and len(key) == 16
    monkeypatch.setitem(dc.TRAIN, "epochs", dc.TRAIN["epochs"] + 1)
    assert dc.cache_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(dc, "VERSION", dc.VERSION + "x")
    assert dc.cache_key() != key


def test_interrupted_save_leaves_no_file(monkeypatch, tmp_path) -> None:
    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(dc, "save_file", broken_save)
    target = tmp_path / "w.safetensors"
    with pytest.raises(KeyboardInterrupt):
        dc._save_atomic(dc.DigitsCNN(), target, {"test_accuracy": "0"})
    assert list(tmp_path.iterdir()) == []


def test_torch_pruning_shrinks_model(workload: Workload) -> None:
    import torch_pruning as tp

    model = copy.deepcopy(workload.model)
    example = torch.from_numpy(workload.example["image"])
    before = _param_count(model)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=[model.classifier],
    )
    pruner.step()
    assert _param_count(model) < 0.6 * before
    assert _param_count(workload.model) == before  # the shared workload model is untouched
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(workload.evaluation[0]["image"]))
    assert out.shape == (len(workload.evaluation[0]["image"]), 10) and torch.isfinite(out).all()
