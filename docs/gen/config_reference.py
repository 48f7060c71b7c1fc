"""The configuration reference, from the pydantic models of include/mlops/config.py: every key of every section,
in the models' order, with its type, default and `description=`. A key without a description is an error naming
it (`Model.field`), so that the reference cannot leave one out."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

INTRO = """# Configuration reference

Every key of a pipeline config (one YAML file per model: [Pipeline configuration](configuration.md)), section by
section, with its type, default and meaning. This page is generated from the pydantic models of
`include/mlops/config.py` (their `description=`) each time the site is built: the models are what a config is
checked against when it is loaded, so this page says what the code accepts.
"""


class MissingDescription(ValueError):
    """A config field has no `description=`."""


def markdown(root: type[BaseModel]) -> str:
    """The reference page of `root` and every model its fields hold, one section per model, depth first."""
    sections = list(_sections(root, "", 0, set()))
    missing = [
        f"{model.__name__}.{name}"
        for model, _, _ in sections
        for name, f in model.model_fields.items()
        if not f.description
    ]
    if missing:
        raise MissingDescription(
            f"config fields without a description (add description= in {root.__module__}): {', '.join(missing)}"
        )
    return INTRO + "".join(_section(model, path, depth) for model, path, depth in sections)


def _sections(model: type[BaseModel], path: str, depth: int, seen: set[type]) -> Iterator[tuple[type, str, int]]:
    """Each model once, at the first key that holds it, followed by the models of its own fields."""
    seen.add(model)
    yield model, path, depth
    for name, field in model.model_fields.items():
        for nested, suffix in _models_in(field.annotation):
            if nested not in seen:
                key = f"{path}.{name}" if path else name
                yield from _sections(nested, key + suffix, depth + 1, seen)


def _models_in(annotation: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    """The models an annotation holds, each with how its key path goes on (`[]` for a list, `.<key>` for a map)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, suffix
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        suffix += "[]"
    elif origin is dict:
        suffix += ".<key>"
        args = args[1:]
    for arg in args:
        yield from _models_in(arg, suffix)


def _anchor(model: type) -> str:
    return model.__name__.strip("_").lower()


def _section(model: type[BaseModel], path: str, depth: int) -> str:
    title = f"`{path}`" if path else "Top level"
    if kind := model.model_fields.get("kind"):
        title += f" (`kind: {typing.get_args(kind.annotation)[0]}`)"
    heading = "##" if depth <= 1 else "###"
    lines = [f"\n{heading} {title} {{#{_anchor(model)}}}\n"]
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        lines.append("\n" + " ".join(model.__doc__.split()) + "\n")
    lines.append("\n| key | type | default | description |\n|---|---|---|---|\n")
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        cells = [f"`{key}`", _type(field), _default(field), " ".join((field.description or "").split())]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n")
    return "".join(lines)


def _type(field: FieldInfo) -> str:
    text = _name(field.annotation)
    for constraint in field.metadata:
        for kind, bound, sign in _BOUNDS:
            if isinstance(constraint, kind):
                text += f", {sign} {getattr(constraint, bound)}"
    return text


_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length >="),
)


def _name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        kind = annotation.model_fields.get("kind")
        label = f"`{typing.get_args(kind.annotation)[0]}`" if kind else annotation.__name__.strip("_")
        return f"[{label}](#{_anchor(annotation)})"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _name(args[0])
    if origin is Literal:
        return " or ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_name(arg) for arg in args if arg is not type(None)) + (
            " or none" if type(None) in args else ""
        )
    if origin is list:
        return f"list of {_name(args[0])}"
    if origin is dict:
        return f"map of {_name(args[0])} to {_name(args[1])}"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "its keys' defaults" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "required"
    if field.default is None:
        return "none"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    if isinstance(field.default, str):
        return f"`{field.default}`" if field.default else "empty"
    return f"`{field.default!r}`"
