"""The README's reference tables, generated from the code that defines them: the job fields and the settings.

    python -m core.reference_tables README.md     # rewrite the tables between their markers

A test compares the README with this output, so a field or a setting added in code and forgotten in the
README (or a default changed in one place only) fails the suite.
"""

from __future__ import annotations

import enum
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from core.pruning_spec import METHODS
from core.schemas.jobs import JobSpec
from core.settings import Settings


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, __import__("types").UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " \\| ".join(names)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (list, dict):
        inner = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation)).replace("SecretStr", "secret")


def _optional_of(annotation: Any) -> Any:
    """``X | None`` → X; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "—" if isinstance(value, BaseModel) else f"`{value!r}`" if value else "empty"
    default = field.default
    if default is None:
        return "—"
    if hasattr(default, "get_secret_value"):
        return "a development value"
    if isinstance(default, enum.Enum):
        default = default.value
    return f"`{default}`"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        nested = _optional_of(field.annotation)
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            if field.default is None:
                rows.append(f"| `{prefix}{name}` | object | — | {_cell(field.description)} |")
            rows += _rows(nested, f"{prefix}{name}.")
            continue
        rows.append(
            f"| `{prefix}{name}` | {_type_name(field.annotation)} | {_default(field)} | {_cell(field.description)} |"
        )
    return rows


def job_fields_table() -> str:
    """Every field of ``POST /v1/jobs`` (and of ``gisp prune``, which takes the same as flags)."""
    header = "| field | type | default | meaning |\n|---|---|---|---|\n"
    return header + "\n".join(_rows(JobSpec)) + "\n"


def methods_table() -> str:
    """Every method a job may name, with the traits validation and the loop rely on."""
    rows = []
    for method, traits in METHODS.items():
        if traits.iterative:
            scores = "every step"
        elif traits.per_target:
            scores = "once per target, layer after layer on the pruned model"
        else:
            scores = "once, on the dense model"
        rows.append(
            f"| `{method.value}` | {traits.summary} | {traits.reads} | {scores} | {traits.compensation} |"
        )
    header = "| method | what it does | reads | scores | bias compensation |\n|---|---|---|---|---|\n"
    return header + "\n".join(rows) + "\n"


def settings_table() -> str:
    """Every ``GISP_*`` environment variable the service reads."""
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append(f"| `GISP_{name.upper()}` | {_default(field)} | {_cell(field.description)} |")
    return "| variable | default | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n"


MARKERS: dict[str, Callable[[], str]] = {
    "job-fields": job_fields_table,
    "methods": methods_table,
    "settings": settings_table,
}


def rewrite(text: str) -> str:
    """``text`` with the block between each ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` regenerated."""
    for name, render in MARKERS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"the markers of the '{name}' table are missing")
        start, end = pattern.search(text).span()  # type: ignore[union-attr]
        head, tail = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        text = text[:start] + head + render() + tail + text[end:]
    return text


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(rewrite(path.read_text()))
