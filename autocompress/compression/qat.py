"""Quantization-aware training (QAT): a short distillation fine-tune under fake quantization.

For one plan: the torch stage (pruning, low-rank...) runs as usual, then every weight the
plan quantizes is fake-quantized with exactly the numbers the artifact will hold
(:mod:`.fake_quant`, straight-through estimator), and the model is fine-tuned to match the
uncompressed teacher's outputs on the training batches (:mod:`.recovery`; loss of :mod:`.distill`:
KL on softened logits, squared error + (1 - cosine) on embeddings). The trained float
weights then go through the normal export + quantization path, so a QAT artifact has
exactly the format of a PTQ one.
Deterministic for a given plan, config and thread count (:mod:`.recovery`). Embedding
tables stay frozen unless the config trains them (long runs, e.g. the finalize stage).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .training import distill, recovery
from .apply import Artifact, apply_plan, compress_torch
from .initializers import match_initializers
from .weights.fake_quant import FakeQuant, find_targets, weight_plans
from .plan import Plan
from .weights.quantize import to_opset


LEARNING_RATE = {"logits": 3e-4, "embedding": 5e-5}
"""Learning rates of a short QAT pass (the model is only nudged); long recovery runs (the
finalize stage) pass their own."""


@dataclass(frozen=True)
class QATConfig:
    """Fine-tuning budget: ``steps`` optimizer steps over the workload's training batches
    (calibration when it has none), in order; see :class:`.recovery.RecoveryConfig`."""

    steps: int = 60
    lr: float | None = None      # None: LEARNING_RATE for the workload's output kind
    seed: int = 0
    batch_rows: int = 32
    optimizer: str = "adamw"
    schedule: str = "cosine"     # "one-cycle" for long runs
    threads: int = 0             # 0: every core
    train_embeddings: bool = False
    block_weight: float = 0.0    # > 0: blocks match the teacher's too (long runs)

    def to_dict(self) -> dict:
        return {**asdict(self), "threads": self.recovery("logits").resolved_threads()}

    def recovery(self, kind: str) -> recovery.RecoveryConfig:
        return recovery.RecoveryConfig(
            steps=self.steps, lr=self.lr or LEARNING_RATE.get(kind, 5e-5),
            batch_rows=self.batch_rows, optimizer=self.optimizer, schedule=self.schedule,
            train_embeddings=self.train_embeddings, threads=self.threads, seed=self.seed,
            block_weight=self.block_weight)


def quantization_aware(plan: Plan, workload) -> tuple[nn.Module, FakeQuant]:
    """The plan's compressed torch model with every weight the plan stores in a low-bit
    format fake-quantized to exactly the artifact's numbers."""
    from ..backends.onnx_export import export_onnx

    if workload.model is None:
        raise ValueError("QAT needs a torch model; ONNX-file workloads have no weights to train")
    student = compress_torch(plan, workload)
    proto = to_opset(export_onnx(student, workload))
    weights, calibration = weight_plans(plan, match_initializers(proto, student))
    return student, FakeQuant(student, find_targets(student, proto, weights, calibration))


def finetune(plan: Plan, workload, config: QATConfig = QATConfig(),
             report: dict | None = None, progress=None) -> nn.Module:
    """The plan's compressed torch model, fine-tuned under the plan's fake quantization
    (plain distillation where the plan quantizes nothing)."""
    student, fake = quantization_aware(plan, workload)
    report = {} if report is None else report
    report.update(quantized_weights=len(fake.targets), via_oracle=list(fake.via_oracle), losses=[])
    if config.steps <= 0:
        return fake.remove().eval()
    kind = distill.output_kind(workload)
    report["losses"] = recovery.train(student, workload, config.recovery(kind), progress)
    report["recovery"] = config.recovery(kind).to_dict()
    return fake.remove().eval()


def apply_qat(plan: Plan, workload, out_path: Path, config: QATConfig = QATConfig(),
              timings: dict | None = None, report: dict | None = None,
              progress=None) -> Artifact:
    """Fine-tune (QAT) then export and quantize through the normal path."""
    timings = {} if timings is None else timings
    start = time.perf_counter()
    model = finetune(plan, workload, config, report, progress)
    timings["qat"] = time.perf_counter() - start
    return apply_plan(plan, workload, out_path, timings, model=model)
