"""Versioned JSON records: each file says which ``schema_version`` wrote it; a reader migrates
older versions step by step with explicit functions (as pipx does with its metadata file) and
refuses a newer version in one line rather than misreading it. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable
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
