"""The dashboard shows a running run's phase before its first step: "preparing data 43%" in
the runs table, with its rate and time left in the summary and the run's detail."""

from __future__ import annotations

import os
import time

import pytest
from textual.widgets import DataTable, Static

from llm_trainer.launcher import process_start_time
from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import PREPARING_DATA, RunMeta, RunState
from llm_trainer.store.runs import RunStore
from llm_trainer.tui.app import TrainerApp
from tests.helpers import wait_until

RUN = "20261206-120000-prep"


@pytest.mark.slow  # a whole dashboard (seconds)
async def test_a_run_preparing_its_data_shows_the_phase(tmp_path):
    """A run's records on disk, kept alive by this process's pid, as a worker writes them
    while it tokenizes; then training starts and the phase gives way to the status."""
    runs = RunStore(tmp_path)
    model = ModelStore(tmp_path).create("prep", default_base="prep")  # runs name it by id
    now = time.time()
    state = RunState(run_id=RUN, status="running", model_name="prep", model_id=model.id,
                     created_at=now, started_at=now, pid=os.getpid(),
                     create_time=process_start_time(os.getpid()), phase=PREPARING_DATA,
                     phase_stage="tokenizing", phase_progress=0.43, phase_mb_per_s=85.2,
                     phase_eta_s=80.0)
    runs.create(RunMeta(run_id=RUN, created_at=now, kind="train", config={},
                        model={"id": model.id, "name": "prep"}), state)

    def status_cell(app) -> str:
        return str(app.query_one("#runs-table", DataTable).get_cell(RUN, "status"))

    def text_of(app, selector: str) -> str:
        return str(app.screen.query_one(selector, Static).render())

    app = TrainerApp(tmp_path, refresh_s=0.2)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(pilot, lambda: app.query_one("#runs-table").row_count == 1)
        assert status_cell(app) == "preparing data 43%"
        assert "prep: preparing data 43% (tokenizing, 85.2 MB/s, ETA 1m20s)" in \
            text_of(app, "#runs-summary")

        runs.write_state(state.updated(phase_progress=0.9, phase_eta_s=9.0))
        await wait_until(pilot, lambda: status_cell(app) == "preparing data 90%")

        await pilot.press("1", "enter")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunDetailScreen")
        assert "phase:      preparing data 90% (tokenizing, 85.2 MB/s, ETA 9s)" in \
            text_of(app, "#detail-body")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ != "RunDetailScreen")

        runs.write_state(state.updated(phase=None, phase_stage=None, phase_progress=None,
                                       phase_mb_per_s=None, phase_eta_s=None, step=1,
                                       total_steps=10))
        await wait_until(pilot, lambda: status_cell(app) == "running")
