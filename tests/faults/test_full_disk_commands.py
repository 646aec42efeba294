"""Commands that write records on a full disk: one line and exit 1, and nothing half-made
left behind (no empty model or run folder that keeps a name taken)."""

from __future__ import annotations

import errno
import os

import pytest

from llm_trainer.store import atomic
from tests.helpers import TINY, home_contents, run_cli


def disk_full(monkeypatch) -> None:
    """Every atomic write (model.json, meta.json, state.json...) meets a full disk when it
    flushes its file to the disk."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", fsync)


def one_line_error(proc) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: disk full"), proc.stderr
    return first


@pytest.mark.slow  # trains a tiny model
def test_train_on_a_full_disk_leaves_no_model_or_run_folder(home, corpus, monkeypatch):
    args = ("train", *TINY, "--dataset", str(corpus), "--name", "m", "--max-steps", "1",
            "--foreground", "--sample", "0")
    with monkeypatch.context() as m:
        disk_full(m)
        one_line_error(run_cli(*args, home=home))
    assert home_contents(home, "checkpoints") == []
    assert home_contents(home, "runs") == []
    proc = run_cli(*args, home=home)  # the disk has room again: the same name is free
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow  # trains a tiny model
def test_an_empty_model_folder_does_not_keep_the_name(home, corpus):
    (home / "checkpoints" / "m").mkdir(parents=True)  # left by an older version's failure
    proc = run_cli("models", "delete", "m", "--yes", home=home)
    assert proc.returncode == 2 and "no model named 'm'" in proc.stderr, proc.stderr
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--name", "m", "--max-steps", "1",
                   "--foreground", "--sample", "0", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (home / "checkpoints" / "m" / "model.json").is_file()


def test_resume_on_a_full_disk_leaves_no_run_folder(zoo_copy, monkeypatch):
    before = home_contents(zoo_copy, "runs")
    with monkeypatch.context() as m:
        disk_full(m)
        one_line_error(run_cli("resume", "demo", "--more-epochs", "1", "--foreground",
                               "--sample", "0", home=zoo_copy))
    assert home_contents(zoo_copy, "runs") == before


@pytest.mark.parametrize("command", [("models", "archive", "demo"),
                                     ("models", "activate", "demo")])
def test_model_changes_on_a_full_disk_say_so_in_one_line(zoo_copy, monkeypatch, command):
    with monkeypatch.context() as m:
        disk_full(m)
        line = one_line_error(run_cli(*command, home=zoo_copy))
    assert "model.json" in line or ".active.json" in line
    assert len([x for x in (zoo_copy / "checkpoints").rglob("*.tmp")]) == 0
