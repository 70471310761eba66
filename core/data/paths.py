"""Where the offline data sets live, and how files used in a run are fingerprinted.

The data folder is always a parameter so tests, CI and benchmarks can point at a read-only copy;
this module only supplies the default, so every loader agrees on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

DATA_DIR_ENV = "GISP_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """`$GISP_DATA_DIR` if set, else `../shared/datasets` beside the repository root."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return (_REPO_ROOT.parent / "shared" / "datasets").resolve()


def resolve_data_dir(data_dir: Path | str | None) -> Path:
    """Accept `None` (use the default), a string or a Path."""
    return default_data_dir() if data_dir is None else Path(data_dir)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so large files do not sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(paths: Iterable[Path], data_dir: Path | None = None) -> dict[str, str]:
    """Map each file (relative to `data_dir` when possible) to its sha256, sorted for stable reports."""
    out: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        key = str(path)
        if data_dir is not None:
            with contextlib.suppress(ValueError):  # outside data_dir: keep the absolute path
                # abspath, not resolve: a symlinked task folder still counts as inside data_dir
                key = str(Path(os.path.abspath(path)).relative_to(os.path.abspath(data_dir)))
        out[key] = sha256_file(path)
    return dict(sorted(out.items()))
