"""Block-wise recovery targets: which blocks are held to the teacher's, and that holding
them brings the student's hidden states closer than the final output alone does."""
import copy
import dataclasses

import torch

from autocompress.compression.blocks import Dropped
from autocompress.compression.training import block_targets, recovery
from tests.test_distill import random_mlp_workload
from tests.tiny_transformer import make_tiny_transformer


def _example(workload):
    return tuple(torch.from_numpy(workload.example[n]) for n in workload.input_names)


def _damaged(workload) -> torch.nn.Module:
    """The teacher with every block's FFN weights perturbed (shapes kept)."""
    student = copy.deepcopy(workload.model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        for layer in student.layers:
            for p in layer.ffn.parameters():
                p.add_(0.5 * p.std() * torch.randn_like(p))
    return student


def test_dropped_and_shared_blocks_are_not_held_to_the_teacher():
    w = make_tiny_transformer(layers=4)
    student = copy.deepcopy(w.model)
    student.layers[1] = Dropped()
    student.layers[3] = student.layers[2]        # shared: one module under two names
    assert block_targets.matched_blocks(w.model, student, _example(w)) == ["layers.0"]
    assert block_targets.matched_blocks(w.model, copy.deepcopy(w.model), _example(w)) == [
        "layers.0", "layers.1", "layers.2", "layers.3"]


def test_a_model_without_repeated_blocks_trains_exactly_as_without_the_term():
    w = random_mlp_workload()
    assert block_targets.matched_blocks(w.model, copy.deepcopy(w.model), _example(w)) == []
    config = recovery.RecoveryConfig(steps=5, lr=1e-3, batch_rows=16, threads=1)
    plain = recovery.train(_perturbed(w.model), w, config)
    held = recovery.train(_perturbed(w.model), w, dataclasses.replace(config, block_weight=1.0))
    assert held == plain


def _perturbed(model):
    student = copy.deepcopy(model)
    with torch.no_grad():
        student.fc1.weight.mul_(0.5)
    return student


def _block_error(teacher, student, w) -> float:
    names = ["layers.0", "layers.1", "layers.2"]
    errors = []
    with torch.no_grad():
        for batch in w.evaluation:
            args = tuple(torch.from_numpy(batch[n]) for n in w.input_names)
            with block_targets.capture(teacher, names) as want, \
                    block_targets.capture(student, names) as got:
                teacher(*args)
                student(*args)
            errors.append(float(block_targets.block_loss(got, want)))
    return sum(errors) / len(errors)


def test_holding_blocks_brings_hidden_states_closer_than_the_output_alone():
    w = make_tiny_transformer()
    config = recovery.RecoveryConfig(steps=40, lr=3e-3, batch_rows=16, threads=1)
    before = _block_error(w.model, _damaged(w), w)
    results = {}
    for weight in (0.0, 1.0):
        student = _damaged(w)
        losses = recovery.train(student, w, dataclasses.replace(config, block_weight=weight))
        results[weight] = (_block_error(w.model, student, w), losses)
    assert results[1.0][0] < 0.5 * min(results[0.0][0], before)
    again = _damaged(w)
    assert recovery.train(again, w, dataclasses.replace(config, block_weight=1.0)) == \
        results[1.0][1]   # deterministic
