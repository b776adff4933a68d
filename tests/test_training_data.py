"""Recovery training data stays apart from calibration and evaluation."""
import json as json_module
from pathlib import Path

import numpy as np

from autocompress.workloads import corpus
from autocompress.workloads.base import LazyBatches
from tests.tiny_workload import make_workload


def test_docstring_paragraphs_exclude_held_out_sentences_and_near_duplicates(tmp_path):
    held_out = "Return the number of items in the queue when it is not empty."
    (tmp_path / "mod.py").write_text(
        '"""Utilities for reading configuration files from several places at once."""\n'
        f'def f():\n    """{held_out}"""\n'
        'def g():\n    """Note: return the number of items in the queue, approximately."""\n'
        'def h():\n    """Build a frobnicator from the given widget and its many settings."""\n')
    kept = corpus.collect_paragraphs([held_out], roots=[tmp_path], use_cache=False)
    assert "Build a frobnicator from the given widget and its many settings." in kept
    assert held_out not in kept
    assert not any("number of items in the queue" in p for p in kept)   # near-duplicate too
    assert len(corpus.collect_paragraphs([], roots=[tmp_path], use_cache=False)) == 4


def test_real_docstrings_share_no_six_word_run_with_the_minilm_held_out_sets():
    from autocompress.workloads.minilm import split_sentences

    calibration, evaluation = split_sentences(640, 256)
    root = Path(json_module.__file__).parent        # real source files, parsed not imported
    unfiltered = corpus.collect_paragraphs([], roots=[root], use_cache=False)
    kept = corpus.collect_paragraphs(calibration + evaluation, roots=[root], use_cache=False)
    banned = set().union(*(corpus.shingles(s) for s in calibration + evaluation))
    assert kept and all(not (corpus.shingles(p) & banned) for p in kept)
    assert len(kept) < len(unfiltered)     # the json docs hold held-out sentences: some left


def test_digits_training_split_is_apart_from_evaluation_and_calibration():
    from autocompress.workloads.digits_cnn import make_digits_workload

    w = make_digits_workload()
    rows = lambda batches: {r.tobytes() for b in batches for r in b["image"]}
    train = rows(w.training)
    assert len(train) > 1000
    assert not train & rows(w.evaluation) and not train & rows(w.calibration)
    assert "training split" in w.training_source


def test_without_a_training_set_recovery_uses_calibration_and_says_so():
    w = make_workload()
    assert w.recovery_batches() is w.calibration
    assert "calibration" in w.training_source


def test_lazy_batches_build_once_on_first_use():
    calls = []
    lazy = LazyBatches(lambda: calls.append(1) or [{"x": np.zeros(2)}])
    assert bool(lazy) and not calls
    assert len(lazy) == 1 and lazy[0]["x"].shape == (2,) and len(lazy) == 1
    assert calls == [1]
