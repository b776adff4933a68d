"""Small models the tests share: each builds a Workload in milliseconds, seeded.

- ``small_cnn_workload``: conv + two inverted-bottleneck residual blocks (BatchNorm, depthwise).
- ``conv_workload``: plain k x k convs (decomposition, depthwise-separable replacing).
- ``residual_cnn_workload``: residual blocks between downsampling stages (depth pruning,
  sharing: only shape-preserving blocks qualify).
- ``exit_cnn_workload`` / ``exit_transformer_workload``: block containers for early exit.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.workloads import Quality, Workload


def _image_workload(name: str, model: nn.Module, rows: int, side: int) -> Workload:
    """One seeded batch of 1-channel ``side`` x ``side`` images, for calibration and
    evaluation alike; quality is not scored (these models test mechanics)."""
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((rows, 1, side, side)).astype(np.float32)}
    return Workload(name, ("image",), ("logits",), {"image": batch["image"][:1]}, [batch], [batch],
                    lambda outs: Quality(0.0, "none"), model=model,
                    dynamic_axes={"image": {0: "b"}, "logits": {0: "b"}})


class BottleneckBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c),
                                  nn.ReLU6(), nn.Conv2d(4 * c, 4 * c, 3, 1, 1, groups=4 * c),
                                  nn.ReLU6(), nn.Conv2d(4 * c, c, 1))

    def forward(self, x):
        return x + self.body(x)


def small_cnn_workload() -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                          BottleneckBlock(16), BottleneckBlock(16),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    return _image_workload("cnn", model, rows=8, side=16)


def conv_workload() -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    return _image_workload("conv", model, rows=4, side=10)


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return x + self.body(x)


class Down(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


def residual_cnn_workload() -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1),
                          nn.Sequential(Residual(8), Down(8, 16), Residual(16)),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    return _image_workload("res", model, rows=8, side=12)


def seeded_batches(rng, n, make):
    return [make(rng, 16) for _ in range(n)]


def exit_images(rng, b):
    return {"image": rng.standard_normal((b, 1, 6, 6)).astype(np.float32)}


def exit_tokens(rng, b):
    ids = rng.integers(1, 50, (b, 7)).astype(np.int64)
    mask = np.ones((b, 7), np.int64)
    mask[: b // 2, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


class ExitBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


class ExitCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[ExitBlock(8) for _ in range(4)])
        self.fc = nn.Linear(8, 5)

    def forward(self, image):
        return self.fc(self.blocks(torch.relu(self.stem(image))).mean(dim=(2, 3)))


class ExitLayer(nn.Module):
    """A post-norm transformer layer (single head) with a key mask."""

    def __init__(self, d: int):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x, bias):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(1, 2) / 4.0 + bias, dim=-1)
        x = self.norm1(x + self.o(att @ v))
        return self.norm2(x + self.ff(x))


class ExitTransformer(nn.Module):
    def __init__(self, embedding: bool):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.layers = nn.ModuleList(ExitLayer(16) for _ in range(4))
        self.head = nn.Linear(16, 16 if embedding else 4)
        self.embedding = embedding

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.to(torch.float32)
        bias = (1.0 - mask)[:, None, :] * -1e4
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, bias)
        w = mask.unsqueeze(-1)
        pooled = self.head((x * w).sum(1) / w.sum(1))
        return F.normalize(pooled, dim=-1) if self.embedding else pooled


def exit_cnn_workload():
    torch.manual_seed(0)
    make = exit_images
    rng = np.random.default_rng(0)
    return Workload("tiny-cnn", ("image",), ("logits",), make(rng, 1), seeded_batches(rng, 3, make),
                    seeded_batches(rng, 2, make), lambda outs: Quality(0.0, "none"),
                    model=ExitCNN().eval(), dynamic_axes={"image": {0: "b"}, "logits": {0: "b"}})


def exit_transformer_workload(embedding: bool):
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    axes = {"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "out": {0: "b"}}
    return Workload("tiny-tf", ("input_ids", "attention_mask"), ("out",), exit_tokens(rng, 1),
                    seeded_batches(rng, 3, exit_tokens), seeded_batches(rng, 2, exit_tokens),
                    lambda outs: Quality(0.0, "none"), model=ExitTransformer(embedding).eval(),
                    dynamic_axes=axes, output_kind="embedding" if embedding else "logits")
