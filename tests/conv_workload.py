"""A plain k x k conv net on 8x8 digits, in the ``module:function`` form.

digits-cnn's only full convolution is its 1-channel stem, so conv decomposition and
depthwise-separable replacing have nothing worth doing there; this net has three
3x3 convs with real channel counts, trains in a few seconds, and serves the tests and
``benchmarks/torch_techniques.py --model tests.conv_workload:make_workload``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from autocompress.workloads import Quality, Workload


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten(1)
        self.head = nn.Linear(256, 10)

    def forward(self, image):
        return self.head(self.flatten(self.pool(self.features(image))))


@lru_cache(maxsize=1)
def _trained():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ConvNet()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])
        for epoch in range(12):
            order = torch.randperm(len(xt))
            for start in range(0, len(xt), 100):
                idx = order[start:start + 100]
                opt.zero_grad()
                nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
    return model.eval(), x, y


def make_workload() -> Workload:
    model, x, y = _trained()
    test_x, test_y = x[1400:], y[1400:]

    def score(outputs) -> Quality:
        pred = np.concatenate([o[0] for o in outputs]).argmax(axis=1)
        return Quality(float((pred == test_y).mean()), "accuracy", {"n": len(test_y)})

    return Workload(name="conv-digits", input_names=("image",), output_names=("logits",),
                    example={"image": x[:1]},
                    calibration=[{"image": x[i:i + 50]} for i in range(1200, 1400, 50)],
                    evaluation=[{"image": test_x[i:i + 100]} for i in range(0, len(test_x), 100)],
                    score=score, model=model, output_kind="logits",
                    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
