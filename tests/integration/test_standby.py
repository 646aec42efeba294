"""``train --foreground`` starts its worker before planning the run (``launcher.StandbyWorker``)
and hands it the run; a command that ends without a run leaves no worker behind. Real
processes: ``python -m llm_trainer`` in a child."""

from __future__ import annotations

import psutil
import pytest

from llm_trainer.store.runs import RunStore
from tests.helpers import TINY, run_cli, wait_for

pytestmark = pytest.mark.slow  # real worker processes


def standbys_in(folder) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "--standby" in (proc.info["cmdline"] or []):
            try:
                if proc.cwd() == str(folder):
                    found.append(proc)
            except psutil.Error:
                pass
    return found


def test_the_worker_started_ahead_trains_the_run(tmp_path, corpus):
    home = tmp_path / "h"
    home.mkdir()
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--max-steps", "3", "--name",
                   "ahead", "--foreground", "--sample", "10", home=home, process=True,
                   check=True)
    assert "completed: model ahead at step 3" in proc.stdout
    assert "--- sample from ahead (10 tokens" in proc.stdout
    store = RunStore(home)
    [run_id] = store.run_ids()
    state, meta = store.read_state(run_id), store.read_meta(run_id)
    assert state.status == "completed"
    # the process that trained it existed before the run did: the standby, handed the run
    assert state.create_time < meta.created_at
    log = store.paths(run_id).log.read_text()
    assert f"run {run_id}: training model ahead (pid {state.pid}, foreground)" in log
    assert not standbys_in(home)


def test_no_run_no_worker_left(tmp_path):
    proc = run_cli("train", "--dataset", "nowhere.txt", "--foreground", home=tmp_path,
                   process=True)
    assert proc.returncode == 2 and "nowhere.txt" in proc.stderr
    wait_for(lambda: not standbys_in(tmp_path), timeout=20)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_no_worker_ahead_without_foreground_or_with_dry_run(tmp_path):
    from llm_trainer.cli import _standby_for

    assert _standby_for(["train", "--dataset", "x"]) is None
    assert _standby_for(["train", "--foreground", "--dry-run"]) is None
    assert _standby_for(["--home", "h", "train", "--foreground", "--nproc", "2"]) is None
    assert _standby_for(["status", "--foreground"]) is None
    assert _standby_for(["train", "--foreground", "--help"]) is None
