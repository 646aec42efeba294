"""Crash-safe file writes: temp file in the same folder, fsync, ``os.replace``.

Readers never see half a file: they see the old version or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.errors import UnreadableRecord, os_reason

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _name_target(exc, path)
        raise
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            _name_target(exc, path)
        raise


def _name_target(exc: OSError, path: Path) -> None:
    """Let ``exc`` name the file being written (a failed write or fsync names none; a failed
    temp file names a name the user never chose), for the one line the CLI prints."""
    if exc.filename is None or Path(exc.filename).name.startswith(f".{path.name}."):
        exc.filename = str(path)


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


def read_record(path: Path) -> dict[str, Any] | None:
    """The one way a JSON record is read: the parsed object, None when the file is not there,
    and ``UnreadableRecord`` (one line: the path and why) when it is there but cannot be read
    (permission denied, a folder, not UTF-8, not JSON, not an object). Callers that list
    records show that one as unreadable and go on with the rest."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UnreadableRecord(path, os_reason(exc)) from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UnreadableRecord(path, f"not UTF-8 text (byte {exc.start})") from exc
    except ValueError as exc:
        raise UnreadableRecord(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UnreadableRecord(path, f"not a JSON object (a {type(data).__name__})")
    return data


def read_json(path: Path) -> dict[str, Any] | None:
    """``read_record`` for files whose absence and damage mean the same (a lock's holder, a
    cache entry): None in both cases."""
    try:
        return read_record(path)
    except UnreadableRecord:
        return None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one line; a single ``write`` of a short line on an O_APPEND file."""
    line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)


@dataclass(frozen=True)
class JsonLines:
    """The records of a JSON-lines file and how many lines were skipped as bad (not UTF-8,
    not JSON, not an object, or refused by the reader's check). A last line without its
    newline that does not parse is a write in progress (or torn by a crash): skipped, not
    counted."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad: int = 0


def read_jsonl_lines(path: Path, *, tail: int | None = None,
                     check: Callable[[dict[str, Any]], bool] | None = None) -> JsonLines:
    """Each line of ``path`` parsed on its own, so one bad line costs only itself. A file that
    cannot be read at all raises ``UnreadableRecord``; a missing one has no lines."""
    try:
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
    except (FileNotFoundError, NotADirectoryError):
        return JsonLines()
    except OSError as exc:
        raise UnreadableRecord(path, os_reason(exc)) from exc
    if tail is not None:
        lines = lines[-(tail + 1):] if tail > 0 else lines[-1:]
    out, bad = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            item = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is a ValueError too
            bad += i < len(lines) - 1  # a last line without newline: still being written
            continue
        if not isinstance(item, dict) or (check is not None and not check(item)):
            bad += 1
            continue
        out.append(item)
    return JsonLines(out, bad)


def read_jsonl(path: Path, *, tail: int | None = None) -> list[dict[str, Any]]:
    """The good records of ``path`` (``read_jsonl_lines`` without the count)."""
    return read_jsonl_lines(path, tail=tail).records
