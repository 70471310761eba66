"""Resolving a job's model reference on the server; nothing outside GISP_MODELS_DIR is ever reachable."""

from __future__ import annotations

from pathlib import Path


def resolve_local_model(models_dir: Path, name: str) -> Path | None:
    """``local/<name>`` as a folder or ``<name>.gguf`` inside models_dir, or None when absent.

    ``name`` was already restricted to one plain path segment (no separators, no '..') by the request schema,
    so the result always lies directly inside models_dir.
    """
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        return None
    root = Path(models_dir)
    for candidate in (root / name, root / f"{name}.gguf"):
        if candidate.exists():
            return candidate
    return None
