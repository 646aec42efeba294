"""The commands a detached `train` prints run as printed, pasted into the user's shell: with
`llm-trainer` not on PATH (a fresh `make run` checkout) and the home given by `--home` from
another folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import TINY, corpus_text, stop_all_runs

pytestmark = pytest.mark.slow  # a real detached run, and the printed commands in a shell


def shell(command: str, cwd, **kwargs) -> subprocess.Popen:
    """``command`` as a user's bash runs it: PATH without any llm-trainer, this test's
    PYTHONPATH (the package under test) kept, the home not in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "LLM_TRAINER_HOME"}
    env["PATH"] = "/usr/bin:/bin"
    return subprocess.Popen(["bash", "-c", command], cwd=str(cwd), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, **kwargs)


def test_the_follow_and_stop_commands_run_as_printed(tmp_path):
    home, elsewhere = tmp_path / "my home", tmp_path / "elsewhere"  # quoting, too
    home.mkdir()
    elsewhere.mkdir()
    (home / "c.txt").write_text(corpus_text(30_000))
    env = {k: v for k, v in os.environ.items() if k != "LLM_TRAINER_HOME"}
    try:
        started = subprocess.run(
            [sys.executable, "-m", "llm_trainer", "--home", str(home), "train", *TINY,
             "--dataset", str(home / "c.txt"), "--max-steps", "100000", "--name", "pasted"],
            cwd=str(elsewhere), env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        printed = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
                   for line in started.stdout.splitlines() if line.startswith("  ")}
        run_id = started.stdout.split()[2]

        stop = shell(printed["stop it"], elsewhere)
        out, _ = stop.communicate(timeout=120)
        assert stop.returncode == 0, f"{printed['stop it']!r}:\n{out}"
        assert run_id in out

        follow = shell(printed["follow it"], elsewhere)
        deadline = time.monotonic() + 60
        seen = ""
        while "status:" not in seen and time.monotonic() < deadline and follow.poll() is None:
            seen += follow.stdout.readline()
        os.killpg(follow.pid, signal.SIGINT)  # --watch refreshes until Ctrl-C
        rest, _ = follow.communicate(timeout=30)
        assert follow.returncode == 0, f"{printed['follow it']!r}:\n{seen}{rest}"
        assert run_id in seen and "stopped" in seen  # this run, found in its home
    finally:
        stop_all_runs(home)
