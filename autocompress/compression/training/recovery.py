"""Recovery training: the compressed model relearns the uncompressed model's outputs.

One loop serves the short distillation inside a trial (:mod:`.distill`), QAT
(:mod:`.qat`, under fake quantization) and the long recovery of the finalize stage:
teacher = the workload's uncompressed model, data = the workload's training batches
(calibration when it has none; ``Workload.training_source`` says which), cut into
``batch_rows``-row pieces taken in a fixed cyclic order. The teacher is frozen, so its
output for a piece is computed once per process and kept (MiniLM: 1.5 kB per row, about
60 MB for the whole training set), shared by the finalize stage's probes and final run.
Loss: :func:`.distill.loss`.

Deterministic for a given plan, config and thread count: seeded, deterministic kernels,
fixed batch order and a fixed thread count (recorded with the result, since reductions
split by thread).
"""
from __future__ import annotations

import os
import weakref
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from . import block_targets

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("cosine", "one-cycle")


@dataclass(frozen=True)
class RecoveryConfig:
    """How long and how a student trains toward its teacher."""

    steps: int
    lr: float
    batch_rows: int = 32
    optimizer: str = "adamw"         # adamw: decoupled weight decay on matrices only
    schedule: str = "one-cycle"      # one-cycle: warm-up then cosine decay (long runs)
    weight_decay: float = 0.01
    train_embeddings: bool = True    # long runs: tables are factorised or pruned, train them
    threads: int = 0                 # 0: every core of this machine
    seed: int = 0
    eps: float = 1e-5                # see distill.ADAM_EPS
    block_weight: float = 0.0        # > 0: also match the repeated blocks' outputs
                                     # (:mod:`.block_targets`); the teacher then runs per step

    def resolved_threads(self) -> int:
        return self.threads or max(1, len(os.sched_getaffinity(0)))

    def to_dict(self) -> dict:
        return {**asdict(self), "threads": self.resolved_threads()}


def training_pieces(workload, batch_rows: int) -> list[tuple[torch.Tensor, ...]]:
    """The recovery batches cut into ``batch_rows``-row pieces, in order."""
    out = []
    for batch in workload.recovery_batches():
        args = [torch.from_numpy(batch[name]) for name in workload.input_names]
        for start in range(0, len(args[0]), batch_rows):
            out.append(tuple(a[start:start + batch_rows] for a in args))
    return out


def train(student: nn.Module, workload, config: RecoveryConfig,
          progress: Callable[[int, float], None] | None = None,
          teacher: nn.Module | None = None) -> list[float]:
    """Train ``student`` toward ``teacher`` (default: the workload's model) for
    ``config.steps`` steps; the loss per step. ``progress(step, loss)`` after each step."""
    from . import distill

    if config.steps <= 0:
        return []
    params = trainable(student, config.train_embeddings)
    if not params:
        return []
    teacher = workload.model if teacher is None else teacher
    pieces = training_pieces(workload, config.batch_rows)
    kind = distill.output_kind(workload)
    losses = []
    with distill.seeded(config.seed, config.resolved_threads()), torch.enable_grad():
        optimizer = _optimizer(params, config)
        schedule = _schedule(optimizer, config)
        student.eval()      # no dropout, no BatchNorm statistics drift: a function being fitted
        blocks = (block_targets.matched_blocks(teacher, student, pieces[0])
                  if config.block_weight > 0 else [])
        targets = _teacher_outputs(teacher, workload, config)
        for step, (index, args) in zip(range(config.steps), _cycle(list(enumerate(pieces)))):
            if blocks:
                value = _with_blocks(student, teacher, blocks, args, kind, config.block_weight)
            else:
                target = targets.get(index)
                if target is None:
                    with torch.no_grad():
                        target = targets[index] = distill._first(teacher(*args)).detach()
                value = distill.loss(kind, distill._first(student(*args)), target)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            losses.append(value.item())
            if progress is not None:
                progress(step + 1, losses[-1])
    for p in student.parameters():
        p.grad = None
    return losses


def _with_blocks(student, teacher, blocks, args, kind: str, weight: float) -> torch.Tensor:
    """The output loss plus ``weight`` x the blocks' loss; the teacher runs on ``args``
    (its hidden states at every block are too large to keep for a whole training set)."""
    from . import distill

    with torch.no_grad(), block_targets.capture(teacher, blocks) as want:
        target = distill._first(teacher(*args))
    with block_targets.capture(student, blocks) as got:
        output = distill._first(student(*args))
    return distill.loss(kind, output, target) + weight * block_targets.block_loss(got, want)


_TEACHER_OUTPUTS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _teacher_outputs(teacher: nn.Module, workload, config: RecoveryConfig) -> dict:
    """Piece index -> the teacher's output, kept for this teacher, data and thread count
    (reductions split by thread: another count is another computation)."""
    batches = workload.recovery_batches()
    key = (id(batches), len(batches), config.batch_rows, config.resolved_threads())
    return _TEACHER_OUTPUTS.setdefault(teacher, {}).setdefault(key, {})


def _cycle(pieces: Sequence) -> Iterator:
    while True:
        yield from pieces


def _optimizer(params: list[nn.Parameter], config: RecoveryConfig) -> torch.optim.Optimizer:
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=config.eps)
    decay = [p for p in params if p.ndim >= 2 and not getattr(p, "_is_embedding", False)]
    rest = [p for p in params if not (p.ndim >= 2 and not getattr(p, "_is_embedding", False))]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, eps=config.eps)


def _schedule(optimizer, config: RecoveryConfig):
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps,
        pct_start=min(0.3, max(0.05, 100 / config.steps)), anneal_strategy="cos",
        cycle_momentum=False)


def trainable(model: nn.Module, embeddings: bool = False) -> list[nn.Parameter]:
    """Floating parameters to train, each once (shared blocks share parameters). Embedding
    tables train only when asked (few rows see gradients on a small corpus)."""
    tables = {id(p) for m in model.modules() if isinstance(m, nn.Embedding)
              for p in m.parameters()}      # parameters(): a fake-quantized table's original too
    seen, params = set(), []
    for p in model.parameters():
        if id(p) in seen or not p.dtype.is_floating_point:
            continue
        seen.add(id(p))
        if id(p) in tables:
            p._is_embedding = True
            if not embeddings:
                p.requires_grad_(False)
                continue
        p.requires_grad_(True)
        params.append(p)
    return params


