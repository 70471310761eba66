"""What a tenant may submit: the operator's local models and the named calibration sets on disk.

Read without torch or transformers: a model's family comes from its ``config.json``, its parameter count
from the safetensors headers (8-byte length + JSON) or the GGUF tensor table, never from loading weights.
Results are cached per file (path, size, mtime), so listing stays cheap however often it is asked.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from core.families import declared_model_type
from core.jobs.references import stays_inside
from core.pruning_spec import Objective

LOCAL_PREFIX = "local/"
# The shape a request's model name may take (core.schemas.jobs.ModelRef): listing anything else would offer
# a name that no submission can use.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header this large is not one
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class LocalModel:
    name: str
    format: str  # "safetensors" | "gguf" | "other"
    family: str | None
    parameters: int | None
    size_bytes: int

    @property
    def id(self) -> str:
        return LOCAL_PREFIX + self.name


class HeaderError(ValueError):
    """A weights file whose header cannot be read; the model is listed without a parameter count."""


# --- safetensors ---


def safetensors_parameters(path: Path) -> int:
    """Sum over the tensors of the product of their shapes, from the file's JSON header alone."""
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise HeaderError(f"{path.name}: too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise HeaderError(f"{path.name}: header of {length} bytes")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise HeaderError(f"{path.name}: header is not JSON") from error
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for size in entry["shape"]:
            count *= int(size)
        total += count
    return total


# --- GGUF (a minimal reader of the key/value and tensor tables; the data is never read) ---

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


def _read(handle: BinaryIO, fmt: str) -> int | float | bool:
    size = struct.calcsize(fmt)
    raw = handle.read(size)
    if len(raw) != size:
        raise HeaderError("truncated GGUF header")
    return struct.unpack(fmt, raw)[0]


def _string(handle: BinaryIO) -> str:
    length = int(_read(handle, "<Q"))
    if length > MAX_HEADER_BYTES:
        raise HeaderError("GGUF string too long")
    return handle.read(length).decode("utf-8", errors="replace")


def _value(handle: BinaryIO, kind: int) -> object:
    if kind in _SCALARS:
        return _read(handle, _SCALARS[kind])
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        inner, count = int(_read(handle, "<I")), int(_read(handle, "<Q"))
        if inner in _SCALARS:  # skip numbers in one seek
            handle.seek(struct.calcsize(_SCALARS[inner]) * count, 1)
        else:
            for _ in range(count):
                _value(handle, inner)
        return None
    raise HeaderError(f"unknown GGUF value type {kind}")


def gguf_summary(path: Path) -> tuple[str | None, int]:
    """(general.architecture, parameter count) from a GGUF file's header (versions 2 and 3)."""
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise HeaderError(f"{path.name} is not a GGUF file")
        version = int(_read(handle, "<I"))
        if version < 2:
            raise HeaderError(f"GGUF version {version} is not supported")
        tensors, pairs = int(_read(handle, "<Q")), int(_read(handle, "<Q"))
        architecture = None
        for _ in range(pairs):
            key = _string(handle)
            value = _value(handle, int(_read(handle, "<I")))
            if key == "general.architecture" and isinstance(value, str):
                architecture = value
        total = 0
        for _ in range(tensors):
            _string(handle)
            dims = int(_read(handle, "<I"))
            count = 1
            for _ in range(dims):
                count *= int(_read(handle, "<Q"))
            _read(handle, "<I")  # type
            _read(handle, "<Q")  # offset
            total += count
    return architecture, total


# --- listing ---


def _family(folder: Path) -> str | None:
    try:
        value = declared_model_type(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


@lru_cache(maxsize=1024)
def _describe_cached(path: str, _size: int, _mtime_ns: int) -> LocalModel:
    """Keyed by size and mtime too, so a replaced file is read again."""
    entry = Path(path)
    name = entry.name.removesuffix(".gguf") if entry.is_file() else entry.name
    parameters: int | None = None
    if entry.is_file():
        family: str | None = None
        with contextlib.suppress(HeaderError, OSError):  # unreadable: listed without family and count
            family, parameters = gguf_summary(entry)
        return LocalModel(name, "gguf", family, parameters, entry.stat().st_size)
    files = [p for p in entry.iterdir() if p.is_file()]
    weights = sorted(p for p in files if p.suffix == ".safetensors")
    if weights:
        try:
            parameters = sum(safetensors_parameters(p) for p in weights)
        except (HeaderError, OSError, KeyError, TypeError, ValueError):
            parameters = None
    return LocalModel(
        name=name,
        format="safetensors" if weights else "other",
        family=_family(entry),
        parameters=parameters,
        size_bytes=sum(p.stat().st_size for p in files),
    )


def _candidates(models_dir: Path) -> list[Path]:
    """Model folders (with a config.json) and .gguf files directly inside models_dir, by name."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        name = entry.name.removesuffix(".gguf") if entry.suffix == ".gguf" else entry.name
        if not _NAME_RE.fullmatch(name) or not stays_inside(root, entry):
            continue
        if entry.is_dir() and (entry / "config.json").is_file():
            found.append(entry)
        elif entry.is_file() and entry.suffix == ".gguf" and not (root / name).exists():
            found.append(entry)  # a folder of the same name wins, as in core.jobs.references
    return found


def local_model_names(models_dir: Path) -> list[str]:
    """The names ``local/<name>`` can take on this server, sorted (a directory listing, no file reads)."""
    return sorted({p.name.removesuffix(".gguf") if p.is_file() else p.name for p in _candidates(models_dir)})


def local_models(models_dir: Path) -> list[LocalModel]:
    """Every usable local model with its family, parameter count and size on disk."""
    models = []
    for entry in _candidates(models_dir):
        try:
            stat = entry.stat()
            # A folder's own mtime moves when files are added or renamed, its files' when rewritten.
            stamp = (
                max([stat.st_mtime_ns] + [p.stat().st_mtime_ns for p in entry.iterdir()])
                if entry.is_dir()
                else stat.st_mtime_ns
            )
            models.append(_describe_cached(str(entry), stat.st_size, stamp))
        except OSError:
            continue
    return models


# --- named calibration sets ---


@dataclass(frozen=True)
class NamedSet:
    name: str
    objective: Objective


def available_named_sets(data_dir: Path | None) -> list[NamedSet]:
    """Named calibration sets whose files are in the data folder, by name."""
    from core.data.calibration import named_set_on_disk
    from core.jobs.references import named_calibration_sets

    return [
        NamedSet(name, objective)
        for name, objective in sorted(named_calibration_sets().items())
        if named_set_on_disk(name, data_dir)
    ]
