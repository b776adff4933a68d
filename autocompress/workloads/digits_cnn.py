"""Built-in workload ``digits-cnn``: a small MobileNetV2-style CNN on scikit-learn's digits.

The data set ships inside scikit-learn (1797 8x8 images, no download), so this
workload works offline and trains on first use in well under a minute on two
CPU cores. The trained weights are cached outside the repository, keyed by a
hash of the architecture and training recipe, so changing either retrains.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from autocompress.paths import cache_dir
from autocompress.workloads.base import Quality, Workload

NAME = "digits-cnn"
VERSION = "1"
"""Bump to force a retrain when the code changes in a way the configs below do not capture."""

IMAGE_SIZE = 32
NUM_CLASSES = 10
MEAN, STD = 0.305, 0.324
"""Fixed normalisation: mean/std of all upscaled digit pixels, frozen so it never depends on the split."""

ARCH = {
    "stem": 16,
    "stem_stride": 2,  # 32x32 -> 16x16 at once: the source is 8x8, so full-res blocks only cost time
    # (expansion, out_channels, stride) per inverted-residual block
    "blocks": [(4, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 48, 1)],
    "head": 128,
}
TRAIN = {
    "seed": 0,
    "split_seed": 0,
    "test_fraction": 0.25,
    "calibration_fraction": 0.10,
    "epochs": 12,
    "batch_size": 64,
    "lr": 4e-3,
    "weight_decay": 1e-4,
    "label_smoothing": 0.05,
    "max_shift": 2,
}

TRAINING_RUNS = 0
"""How many times this process has trained the model; lets tests prove the cache was used."""


# --------------------------------------------------------------------------- model


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear project (+ skip)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.use_residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class DigitsCNN(nn.Module):
    """image [B,1,32,32] -> logits [B,10].

    Built from plain Conv2d/BatchNorm2d/ReLU6/Linear modules only, and the
    forward only calls modules, so Torch-Pruning can trace it and compression
    can swap any Conv2d/Linear for a factorised ``nn.Sequential``.
    """

    def __init__(self, arch: dict = ARCH) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(1, arch["stem"], 3, stride=arch["stem_stride"])
        blocks, c = [], arch["stem"]
        for expansion, c_out, stride in arch["blocks"]:
            blocks.append(InvertedResidual(c, c_out, stride, expansion))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn_relu(c, arch["head"], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(arch["head"], NUM_CLASSES)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(image)))
        return self.classifier(self.flatten(self.pool(x)))


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DigitsSplits:
    """Normalised images [N,1,32,32] float32, labels int64, and the source indices of each split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_calib: np.ndarray
    y_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    idx_train: np.ndarray
    idx_calib: np.ndarray
    idx_test: np.ndarray


