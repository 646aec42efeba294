"""The one error type users can cause, and how front ends show it.

Front ends print ``str(error)`` as one plain line, then ``hint`` if any, and exit with
``exit_code`` (2 for usage errors, 1 for failures). Tracebacks only with ``--debug``.
"""

from __future__ import annotations


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


class TrainingError(LLMTrainerError):
    """Training failed (diverged, out of memory...) after it started."""


class PrepareStopped(LLMTrainerError):
    """A stop was asked for while the data was prepared; the shards finished so far are kept
    and the next preparation resumes from them."""

    exit_code = 130
