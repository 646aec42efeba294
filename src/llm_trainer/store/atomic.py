"""Crash-safe file writes: temp file in the same folder, fsync, ``os.replace``.

Readers never see half a file: they see the old version or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.errors import UnreadableRecord, os_reason

SCHEMA_VERSION = 1
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 16 << 20
"""Below this much free space, a write that failed without saying why failed for want of it."""


def disk_full(exc: BaseException, folder: Path, *, needed: int = 0) -> bool:
    """Did a write into ``folder`` fail because the disk is full? An OSError with ENOSPC or
    EDQUOT anywhere in the chain says so; libraries that wrap it say so in words (safetensors:
    "No space left on device (os error 28)"), or not at all (torch.save's file writer: "[enforce
    fail at inline_container.cc:672] . unexpected pos"): then the free space decides (less
    than ``needed`` or ``LOW_SPACE_BYTES``). Ask before removing what the write left."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        text = str(e)
        if "No space left on device" in text or "os error 28" in text or \
                "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    if not isinstance(exc, OSError | RuntimeError):
        return False
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return False
    return free < max(needed, LOW_SPACE_BYTES)


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


def writer_tag() -> str:
    """``p<pid>-t<start time in ms>-h<host>``: this process, as the temp files and staging
    folders it makes are named, so that anyone can tell whether their writer still lives (a
    pid alone may have been reused since; ``launcher.process_alive`` compares both). The host
    (a short hash of its name) keeps a home shared between machines safe: a writer on
    another machine is not judged by this one's processes."""
    return _writer_tag(os.getpid())  # a forked child is a writer of its own


@functools.cache
def _writer_tag(pid: int) -> str:
    from llm_trainer.launcher import process_start_time

    return f"p{pid}-t{int((process_start_time(pid) or 0.0) * 1000)}-h{_host()}"


@functools.cache
def _host() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


WRITER_TAG = re.compile(r"\bp(\d+)-t(\d+)-h([0-9a-f]{6})\b")


def writer_alive(name: str) -> bool | None:
    """Is the process that wrote the temp file or staging folder ``name`` still running?
    None: the name does not say who wrote it, or a writer on another machine did."""
    from llm_trainer.launcher import process_alive

    m = WRITER_TAG.search(name)
    if m is None or m.group(3) != _host():
        return None
    started = int(m.group(2)) / 1000 or None  # 0: the writer could not read its start time
    return process_alive(int(m.group(1)), started)


def remove_dead_temp_files(folder: Path) -> list[Path]:
    """Temp files of ``atomic_open`` whose writer was killed before it renamed them."""
    removed = []
    for p in folder.glob(".*.tmp"):
        if writer_alive(p.name) is False:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


@functools.cache
def process_umask() -> int:
    """This process's umask, read once. Linux shows it in /proc without changing it; elsewhere
    it is set and put back at once (the first call, before any writer threads exist)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` gives a new file (0666 less the umask):
    ``mkstemp`` makes its temp files 0600, which other users' tools (a shared home, a
    web server serving exports) could not read, unlike the logs beside them."""
    return 0o666 & ~process_umask()


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", *, durable: bool = True) -> Iterator[Any]:
    """Write to a temp file beside ``path``; on success move it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{writer_tag()}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:
        _name_target(exc, path)
        raise
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), file_mode())
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            _name_target(exc, path)  # the CLI's one line says "disk full ...: PATH"
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


def record_present(path: Path) -> bool:
    """The record file is there, readable or not: one we may not look into (permission
    denied) still exists, and its reader then says why it cannot be used."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    except OSError:
        return True
    return True


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
