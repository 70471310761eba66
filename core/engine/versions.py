"""Versions recorded in every trajectory, manifest and report, so numbers can be reproduced."""

from __future__ import annotations

import platform
from importlib import metadata


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("gisp-service", "torch", "transformers", "safetensors"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
