"""A running run's phase before its first step ("preparing data 43%"): state.json keeps it
(older files read without it), the worker writes it at most twice a second and clears it
when training starts, and one place words it for `status`, the tables and the detail."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from llm_trainer.app.queries import RunQueries
from llm_trainer.cli.format import print_runs
from llm_trainer.data.prepare import PrepareProgress
from llm_trainer.launcher import process_start_time
from llm_trainer.render import phase, phase_detail, run_detail_text, run_state
from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import PREPARING_DATA, RunMeta, RunState
from llm_trainer.store.runs import RunStore
from llm_trainer.training import events
from llm_trainer.views import RunDetail, RunView
from llm_trainer.worker import PHASE_WRITE_EVERY_S, RunReporter

FIXTURES = Path(__file__).parents[1] / "fixtures"
RUN = "20261206-120000-m"


def prep(stage: str, done: int, total: int = 400, tokens: int = 0,
         elapsed: float = 1.0) -> PrepareProgress:
    return PrepareProgress(stage, done, total, tokens, elapsed)


def test_a_state_json_from_before_the_phase_reads_without_one(tmp_path):
    runs = RunStore(tmp_path)
    old = {"schema_version": 2, "run_id": RUN, "status": "running", "step": 3,
           "anomalies": 0, "rollbacks": 0}
    (runs.paths(RUN).dir).mkdir(parents=True)
    runs.paths(RUN).state.write_text(json.dumps(old))
    state = runs.read_state(RUN)
    assert (state.status, state.step, state.phase, state.phase_progress) == \
        ("running", 3, None, None)
    assert state.extra == {}
    v1 = FIXTURES / "v1-home"
    home = tmp_path / "v1"
    shutil.copytree(v1, home)
    [run_id] = RunStore(home).run_ids()
    assert RunStore(home).read_state(run_id).phase is None


def test_the_phase_survives_a_write_and_a_read(tmp_path):
    runs = RunStore(tmp_path)
    state = RunState(run_id=RUN, status="running", phase=PREPARING_DATA,
                     phase_stage="tokenizing", phase_progress=0.43, phase_mb_per_s=85.2,
                     phase_eta_s=80.0)
    runs.create(RunMeta(run_id=RUN, model={"id": "m-1", "name": "m"}), state)
    assert runs.read_state(RUN) == state
    assert json.loads(runs.paths(RUN).state.read_text())["phase_progress"] == 0.43


class CountingRunStore(RunStore):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.writes: list[RunState] = []

    def write_state(self, state, *, durable=False) -> None:
        self.writes.append(state)
        super().write_state(state, durable=durable)


def _reporter(tmp_path) -> tuple[RunReporter, CountingRunStore]:
    runs = CountingRunStore(tmp_path)
    state = RunState(run_id=RUN, status="running")
    runs.create(RunMeta(run_id=RUN, model={"id": "m-1", "name": "m"}), state)
    runs.writes.clear()
    return RunReporter(RUN, runs, ModelStore(tmp_path), "m-1", state), runs


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_the_reporter_writes_the_phase_at_most_twice_a_second(tmp_path):
    reporter, runs = _reporter(tmp_path)
    t0 = time.monotonic()
    for i in range(200):  # a burst far faster than the throttle
        reporter.on_prepare(prep("vocabulary", i))
    for i in range(200, 400):
        reporter.on_prepare(prep("tokenizing", i))
    reporter.on_prepare(prep("tokenizing", 400, tokens=1000, elapsed=2.0))
    burst = time.monotonic() - t0
    assert burst < PHASE_WRITE_EVERY_S  # else the counts below are not the throttle's
    # the first report, the first of the new stage and the finished preparation
    assert [(w.phase_stage, w.phase_progress) for w in runs.writes] == \
        [("vocabulary", 0.0), ("tokenizing", 0.5), ("tokenizing", 1.0)]
    time.sleep(PHASE_WRITE_EVERY_S)
    reporter.on_prepare(prep("tokenizing", 0, total=0))  # the size unknown: no fraction
    assert len(runs.writes) == 4
    state = runs.read_state(RUN)
    assert (state.phase, state.phase_stage, state.phase_progress, state.phase_mb_per_s,
            state.phase_eta_s) == (PREPARING_DATA, "tokenizing", None, 0.0, None)
    reporter.close()
    assert "preparing data" not in runs.paths(RUN).log.read_text()  # not 15 s yet


def test_a_long_preparation_leaves_a_line_in_the_log_now_and_then(tmp_path, monkeypatch):
    import llm_trainer.worker as worker

    monkeypatch.setattr(worker, "PROGRESS_LOG_EVERY_S", 0.05)
    reporter, runs = _reporter(tmp_path)
    reporter.on_prepare(prep("tokenizing", 1_000_000, 100_000_000, 10_000, 1.0))
    time.sleep(0.06)
    reporter.on_prepare(prep("tokenizing", 43_700_000, 100_000_000, 10_000_000, 100.0))
    reporter.close()
    log = runs.paths(RUN).log.read_text()
    assert log.count("preparing data: ") == 1
    assert "preparing data: tokenizing 43% (0.4 MB/s, 100,000 tok/s, ETA 2m09s)" in log


def test_training_starts_without_the_phase(tmp_path):
    reporter, runs = _reporter(tmp_path)
    reporter.on_prepare(prep("tokenizing", 360))
    assert runs.read_state(RUN).phase == PREPARING_DATA
    reporter.on_start(None, events.StartInfo(
        device={"selected": "cpu"}, precision="fp32", parameters=10, architecture={},
        tokenizer={"kind": "byte", "vocab_size": 257},
        dataset=events.DatasetInfo("corpus.txt", "f00", 1000, 100), steps_per_epoch=10,
        tokens_per_step=100, global_batch=1, world_size=1, start_step=0, total_steps=10,
        optimizer="adamw", compiled=False, config={}, startup_s=1.0))
    state = runs.read_state(RUN)
    assert (state.phase, state.phase_stage, state.phase_progress, state.phase_mb_per_s,
            state.phase_eta_s, state.total_steps) == (None, None, None, None, None, 10)
    reporter.close()


PREPARING = RunView(run_id=RUN, model="m", model_id="m-1", status="running", step=0,
                    phase=PREPARING_DATA, phase_stage="tokenizing", phase_progress=0.437,
                    phase_mb_per_s=85.24, phase_eta_s=80.0)


def test_one_place_words_the_phase():
    assert phase(PREPARING) == run_state(PREPARING) == "preparing data 43%"
    assert phase_detail(PREPARING) == "preparing data 43% (tokenizing, 85.2 MB/s, ETA 1m20s)"
    vocab = RunView(**{**PREPARING.__dict__, "phase_stage": "vocabulary",
                       "phase_progress": 0.999, "phase_mb_per_s": None, "phase_eta_s": None})
    assert phase_detail(vocab) == "preparing data 99% (building the vocabulary)"
    unknown = RunView(**{**PREPARING.__dict__, "phase_progress": None, "phase_stage": None,
                         "phase_mb_per_s": None, "phase_eta_s": None})
    assert phase_detail(unknown) == phase(unknown) == "preparing data"
    for status in ("queued", "paused", "failed", "completed"):  # only a running run has one
        ended = RunView(**{**PREPARING.__dict__, "status": status})
        assert phase(ended) is None and run_state(ended) == status


def test_status_shows_the_phase_in_its_table_and_the_detail():
    from rich.console import Console

    console = Console(width=200, record=True)
    print_runs(console, [PREPARING])
    assert "preparing data 43%" in console.export_text()
    text = run_detail_text(RunDetail(**PREPARING.__dict__))
    assert "status:     running\nphase:      preparing data 43% (tokenizing, 85.2 MB/s, " \
           "ETA 1m20s)\n" in text
    assert "phase:" not in run_detail_text(RunDetail(run_id=RUN, model="m", model_id="m-1",
                                                     status="running", step=5))


def test_the_view_carries_the_phase_only_while_the_run_runs(tmp_path):
    runs = RunStore(tmp_path)
    queries = RunQueries(runs, ModelStore(tmp_path))
    live = RunState(run_id=RUN, status="running", pid=os.getpid(),
                    create_time=process_start_time(os.getpid()), started_at=time.time(),
                    phase=PREPARING_DATA, phase_stage="tokenizing", phase_progress=0.5,
                    phase_mb_per_s=12.0, phase_eta_s=3.0)
    runs.create(RunMeta(run_id=RUN, model={"id": "m-1", "name": "m"}), live)
    view = queries.run_view(RUN)
    assert (view.phase, view.phase_progress, view.phase_mb_per_s) == \
        (PREPARING_DATA, 0.5, 12.0)
    assert view.to_json()["phase"] == PREPARING_DATA
    runs.write_state(live.updated(status="failed", error="out of memory"))
    gone = queries.run_view(RUN)
    assert (gone.phase, gone.phase_stage, gone.phase_progress) == (None, None, None)
