"""The one error type users can cause, and how front ends show it.

Front ends print ``str(error)`` as one plain line, then ``hint`` if any, and exit with
``exit_code`` (2 for usage errors, 1 for failures). Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import errno
import os


class LLMTrainerError(Exception):
    """An error the user can understand and act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(LLMTrainerError):
    """Bad input: an unknown key, a bad value, a missing file, an unknown model."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration key or value that is not allowed."""


class DataError(UsageError):
    """A dataset that cannot be found, read, or used for training."""


class NotFoundError(UsageError):
    """A run, model or checkpoint that does not exist."""


class BusyError(LLMTrainerError):
    """The model or run is in use (training) and cannot be changed now."""

    exit_code = 1


class DiskFullError(LLMTrainerError, OSError):
    """A write failed because the disk (or the user's quota) is full. Still an OSError, so
    code that handles failed writes keeps handling it; ``errno`` is ENOSPC."""

    def __init__(self, message: str, hint: str | None = "free some disk space and try again"
                 ) -> None:
        super().__init__(message, hint)
        self.errno = errno.ENOSPC


class TrainingError(LLMTrainerError):
    """Training failed (diverged, out of memory...) after it started."""


class PrepareStopped(LLMTrainerError):
    """A stop was asked for while the data was prepared; the shards finished so far are kept
    and the next preparation resumes from them."""

    exit_code = 130


class RecordError(LLMTrainerError):
    """A record on disk (meta.json, state.json, model.json, ...) that cannot be used: a list
    shows that one record as unreadable, with this reason, and the rest as usual."""


class UnreadableRecord(RecordError):
    """A record that cannot be read or parsed: the OS refused it, it is not UTF-8, not JSON,
    or its fields have the wrong types."""

    def __init__(self, path: object, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{path} is unreadable: {reason}", hint=hint)
        self.path, self.reason = str(path), reason


# errno -> what it means for the user, where the OS's own words are obscure
_PLAIN = {
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "ENOSPC": "disk full (no space left on the device)",
    "EDQUOT": "disk quota exceeded",
    "EROFS": "read-only file system",
    "EIO": "input/output error (a failing disk or a lost network mount?)",
    "EISDIR": "is a folder, not a file",
    "ENOTDIR": "a part of the path is not a folder",
    "ENOENT": "no such file or folder",
    "EMFILE": "too many open files",
    "ENAMETOOLONG": "file name too long",
    "ELOOP": "too many levels of symbolic links",
}


def os_reason(exc: OSError) -> str:
    """The plain meaning of an OSError's errno ("permission denied", "disk full ...")."""
    name = errno.errorcode.get(exc.errno or 0, "")
    if name in _PLAIN:
        return _PLAIN[name]
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return text[:1].lower() + text[1:]


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: what it means and the path(s) it concerns."""
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(str(p) for p in paths)
    return f"{os_reason(exc)}: {where}" if where else os_reason(exc)
