"""Crash-safe file writes: temp file in the same folder, fsync, ``os.replace``.

Readers never see half a file: they see the old version or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", *, durable: bool = True) -> Iterator[Any]:
    """Write to a temp file beside ``path``; on success move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    with atomic_open(path, "w", durable=durable) as fh:
        fh.write(text)


def atomic_write_json(path: Path, data: dict[str, Any], *, durable: bool = True,
                      schema_version: int = SCHEMA_VERSION) -> None:
    """Write ``data`` (with ``schema_version`` first) as JSON, atomically."""
    payload = {**data, "schema_version": schema_version}
    payload = {"schema_version": schema_version, **payload}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n",
                      durable=durable)


def read_json(path: Path) -> dict[str, Any] | None:
    """The parsed object, or None when the file is missing or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one line; a single ``write`` of a short line on an O_APPEND file."""
    line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)


def read_jsonl(path: Path, *, tail: int | None = None) -> list[dict[str, Any]]:
    """Parsed lines; a torn last line (crash mid-write) is skipped."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return []
    if tail is not None:
        lines = lines[-tail:]
    out = []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out
