"""The GISP engine: load a model, prune it along a trajectory, materialise checkpoints.

Names are resolved lazily so that ``import core.engine.<light module>`` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "core.engine.loading",
    "LoadedModel": "core.engine.loading",
    "prune": "core.engine.pruner",
    "materialize": "core.engine.materialize",
    "pruned_model": "core.engine.materialize",
    "uniform_state": "core.engine.materialize",
    "Trajectory": "core.engine.trajectory",
    "StepRecord": "core.engine.trajectory",
    "PruningState": "core.engine.structures",
    "EngineError": "core.errors",
    "UserInputError": "core.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'core.engine' has no attribute {name!r}")
