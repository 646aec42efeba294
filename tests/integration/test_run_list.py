"""What `status` lists and what `stop` says about finished runs (issue 21, item 7): a run a
resume continued is marked "continued (by run X)" and left out of the default list; `stop`
on a run that is not running says only that.

The runs are written through the stores as the launcher and the worker leave them; the
commands run through the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import RunKind, RunMeta, RunState, RunStatus
from llm_trainer.store.runs import RunStore
from tests.helpers import run_cli


def ended_run(home: Path, rec, second: int, status: RunStatus, kind: RunKind) -> str:
    run_id = f"20261201-1200{second:02d}-{rec.name}"
    RunStore(home).create(
        RunMeta(run_id=run_id, created_at=float(second), kind=kind,
                model={"id": rec.id, "name": rec.name}),
        RunState(run_id=run_id, status=status, model_id=rec.id, model_name=rec.name,
                 created_at=float(second), step=second * 10))
    return run_id


def listed(home: Path, *flags: str) -> dict[str, dict]:
    proc = run_cli("status", "--json", *flags, home=home)
    assert proc.returncode == 0, proc.stderr
    return {r["run_id"]: r for r in json.loads(proc.stdout)}


def test_runs_continued_by_a_resume_are_marked_and_left_out_of_the_list(home):
    bard = ModelStore(home).create("bard", default_base="x")
    other = ModelStore(home).create("other", default_base="x")
    first = ended_run(home, bard, 1, RunStatus.PAUSED, RunKind.TRAIN)
    killed = ended_run(home, bard, 2, RunStatus.FAILED, RunKind.RESUME)
    last = ended_run(home, bard, 3, RunStatus.PAUSED, RunKind.RESUME)
    lone = ended_run(home, other, 4, RunStatus.PAUSED, RunKind.TRAIN)

    rows = listed(home)
    assert set(rows) == {last, lone}  # one row per model: the run that matters
    every = listed(home, "--all")
    assert every[first]["status"] == "continued" and every[first]["continued_by"] == killed
    assert every[killed]["status"] == "continued" and every[killed]["continued_by"] == last
    assert every[last]["status"] == "paused" and every[last]["continued_by"] is None
    assert every[lone]["status"] == "paused"

    table = run_cli("status", home=home).stdout
    assert last in table and first not in table and killed not in table
    table = run_cli("status", "--all", home=home).stdout
    assert first in table and "continued" in table
    detail = run_cli("status", first, "--no-plot", home=home).stdout
    assert f"status:     continued (by run {killed})" in detail


def test_a_completed_run_stays_listed_after_more_epochs(home):
    """A completed run is done, not superseded: `resume --more-epochs` adds a run beside
    it."""
    bard = ModelStore(home).create("bard", default_base="x")
    done = ended_run(home, bard, 1, RunStatus.COMPLETED, RunKind.TRAIN)
    more = ended_run(home, bard, 2, RunStatus.COMPLETED, RunKind.RESUME)
    rows = listed(home)
    assert rows[done]["status"] == "completed" and set(rows) == {done, more}


def test_stop_on_a_finished_run_says_only_that_it_is_not_running(home):
    bard = ModelStore(home).create("bard", default_base="x")
    run = ended_run(home, bard, 1, RunStatus.COMPLETED, RunKind.TRAIN)
    proc = run_cli("stop", run, home=home)
    assert proc.returncode == 1
    assert proc.stdout == f"run {run} is not running (status: completed)\n", proc.stdout
