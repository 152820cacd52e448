"""The exceptions a user can cause, in one small hierarchy.

Every message says what is wrong, where (a path, a key, a value) and how to fix it; the CLI prints
``str(error)`` on one line without a traceback. :func:`validation_problems` turns a pydantic
error into such a line.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError


class LmmrecError(Exception):
    """Base class of every error lmmrec raises for bad input, bad configuration or bad state."""


class DataError(LmmrecError):
    """An interaction file, an item table, an id map or a split is malformed."""


class FeatureError(LmmrecError):
    """A feature set does not match its dataset (rows, NaN/inf, unknown name)."""


class ConfigError(LmmrecError):
    """A configuration key, value or override is unknown or invalid."""


class TrainingError(LmmrecError):
    """Training cannot go on (NaN loss, a run directory that cannot be resumed)."""


def unknown_name(name: str, known: Iterable[str], what: str = "key") -> str:
    """``unknown key 'epoch' (did you mean 'epochs'?); known: a, b, c``: the closest known name,
    and all of them, for a message about a name that is not one of ``known``."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; known: {', '.join(known) or 'none'}"


def validation_problems(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every problem of a pydantic ``error`` on one line, ``"; "``-separated: ``key: message (got
    VALUE)``; an unknown key (``extra='forbid'``) of ``model``, or of a model nested in it, is
    named with :func:`unknown_name`."""
    problems = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        where = ".".join(str(part) for part in loc)
        if problem["type"] == "extra_forbidden" and model is not None:
            known = _fields_at(model, loc[:-1])
            if known is not None:
                problems.append(f"{where}: {unknown_name(str(loc[-1]), known)}")
                continue
        message = str(problem["msg"]).removeprefix("Value error, ")
        value = problem.get("input")
        shown = isinstance(value, (str, int, float, bool)) and len(str(value)) <= 60
        got = f" (got {value!r})" if problem["type"] != "missing" and shown else ""
        problems.append(f"{where}: {message}{got}" if where else f"{message}{got}")
    return "; ".join(problems)


def nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """``(Model, is_mapping)`` for annotations ``Model``, ``Model | None``, ``dict[str, Model]``;
    ``(None, False)`` for any other."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = nested_model(arg)
            if found[0] is not None:
                return found
        return None, False
    if origin is dict:
        inner = typing.get_args(annotation)[1]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, True
        return None, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the model found at ``loc`` inside ``model`` (None if none is)."""
    parts = list(loc)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        nested, mapping = (None, False) if field is None else nested_model(field.annotation)
        if nested is None or (mapping and not parts):
            return None
        if mapping:
            parts.pop(0)  # the mapping's key
        model = nested
    return list(model.model_fields)
