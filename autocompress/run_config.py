"""What one search run is asked to do (``SearchConfig``, stored as config.json) and the
error a run folder that cannot be used raises. Below api and workers, which both read it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from .search.objectives import Budget


class RunError(ValueError):
    """A run folder that cannot be created or resumed; the message says why."""


@dataclass
class SearchConfig:
    model: str = "minilm"
    target: str = "jetson-nano"
    profile: str | None = None          # a user profile file replaces the named target
    budget: Budget = field(default_factory=Budget)
    trials: int = 20
    timeout_s: float | None = None
    trial_timeout_s: float | None = 600.0
    seed: int = 0
    out: str | None = None
    storage: str | None = None
    command: Sequence[str] = ()
    extra_targets: Sequence[str] = ()   # also predict these profiles per trial (plan command)
    rpc_tracker: str | None = None      # HOST:PORT of a TVM RPC tracker: measure on the board
    rpc_key: str | None = None
    qat_steps: int = 0                  # > 0: QAT finalist pass over the front (compression/qat.py)
    workers: int = 1                    # local processes on the study (workers.py)
    cost: str = "auto"                  # measured | predicted | auto (cost_models/active.py)
    sensitivity: bool = True            # per-layer analysis shapes and seeds the space
    multi_fidelity: bool = True         # proxy (scaled training) first, full if promising
    sampler: str = "tpe"                # tpe (ours) | random | nsga2 (benchmark baselines)
    anchors: bool = True                # enqueue the anchor plans (search/space.py)
    study: str = "autocompress"         # study name: several searches can share one storage
    finalize_s: float | None = None     # time box of the finalize stage (finalize.py); 0: off;
                                        # None: finalize.DEFAULT_S with a size/latency/energy budget
    budget_seeds: bool = True           # integer-program seeds and repair (budget_plans.py)
    data: str | None = None             # ONNX files: .npz (or folder) of real inputs
    input_shapes: Sequence[str] = ()    # ONNX files: NAME=1x3x224x224 for free dimensions
    metric: str | None = None           # ONNX files: cosine | top1 | module:function

    def to_dict(self) -> dict:
        data = asdict(self)
        data["budget"] = self.budget.to_dict()
        data["command"] = list(self.command)
        data["extra_targets"] = list(self.extra_targets)
        data["input_shapes"] = list(self.input_shapes)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        if not isinstance(data, dict):
            raise RunError(f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise RunError(f"unknown key(s) {', '.join(map(repr, unknown))} (written by another "
                           "version of autocompress?)")
        data = dict(data)
        try:
            data["budget"] = Budget.from_dict(data.get("budget") or {})
        except (TypeError, ValueError, AttributeError) as err:
            raise RunError(f"budget is not valid: {err}") from None
        return cls(**data)


def read_config(run_dir: Path) -> SearchConfig:
    """A run folder's config.json, or one line saying why it cannot be used."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunError(f"cannot resume {run_dir}: no config.json there (not a run folder)")
    try:
        return SearchConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"cannot resume {run_dir}: config.json is not valid JSON ({err})") from None
    except RunError as err:
        raise RunError(f"cannot resume {run_dir}: config.json: {err}") from None
