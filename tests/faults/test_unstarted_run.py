"""A run whose process is killed before its worker wrote its pid is seen as dead at once:
not "already training" for a minute, then "the worker never started"."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from llm_trainer.service import Service
from llm_trainer.store.runs import RunStore
from tests.helpers import TINY, run_cli, stop_all_runs


def worker_of(run_id: str) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline"]):
        if run_id in " ".join(proc.info["cmdline"] or []):
            return proc
    return None


@pytest.mark.slow
def test_a_run_killed_before_its_worker_wrote_its_pid_is_dead_at_once(home, corpus):
    try:
        proc = run_cli("train", *TINY, "--dataset", str(corpus), "--name", "m",
                       "--max-steps", "5", home=home)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        svc = Service(home)
        (run_id,) = [v.run_id for v in svc.list_runs()]
        worker = worker_of(run_id)
        assert worker is not None
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        state = RunStore(home).read_state(run_id)
        if state.pid is not None:
            pytest.skip("the worker wrote its pid before it was killed (a slow machine's "
                        "kill came late)")
        started = time.monotonic()
        view = svc.run_view(run_id)
        assert view.status == "failed", view
        assert "before it started training" in view.error
        assert "never started" not in view.error
        models = json.loads(run_cli("models", "list", "--json", home=home).stdout)
        assert [m["status"] for m in models if m["name"] == "m"] != ["training"]
        again = run_cli("train", *TINY, "--dataset", str(corpus), "--model", "m",
                        "--max-steps", "2", "--foreground", "--sample", "0", home=home)
        assert "already training" not in again.stderr, again.stderr
        assert time.monotonic() - started < 30
    finally:
        stop_all_runs(home)


@pytest.mark.slow  # trains a tiny model
def test_the_launch_names_its_starting_process(home, corpus):
    """Until the worker writes its pid, control.json names the process bringing the run up
    (this one while it plans, then the worker it spawned)."""
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--name", "m", "--max-steps", "1",
                   "--foreground", "--sample", "0", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    svc = Service(home)
    (run_id,) = [v.run_id for v in svc.list_runs()]
    control = RunStore(home).read_control(run_id)
    assert control["starter_pid"] == os.getpid()  # trained in this process (in_process)
