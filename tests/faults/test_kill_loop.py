"""kill -9 at random moments over a run that checkpoints every step, then one more save:
nothing is left behind (no staging folder, no temp file), and every checkpoint that remains
verifies.

Each attempt is a real process: a fork of this one (torch already imported, so a restart
costs milliseconds, not the seconds of a new interpreter) that trains through the real CLI
(`train`, then `resume`), killed with SIGKILL after a random delay; some kills land while it
starts, most while it saves or prunes."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from llm_trainer.store.checkpoints import STAGING_PREFIX, list_checkpoints
from tests.helpers import TINY, run_cli, wait_for

KILLS = 30
EVERY_STEP = ("--set", "train.checkpoint_interval=1", "--set", "train.eval_interval=0",
              "--set", "train.keep_last=2")


def forked_cli(home, *args: str) -> int:
    """``llm-trainer ARGS`` in a child process (a fork of this one); its pid. What it prints
    goes to ``home/cli-<pid>.out`` (for a failure's message)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            proc = run_cli(*args, home=home)
            code = proc.returncode
            (home / f"cli-{os.getpid()}.out").write_text(proc.stdout + proc.stderr)
        finally:
            os._exit(code)
    return pid


def output_of(home, pid: int) -> str:
    path = home / f"cli-{pid}.out"
    return path.read_text() if path.exists() else "(no output: still running, or killed)"


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def staging(model_dir) -> list[str]:
    """Staging folders, and the temp files of atomic writes (model.json's)."""
    return [p.name for p in (*model_dir.glob(f"{STAGING_PREFIX}*"), *model_dir.glob(".*.tmp"))]


@pytest.mark.slow
def test_random_kills_leave_no_staging_and_only_valid_checkpoints(home, corpus):
    # a short run here first: what a run imports and the prepared data are then in every
    # fork, which starts training in a fraction of a second
    proc = run_cli("train", *TINY, "--foreground", "--sample", "0", "--dataset", str(corpus),
                   "--name", "warm", "--max-steps", "2", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model_dir = home / "checkpoints" / "k"
    rng = random.Random(0)
    first = forked_cli(home, "train", *TINY, "--foreground", "--sample", "0", "--dataset",
                       str(corpus), "--name", "k", "--max-steps", "100000", *EVERY_STEP)
    try:
        wait_for(lambda: list(model_dir.glob("step-*/manifest.json")), timeout=60)
    finally:
        kill(first)
    torn = 0  # kills that left a staging folder (a save or a pruning cut short)
    for _ in range(KILLS):
        pid = forked_cli(home, "resume", "k", "--foreground", "--sample", "0")
        time.sleep(rng.uniform(0.05, 0.6))
        kill(pid)
        torn += bool(staging(model_dir))
    assert torn >= 3, f"only {torn} of {KILLS} kills landed during a save"

    # one more save: a run stopped with SIGTERM checkpoints and pauses
    before = {c.path.name for c in list_checkpoints(model_dir)}
    pid = forked_cli(home, "resume", "k", "--foreground", "--sample", "0")
    status = None

    def saved_or_ended() -> bool:
        nonlocal status
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
            return True
        return bool({p.parent.name for p in model_dir.glob("step-*/manifest.json")} - before)

    try:
        wait_for(saved_or_ended, timeout=30, interval=0.01)
        if status is None:
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            kill(pid)
    assert os.waitstatus_to_exitcode(status) == 0, output_of(home, pid)
    assert staging(model_dir) == []
    ckpts = list_checkpoints(model_dir, verify=True)
    assert ckpts and all(c.valid for c in ckpts), [c.problem for c in ckpts if not c.valid]
    assert not [p for p in model_dir.glob("step-*") if not (p / "manifest.json").exists()]
    proc = run_cli("models", "show", "k", home=home)
    assert proc.returncode == 0 and "corrupted" not in proc.stdout, proc.stdout + proc.stderr
