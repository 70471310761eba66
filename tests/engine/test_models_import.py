"""`gisp models import` writes a folder another user can read: the workers run as `gisp`, not as the operator."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cli.main import main
from tests.utils.tiny import save_tiny_model

NOBODY = 65534


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """The tightest umask an operator's shell may have; a file mode that depends on it shows up as 0600."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder anyone may enter (pytest's own tmp_path is 0700), standing for the host side of a volume."""
    with tempfile.TemporaryDirectory(prefix="gisp-import-") as name:
        Path(name).chmod(0o755)
        yield Path(name)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_imported_model_is_world_readable_whatever_the_umask(
    open_dir: Path, tmp_path: Path, strict_umask: None
) -> None:
    source = save_tiny_model(tmp_path / "tiny")
    models = open_dir / "fresh" / "models"  # neither folder exists yet: the import creates both
    assert main(["models", "import", str(source), "--name", "tiny", "--models-dir", str(models)]) == 0
    imported = models / "tiny"
    modes = _modes(imported)
    assert "model.safetensors" in modes and "config.json" in modes
    files = {name: mode for name, mode in modes.items() if (imported / name).is_file()}
    folders = {name: mode for name, mode in modes.items() if (imported / name).is_dir()}
    assert set(files.values()) == {0o644}, files
    assert set(folders.values()) == {0o755}, folders
    assert stat.S_IMODE(models.stat().st_mode) == 0o755
    assert stat.S_IMODE((open_dir / "fresh").stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root to switch users")
def test_another_user_can_load_the_imported_model(open_dir: Path, tmp_path: Path, strict_umask: None) -> None:
    source = save_tiny_model(tmp_path / "tiny")
    assert main(["models", "import", str(source), "--name", "tiny", "--models-dir", str(open_dir)]) == 0
    files = sorted((open_dir / "tiny").iterdir())
    done = subprocess.run(["cat", *map(str, files)], user=NOBODY, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"".join(p.read_bytes() for p in files)
