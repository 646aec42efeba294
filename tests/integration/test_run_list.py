"""What `status` lists and what `stop` says about finished runs (issue 21, item 7): a run a
resume continued is marked "continued (by run X)" and left out of the default list; `stop`
on a run that is not running says only that.

The runs are written through the stores as the launcher and the worker leave them; the
commands run through the real CLI.
"""

from __future__ import annotations

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


def test_stop_on_a_finished_run_says_only_that_it_is_not_running(home):
    bard = ModelStore(home).create("bard", default_base="x")
    run = ended_run(home, bard, 1, RunStatus.COMPLETED, RunKind.TRAIN)
    proc = run_cli("stop", run, home=home)
    assert proc.returncode == 1
    assert proc.stdout == f"run {run} is not running (status: completed)\n", proc.stdout