def _preprocess(pixels: np.ndarray) -> np.ndarray:
    """Raw 0..16 pixels [N,64] -> normalised float32 [N,1,32,32] (bilinear upscale)."""
    x = torch.from_numpy(pixels.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return ((x - MEAN) / STD).numpy()


def _split_indices(labels: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded train/calibration/test index split; asserts the three are disjoint."""
    seed = cfg["split_seed"]
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=cfg["test_fraction"], stratify=labels, random_state=seed)
    calib_share = cfg["calibration_fraction"] / (1.0 - cfg["test_fraction"])
    train, calib = train_test_split(rest, test_size=calib_share, stratify=labels[rest], random_state=seed)
    train, calib, test = np.sort(train), np.sort(calib), np.sort(test)
    assert not (set(train) & set(calib) or set(train) & set(test) or set(calib) & set(test)), "splits overlap"
    assert len(train) + len(calib) + len(test) == len(labels)
    return train, calib, test


@functools.lru_cache(maxsize=1)
def load_splits() -> DigitsSplits:
    """The preprocessed digits, split deterministically (cached: the same arrays every call)."""
    digits = load_digits()
    x = _preprocess(digits.data)
    y = digits.target.astype(np.int64)
    train, calib, test = _split_indices(y, TRAIN)
    return DigitsSplits(
        x[train], y[train], x[calib], y[calib], x[test], y[test],
        idx_train=train, idx_calib=calib, idx_test=test,
    )


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` px in x and y, filling with background."""
    n, _, h, w = x.shape
    background = -MEAN / STD
    padded = F.pad(x, (max_shift,) * 4, value=background)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


# --------------------------------------------------------------------------- training


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def train_model(splits: DigitsSplits, cfg: dict = TRAIN) -> nn.Module:
    """Train a fresh DigitsCNN: AdamW + one-cycle LR, ±2 px shifts; deterministic given the seed."""
    global TRAINING_RUNS
    TRAINING_RUNS += 1
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = DigitsCNN()
    x, y = torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train)
    steps_per_epoch = -(-len(x) // cfg["batch_size"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["lr"], epochs=cfg["epochs"], steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    for _ in range(cfg["epochs"]):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg["batch_size"]):
            idx = order[start:start + cfg["batch_size"]]
            xb = _random_shift(x[idx], cfg["max_shift"], gen)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


# --------------------------------------------------------------------------- cache


def cache_key() -> str:
    """Short hash of architecture + training recipe + normalisation + VERSION."""
    spec = {"arch": ARCH, "train": TRAIN, "mean": MEAN, "std": STD, "size": IMAGE_SIZE, "version": VERSION}
    blob = json.dumps(spec, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_path() -> Path:
    return cache_dir() / "digits_cnn" / f"{cache_key()}.safetensors"


def _save_atomic(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Write to a temp file then os.replace, so a killed run never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        save_file(state, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_or_train_model() -> tuple[nn.Module, float]:
    """The trained model (eval mode) and its test accuracy, from the cache or trained now."""
    splits = load_splits()
    path = weights_path()
    if path.exists():
        model = DigitsCNN()
        model.load_state_dict(load_file(str(path)))
        return model.eval(), float(read_metadata(path)["test_accuracy"])
    model = train_model(splits)
    acc = _accuracy(model, splits.x_test, splits.y_test)
    _save_atomic(model, path, {"test_accuracy": f"{acc:.6f}", "key": cache_key(), "workload": NAME})
    return model, acc


# --------------------------------------------------------------------------- workload


def _batches(x: np.ndarray, batch_size: int) -> list[dict[str, np.ndarray]]:
    return [{"image": np.ascontiguousarray(x[i:i + batch_size])} for i in range(0, len(x), batch_size)]


def _make_scorer(labels: np.ndarray):
    """Accuracy over all evaluation batches; labels are captured here, never passed to the search."""

    def score(outputs) -> Quality:
        logits = np.concatenate([np.asarray(out[0]) for out in outputs], axis=0)
        if logits.shape[0] != len(labels):
            raise ValueError(f"{NAME}: got {logits.shape[0]} predictions for {len(labels)} test images")
        acc = float((logits.argmax(axis=1) == labels).mean())
        return Quality(value=acc, metric="accuracy", details={"accuracy": acc, "n": float(len(labels))})

    return score


@functools.lru_cache(maxsize=None)
def make_digits_workload(batch_size: int = 64) -> Workload:
    """The ``digits-cnn`` workload (cached per process: copy the model before mutating it)."""
    splits = load_splits()
    model, acc = load_or_train_model()
    return Workload(
        name=NAME,
        input_names=("image",),
        output_names=("logits",),
        example={"image": np.ascontiguousarray(splits.x_test[:1])},
        calibration=_batches(splits.x_calib, batch_size),
        evaluation=_batches(splits.x_test, batch_size),
        training=_batches(splits.x_train, 32),
        training_source=f"the {len(splits.y_train)}-image training split (labels unused)",
        score=_make_scorer(splits.y_test.copy()),
        model=model,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        output_kind="logits",
        description=(
            f"MobileNetV2-style CNN on scikit-learn digits (8x8 upscaled to 32x32); "
            f"float test accuracy {acc:.4f} on {len(splits.y_test)} images"
        ),
    )
