"""Versioned JSON records: each file says which ``schema_version`` wrote it; a reader migrates
older versions step by step with explicit functions (as pipx does with its metadata file) and
refuses a newer version in one line rather than misreading it. No torch here.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any

from llm_trainer.errors import RecordError

Migration = Callable[[dict[str, Any]], dict[str, Any]]


class SchemaError(RecordError):
    """A record written by a newer llm-trainer, or not a record at all."""


def upgrade(data: dict[str, Any], *, current: int, migrations: dict[int, Migration],
            source: str) -> dict[str, Any]:
    """``data`` as version ``current``: ``migrations[v]`` turns version v into v + 1. A file
    without ``schema_version`` is version 1 (the first release wrote it on most files)."""
    if not isinstance(data, dict):
        raise SchemaError(f"{source} is not a JSON object")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise SchemaError(f"{source} has an invalid schema_version {version!r}")
    if version > current:
        raise SchemaError(
            f"{source} was written by a newer llm-trainer (schema {version}; this version "
            f"reads up to {current})", hint="upgrade llm-trainer: pip install -U llm-trainer")
    out = dict(data)
    while version < current:
        out = migrations[version](out)
        version += 1
    out["schema_version"] = current
    return out


def _accepted(hint: Any) -> tuple[type, ...] | None:
    """The JSON values a field's annotation takes, as types for ``isinstance`` (None: any):
    numbers for a float, text for an enum, an object for a typed part that reads itself
    (``from_json``), the container for ``list[...]`` / ``dict[...]``, NoneType for null."""
    if hint is Any:
        return None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        parts = [_accepted(h) for h in typing.get_args(hint)]
        return None if any(p is None for p in parts) else tuple(t for p in parts for t in p)
    hint = typing.get_origin(hint) or hint
    if not isinstance(hint, type):
        return None
    if hint is float:
        return (int, float)
    if issubclass(hint, Enum):
        return (str, hint)
    if hasattr(hint, "from_json"):
        return (dict, hint)
    return (hint,)


@functools.cache
def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Per field of the dataclass ``cls``, what ``_accepted`` gives (fields taking any value
    are left out); worked out once per class: lists read hundreds of records."""
    out = {}
    for key, hint in typing.get_type_hints(cls).items():
        accepted = _accepted(hint)
        if accepted is not None:
            out[key] = accepted
    return out


def check_types(cls: type, fields: dict[str, Any], source: str) -> None:
    """``SchemaError`` naming the first of ``fields`` whose value does not fit its annotation
    in the dataclass ``cls``: a record with a field of the wrong type is damaged, found here
    once rather than as a crash wherever the field is used."""
    accepted = _field_types(cls)
    for key, value in fields.items():
        allowed = accepted.get(key)
        if allowed is None:
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool)
                                              and bool not in allowed):
            raise SchemaError(f"{source}: {key} is {value!r:.40}, which is not "
                              f"{_type_name(typing.get_type_hints(cls)[key])}")


def _type_name(hint: Any) -> str:
    """``float | None`` -> "a float or null"; ``list[str]`` -> "a list"."""
    parts = typing.get_args(hint) if isinstance(hint, types.UnionType) or \
        typing.get_origin(hint) is typing.Union else (hint,)
    names = ["null" if p is type(None) else
             getattr(typing.get_origin(p) or p, "__name__", str(p)) for p in parts]
    return "a " + " or ".join(names)
