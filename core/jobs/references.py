"""Resolving a job's model reference on the server; nothing outside GISP_MODELS_DIR is ever reachable."""

from __future__ import annotations

import json
from pathlib import Path

from core.families import FAMILIES, PRUNED_MODEL_TYPE, Family, declared_model_type, family_named
from core.pruning_spec import Objective


def resolve_local_model(models_dir: Path, name: str) -> Path | None:
    """``local/<name>`` as a folder or ``<name>.gguf`` inside models_dir, or None when absent.

    ``name`` was already restricted to one plain path segment (no separators, no '..') by the request schema,
    so the candidate lies directly inside models_dir; :func:`stays_inside` makes sure no symlink leads out.
    """
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        return None
    root = Path(models_dir)
    for candidate in (root / name, root / f"{name}.gguf"):
        if candidate.exists():
            return candidate if stays_inside(root, candidate) else None
    return None


def stays_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` and, for a folder, everything in it, resolve to real paths inside ``root``.

    A symlink in the models folder may point to another entry of it (an alias), never out of it: otherwise a
    link to any folder holding a config.json would offer the whole filesystem as models.
    """
    real_root = Path(root).resolve()
    real = path.resolve()
    if not real.is_relative_to(real_root):
        return False
    if real.is_dir():
        return all(entry.resolve().is_relative_to(real_root) for entry in real.rglob("*"))
    return True


def local_model_family(path: Path) -> Family | None:
    """The family of a local model folder, from its config.json (no weights read); None when unknown here.

    A family this table does not know is left to the worker, whose loader refuses it with its own message;
    an already pruned checkpoint is refused here (``UnsupportedModelError``): prune its base model instead.
    """
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        model_type = declared_model_type(json.loads(config.read_text()))
    except (OSError, ValueError, AttributeError):
        return None
    if model_type == PRUNED_MODEL_TYPE:
        return family_named(model_type)  # raises, naming the reason
    return FAMILIES.get(model_type) if isinstance(model_type, str) else None


def named_calibration_sets() -> dict[str, Objective]:
    """Every named calibration set the engine knows, with the objective it calibrates.

    A name outside this list is refused before it reaches the engine, whose loader would otherwise treat an
    unknown name as a file path relative to the worker's working directory.
    """
    from core.data.calibration import NAMED_ANSWER_SETS, NAMED_TEXT_SETS
    from core.data.tasks import CMQA, CMQA_TASKS

    sets = {name: Objective.perplexity for name in NAMED_TEXT_SETS}
    sets |= {name: Objective.answer for name in NAMED_ANSWER_SETS}
    sets |= {name: Objective.margin for name in (CMQA, *CMQA_TASKS)}
    return sets


def check_named_set(name: str, objective: Objective) -> str | None:
    """None when ``name`` is a known set for ``objective``, else the reason it cannot be used."""
    sets = named_calibration_sets()
    if name not in sets:
        return f"unknown named set '{name}'; known: {', '.join(sorted(sets))}"
    if sets[name] is not objective:
        return f"named set '{name}' is calibration for objective '{sets[name].value}'"
    return None
