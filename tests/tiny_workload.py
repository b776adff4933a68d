"""A small user workload in the ``module:function`` form: an MLP on 8x8 digits.

Trains in about a second; serves the CLI contract test and fast search tests.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from autocompress.workloads import Quality, Workload


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(128, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


@lru_cache(maxsize=1)
def _trained():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval(), x, y


def make_workload() -> Workload:
    model, x, y = _trained()
    test_x, test_y = x[1400:], y[1400:]
    batches = [{"x": test_x[i:i + 100]} for i in range(0, len(test_x), 100)]

    def score(outputs) -> Quality:
        pred = np.concatenate([o[0] for o in outputs]).argmax(axis=1)
        return Quality(float((pred == test_y).mean()), "accuracy", {"n": len(test_y)})

    return Workload(name="tiny-mlp", input_names=("x",), output_names=("logits",),
                    example={"x": x[:1]}, calibration=[{"x": x[1200:1300]}],
                    evaluation=batches, score=score, model=model,
                    dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})


N_FC1 = 64 * 128   # fc1 exported as a MatMul weight [K=64, N=128]


def onnx_outputs(path, workload) -> np.ndarray:
    """ONNX Runtime's outputs of an artifact on the evaluation batches, stacked."""
    from autocompress.backends.ort_runner import make_session, run_batches

    return np.concatenate([o[0] for o in run_batches(make_session(path), workload.evaluation)])


def torch_outputs(model, workload) -> np.ndarray:
    """The torch model's outputs on the same batches, for comparing with an artifact."""
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(b["x"])).numpy() for b in workload.evaluation])
