"""Versioned records: files written by the first release (tests/fixtures/v1-home, produced by
commit 8246c95 with a real training run) are read, migrated and resumed; files from a newer
release are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import RUN_SCHEMA, RunStatus
from llm_trainer.store.runs import RunStore
from llm_trainer.training.state import TRAINER_SCHEMA, TrainState
from tests.helpers import run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1-home"
RUN = "20261124-231310-v1model"


@pytest.fixture
def v1_home(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home)
    return home


def test_v1_run_and_model_records_load_with_the_new_fields_filled(v1_home):
    runs = RunStore(v1_home)
    raw = json.loads(runs.paths(RUN).state.read_text())
    assert raw["schema_version"] == 1 and "anomalies" not in raw
    state = runs.read_state(RUN)
    assert state.status is RunStatus.COMPLETED and state.step == 20
    assert (state.anomalies, state.rollbacks, state.last_sample) == (0, 0, None)
    meta = runs.read_meta(RUN)
    assert meta.model["name"] == "v1model" and meta.distributed is None
    assert meta.config["train"]["max_steps"] == 20
    runs.write_state(state)  # written back as the current version, nothing lost
    again = json.loads(runs.paths(RUN).state.read_text())
    assert again["schema_version"] == RUN_SCHEMA
    assert {k: v for k, v in raw.items() if k != "schema_version"}.items() <= again.items()
    (rec,) = ModelStore(v1_home).list()
    assert rec.name == "v1model" and rec.steps_completed == 20


def test_v1_trainer_json_migrates_to_the_train_state():
    path = FIXTURE / "checkpoints" / "v1model" / "step-00000020" / "trainer.json"
    raw = json.loads(path.read_text())
    assert "schema_version" not in raw and "callbacks" not in raw
    state = TrainState.from_state_dict(raw)
    assert state.step == 20 and state.callbacks == {} and state.finished is None
    assert state.state_dict()["schema_version"] == TRAINER_SCHEMA


@pytest.mark.slow
def test_a_v1_home_shows_in_status_and_its_model_resumes(v1_home):
    views = json.loads(run_cli("status", "--json", home=v1_home, check=True).stdout)
    assert [(v["run_id"], v["status"], v["step"]) for v in views] == [(RUN, "completed", 20)]
    detail = run_cli("status", RUN, home=v1_home, check=True).stdout
    assert "status:     completed (reached the planned steps)" in detail
    models = json.loads(run_cli("models", "list", "--json", home=v1_home, check=True).stdout)
    assert [m["name"] for m in models] == ["v1model"]
    # the fixture's dataset was at /tmp/v1home/corpus.txt when it was written: point at the copy
    run_cli("resume", "v1model", "--more-epochs", "1", "--set", "data.dataset=corpus.txt",
            "--set", "runtime.num_threads=1", "--foreground", "--sample", "0", home=v1_home,
            check=True)
    latest = sorted((v1_home / "checkpoints" / "v1model").glob("step-*"))[-1]
    trainer = json.loads((latest / "trainer.json").read_text())
    assert trainer["schema_version"] == TRAINER_SCHEMA and trainer["step"] > 20


def test_records_from_a_newer_release_are_refused_in_one_line(v1_home):
    runs = RunStore(v1_home)
    state = json.loads(runs.paths(RUN).state.read_text())
    runs.paths(RUN).state.write_text(json.dumps({**state, "schema_version": 99}))
    proc = run_cli("status", RUN, home=v1_home)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0].endswith(
        "state.json was written by a newer llm-trainer (schema 99; this version reads up to "
        f"{RUN_SCHEMA})")
    listing = json.loads(run_cli("status", "--json", home=v1_home, check=True).stdout)
    assert listing[0]["status"] == "unreadable" and "newer llm-trainer" in listing[0]["error"]

    model_json = v1_home / "checkpoints" / "v1model" / "model.json"
    model_json.write_text(json.dumps({**json.loads(model_json.read_text()),
                                      "schema_version": 7}))
    proc = run_cli("models", "list", home=v1_home)  # listed as unreadable, with the reason
    assert proc.returncode == 0 and "v1model: " in proc.stdout and \
        "model.json was written by a newer llm-trainer (schema 7" in proc.stdout
    proc = run_cli("models", "show", "v1model", home=v1_home)
    assert proc.returncode == 1 and "model.json was written by a newer llm-trainer (schema 7" \
        in proc.stderr.splitlines()[0]
