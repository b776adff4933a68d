"""Vocabulary pruning: keep only the embedding rows a calibration corpus uses.

The table shrinks to the kept rows; a small int32 remap table (old id -> new row)
sits in front of it, and ids never seen in the corpus map to the workload's
fallback token (e.g. ``[UNK]``). Exported to ONNX as Gather(remap) -> Gather(table).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..plan import VOCAB
from ..records import MIN_EMBEDDING_ROWS, Knob, PlanError, parent_and_attr
from ..tracing import trace_calls

VOCAB_CHOICES = ("full", "corpus")


class VocabPruned(nn.Module):
    """An embedding over the kept rows, addressed through ``remap``."""

    def __init__(self, remap: torch.Tensor, embed: nn.Module):
        super().__init__()
        self.register_buffer("remap", remap)
        self.embed = embed

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(self.remap[ids])


def embedding_inputs(model: nn.Module, example_args, input_names) -> dict[str, str]:
    """Embedding module name -> model input name, for embeddings fed straight from an input."""
    found: dict[str, str] = {}

    def on_call(name, module, inputs):
        for arg, input_name in zip(example_args, input_names):
            if inputs[0] is arg:
                found[name] = input_name

    trace_calls(model, example_args, (nn.Embedding,), on_call)
    return found


@torch.no_grad()
def prune_vocab(embedding: nn.Embedding, corpus_ids: Iterable[np.ndarray], fallback_id: int) -> VocabPruned:
    """Keep the rows of ids in ``corpus_ids`` (plus ``fallback_id``), in id order."""
    seen = np.unique(np.concatenate([np.asarray(ids).ravel() for ids in corpus_ids] + [[fallback_id]]))
    seen = seen[(seen >= 0) & (seen < embedding.num_embeddings)]
    keep = torch.from_numpy(seen.astype(np.int64))
    table = nn.Embedding(len(keep), embedding.embedding_dim)
    table.weight.copy_(embedding.weight[keep])
    fallback_row = int(np.searchsorted(seen, fallback_id))
    remap = torch.full((embedding.num_embeddings,), fallback_row, dtype=torch.int32)
    remap[keep] = torch.arange(len(keep), dtype=torch.int32)
    return VocabPruned(remap, table)


def vocab_knobs(model: nn.Module, example_args, input_names=()):
    """(knobs, skips): a choice per large embedding fed straight from a model input."""
    fed = embedding_inputs(model, example_args, input_names) if input_names else {}
    return [Knob(name, VOCAB, VOCAB_CHOICES, "vocabulary pruning")
            for name, module in model.named_modules()
            if isinstance(module, nn.Embedding) and module.num_embeddings >= MIN_EMBEDDING_ROWS
            and name in fed], []


def apply(stage) -> None:
    """Each chosen table keeps the rows the workload's vocabulary corpus uses."""
    model, workload = stage.model, stage.workload
    units = [u for u, k in sorted(stage.plan.units.items()) if k.get(VOCAB) == "corpus"]
    if not units:
        return
    feeds = embedding_inputs(model, stage.args, workload.input_names)
    fallback = workload.vocab_fallback_id if workload.vocab_fallback_id is not None else 0
    for unit in units:
        if unit not in feeds:
            raise PlanError(f"vocabulary pruning needs an embedding fed by a model input; "
                            f"{unit!r} is not")
        corpus = [batch[feeds[unit]] for batch in workload.vocabulary_batches()]
        parent, attr = parent_and_attr(model, unit)
        setattr(parent, attr, prune_vocab(getattr(parent, attr), corpus, fallback))
