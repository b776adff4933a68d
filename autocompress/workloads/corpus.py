"""Unlabeled training text for MiniLM: first paragraphs of docstrings of installed packages.

Recovery training (distillation toward the uncompressed model) needs far more text than
the calibration set. The installed Python packages hold tens of thousands of docstrings;
their source files are *parsed* (``ast``), never imported, so collecting them runs no
third-party code. Nothing is copied into the repository: the corpus is gathered at run
time and cached per set of installed distributions.

Held-out evaluation sentences and their near-duplicates are excluded: a paragraph that
shares any ``SHINGLE``-word run with an evaluation sentence (after lower-casing and
keeping only words) is dropped, so a package that quotes a stdlib docstring cannot leak
the evaluation set into training.
"""
from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import sysconfig
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from ..paths import cache_dir

SHINGLE = 6
"""Words in a run that marks a near-duplicate of an evaluation sentence."""
MIN_WORDS, MAX_WORDS = 6, 80
MAX_FILE_BYTES = 2_000_000
VERSION = 1
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = SHINGLE) -> set[tuple[str, ...]]:
    """Every run of ``n`` consecutive words (the whole text when it is shorter)."""
    w = words(text)
    if len(w) <= n:
        return {tuple(w)} if w else set()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def first_paragraph(doc: str | None) -> str | None:
    """A docstring's first paragraph, whitespace-normalised, if it reads as prose."""
    if not doc:
        return None
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    n = len(paragraph.split())
    if not (MIN_WORDS <= n <= MAX_WORDS) or not paragraph.isascii() or not paragraph[0].isalpha():
        return None
    if sum(c.isalpha() or c == " " for c in paragraph) < 0.85 * len(paragraph):
        return None     # code, tables, signatures
    return paragraph


def _docstrings(path: Path) -> Iterable[str]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc


def source_roots() -> list[Path]:
    """Where installed third-party packages live (the active environment's site-packages)."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return sorted(Path(r) for r in roots if Path(r).is_dir())


def _installed_digest(roots: Sequence[Path]) -> str:
    """Names the installed distributions, so a cached corpus follows what is installed."""
    digest = hashlib.sha256(str(VERSION).encode())
    for root in roots:
        for entry in sorted(root.glob("*.dist-info")):
            digest.update(entry.name.encode())
    return digest.hexdigest()[:16]


def collect_paragraphs(exclude: Sequence[str], limit: int = 40_000, seed: int = 0,
                       roots: Sequence[Path] | None = None, use_cache: bool = True) -> list[str]:
    """Up to ``limit`` distinct docstring paragraphs in a fixed shuffled order, none sharing
    a ``SHINGLE``-word run with any sentence of ``exclude`` (the evaluation set)."""
    roots = source_roots() if roots is None else list(roots)
    banned = set().union(*(shingles(s) for s in exclude)) if exclude else set()
    key = hashlib.sha256(json.dumps([_installed_digest(roots), [str(r) for r in roots],
                                     sorted(map(list, banned)), limit, seed]).encode())
    path = cache_dir() / "corpus" / f"docstrings-{key.hexdigest()[:16]}.json"
    if use_cache and path.is_file():
        return json.loads(path.read_text())
    found: dict[str, None] = {}
    for root in roots:
        for file in sorted(root.rglob("*.py")):
            for doc in _docstrings(file):
                paragraph = first_paragraph(doc)
                if paragraph and paragraph not in found and not (shingles(paragraph) & banned):
                    found[paragraph] = None
    ordered = sorted(found)
    random.Random(seed).shuffle(ordered)
    ordered = ordered[:limit]
    if use_cache:
        from ..files import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, ordered)
    return ordered
