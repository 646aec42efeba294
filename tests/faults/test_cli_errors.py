"""The machine's errors at the CLI's top level: one line with what the errno means and the
path, exit code 1, and the traceback only with --debug."""

from __future__ import annotations

import errno
import os

from llm_trainer.store.models import ModelStore
from tests.faults.powers import cli_as_a_user
from tests.helpers import run_cli


def test_a_full_disk_is_one_line_naming_the_file(home, monkeypatch):
    ModelStore(home).create("alpha", default_base="x")

    def full(fd):  # what fsync says when the data it flushes no longer fits
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    proc = run_cli("models", "activate", "alpha", home=home)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: disk full (no space left on the device): {home}/checkpoints/.active.json",
        "hint: run again with --debug for the traceback"]
    assert not list((home / "checkpoints").glob(".active.json*"))  # nor a temp file

    debug = run_cli("--debug", "models", "activate", "alpha", home=home)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "OSError" in debug.stderr


def test_a_folder_it_may_not_write_is_one_line_naming_the_file(home):
    ModelStore(home).create("alpha", default_base="x")
    (home / "checkpoints").chmod(0o555)
    try:
        proc = cli_as_a_user(home, "models", "activate", "alpha")
    finally:
        (home / "checkpoints").chmod(0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[0] == \
        f"error: permission denied: {home}/checkpoints/.active.json"
    assert "Traceback" not in proc.stderr
