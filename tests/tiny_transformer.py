"""A tiny random-weight MiniLM (same module classes, 3 layers of width 32) as a workload.

Fast stand-in for the real 22M-parameter encoder: depth pruning, sharing, FFN replacing
and embedding distillation run on it in milliseconds. Quality = mean cosine to the
uncompressed model's embeddings, as for ``minilm``.
"""
from __future__ import annotations

import numpy as np
import torch

from autocompress.workloads import Quality, Workload
from autocompress.workloads.minilm import MiniLM

CONFIG = {"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 3,
          "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 16}


def _batch(rng, rows: int, length: int = 12) -> dict[str, np.ndarray]:
    ids = rng.integers(1, CONFIG["vocab_size"], size=(rows, length)).astype(np.int64)
    mask = np.ones((rows, length), dtype=np.int64)
    lengths = rng.integers(4, length + 1, size=rows)
    for row, n in enumerate(lengths):
        mask[row, n:] = 0
        ids[row, n:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def make_tiny_transformer(layers: int = 3) -> Workload:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MiniLM({**CONFIG, "num_hidden_layers": layers}).eval()
        with torch.no_grad():   # distinct norms (fresh ones are all equal and export as one tensor)
            for module in model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.weight.add_(0.1 * torch.randn_like(module.weight))
                    module.bias.add_(0.1 * torch.randn_like(module.bias))
    rng = np.random.default_rng(0)
    calibration = [_batch(rng, 16) for _ in range(4)]
    evaluation = [_batch(rng, 16) for _ in range(2)]
    with torch.no_grad():
        teacher = np.concatenate([model(torch.from_numpy(b["input_ids"]),
                                        torch.from_numpy(b["attention_mask"])).numpy()
                                  for b in evaluation])

    def score(outputs) -> Quality:
        student = np.concatenate([o[0] for o in outputs])
        cos = np.sum(student * teacher, axis=1) / (
            np.linalg.norm(student, axis=1) * np.linalg.norm(teacher, axis=1))
        return Quality(float(cos.mean()), "teacher_cosine")

    return Workload(name="tiny-transformer", input_names=("input_ids", "attention_mask"),
                    output_names=("embedding",), example=_batch(rng, 1), calibration=calibration,
                    evaluation=evaluation, score=score, model=model, output_kind="embedding",
                    dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"},
                                  "embedding": {0: "b"}})
