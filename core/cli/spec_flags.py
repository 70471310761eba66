"""Command-line flags derived from the job spec's fields, so ``gisp prune`` and ``gisp jobs submit`` offer
exactly the options the engine and the API accept, with the same descriptions.

Every flag defaults to "not given": only the flags a user types reach validation, so the spec's own
defaults apply (and it can tell an explicit choice from a default, as some rules need).
"""

from __future__ import annotations

import argparse
import enum
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from core.errors import UserInputError

NESTED = "experimental"  # the one nested group of options; its flags go in an argument group of their own


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain_type(annotation: Any) -> Any:
    """``X | None`` → X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _list_of(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a comma-separated list of {kind.__name__}: '{text}'"
            ) from None

    return parse


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    default = field.default
    if default is not None and not field.is_required() and not isinstance(default, (list, dict, BaseModel)):
        shown = default.value if isinstance(default, enum.Enum) else default
        if str(shown) not in text:
            text += f" (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help with %


def _add(group: Any, name: str, field: FieldInfo, dest: str | None = None) -> None:
    kind = _plain_type(field.annotation)
    options: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(field), "dest": dest or name}
    if field.is_required():
        options["required"] = True
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        options["choices"] = [member.value for member in kind]
    elif typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        item = typing.get_args(item)[0] if typing.get_origin(item) is typing.Annotated else item
        options["type"] = _list_of(item)
        options["metavar"] = f"{item.__name__.upper()},..."
    elif kind in (int, float):
        options["type"] = kind
        options["metavar"] = name.upper()
    group.add_argument(_flag(name), **options)


def add_spec_flags(
    parser: argparse.ArgumentParser, spec: type[BaseModel], *, skip: tuple[str, ...] = ()
) -> None:
    """One flag per field of ``spec`` (and of its experimental group), except ``skip``."""
    for name, field in spec.model_fields.items():
        if name in skip:
            continue
        nested = _plain_type(field.annotation)
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            _add_group(parser, name, field, nested)
            continue
        _add(parser, name, field)


def _add_group(parser: argparse.ArgumentParser, name: str, field: FieldInfo, nested: type[BaseModel]) -> None:
    """A nested object's fields as a group of flags: ``experimental`` options keep their own names; any
    other object's are prefixed with its name, and ``--NAME`` alone asks for it with its defaults."""
    group = parser.add_argument_group(f"{name} options", (nested.__doc__ or "").strip().split("\n\n")[0])
    if name != NESTED:
        group.add_argument(
            _flag(name), action="store_true", default=argparse.SUPPRESS, dest=f"{name}.", help=_help(field)
        )
    for inner, inner_field in nested.model_fields.items():
        flag = inner if name == NESTED else f"{name}_{inner}"
        _add(group, flag, inner_field, dest=f"{name}.{inner}")


def spec_values(
    args: argparse.Namespace, spec: type[BaseModel], *, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The flags a user gave, shaped as the spec's request body (``skip``: fields the caller fills itself)."""
    values: dict[str, Any] = {}
    given = vars(args)
    for name in spec.model_fields:
        if name in given and name not in skip and "." not in name:
            values[name] = given[name]
    for key, value in given.items():
        if "." in key:
            group, inner = key.split(".", 1)
            if group in skip:
                continue
            values.setdefault(group, {})
            if inner:  # "--curve" alone: the object with its defaults
                values[group][inner] = value
    return values


def parse_spec(spec: type[BaseModel], values: dict[str, Any]) -> Any:
    """Validate ``values``; a problem becomes a one-line error naming the flag to change."""
    try:
        return spec.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
        flag = _flag(loc[-1]) if loc else "arguments"
        raise UserInputError(first["msg"].removeprefix("Value error, "), field=flag) from None
