"""Versions recorded in every trajectory, manifest and report, so numbers can be reproduced."""

from __future__ import annotations

import platform
from importlib import metadata

# what changes numbers: the engine itself, the kernels and modeling code, tokenisation, plots
PACKAGES = ("gisp-service", "torch", "transformers", "tokenizers", "safetensors", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
