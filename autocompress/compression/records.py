"""The records every technique shares: the decisions it offers and the units it skips.

At the bottom of ``compression/``: technique modules, the registry and the search all
import these, and this module imports nothing of the package.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

MIN_EMBEDDING_ROWS = 1000
"""An embedding with this many rows is a vocabulary table: it gets vocabulary pruning,
low-rank and weight-storage knobs."""


@dataclass(frozen=True)
class Knob:
    """One decision the search makes: ``unit`` gets ``name`` set to one of ``choices``.

    ``choices[0]`` is "leave as is" (the knob's identity in :mod:`.registry`, which the
    contract tests check), so a plan of first choices is the uncompressed model; for a knob
    that shrinks the artifact, ``choices[-1]`` is its strongest setting.
    """

    unit: str
    name: str
    choices: tuple
    technique: str

    @property
    def key(self) -> str:
        return f"{self.unit}:{self.name}"


@dataclass(frozen=True)
class Skip:
    """A technique not offered for a unit, and why: a missing knob is explained, not silent."""

    unit: str            # a module name, or "" for the whole model
    technique: str
    reason: str

    def message(self) -> str:
        return f"{self.technique} not offered for {self.unit or '(model)'!r}: {self.reason}"


class PlanError(ValueError):
    """A plan that does not fit the model (unknown unit, knob on an unsuitable layer)."""


def parent_and_attr(model, unit: str) -> tuple:
    """The module holding ``unit`` and its attribute name there, for replacing the unit."""
    parent_name, _, attr = unit.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


@dataclass
class TorchStage:
    """What each step of the torch stage works on: the model being compressed (a step may
    replace it), the plan (already resolved), the workload, and its example inputs."""

    model: object
    plan: object
    workload: object
    args: list


def fingerprint(array: np.ndarray) -> str:
    """A weight's content key (values and shape): how exported initializers are matched
    to the torch tensors they came from."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    return hashlib.sha1(array.tobytes()).hexdigest() + str(array.shape)
