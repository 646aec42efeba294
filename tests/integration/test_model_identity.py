"""Runs belong to a model by its id, never by its name (issue 21, item 5): a rename keeps
them, a deleted model's runs do not pass to a new model that gets the same name, and records
from before ids were used are matched by name once.

The records are written through the stores as the launcher and the worker write them (a
model folder with a checkpoint folder, a finished run naming it); the commands under test run
through the real CLI. One test trains for real, end to end.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from llm_trainer.store.atomic import atomic_write_json, read_json
from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import RunMeta, RunState, RunStatus
from llm_trainer.store.runs import RunStore
from tests.helpers import run_cli, train_tiny


def finished_run(home: Path, rec, *, label: str, when: float, step: int = 4) -> str:
    """A completed run of ``rec`` whose checkpoint is ``step-<step>`` of the model's folder,
    as the worker leaves it (the model's record lists the run)."""
    runs = RunStore(home)
    run_id = f"20261201-1200{len(runs.run_ids()):02d}-{label}"
    ckpt = rec.path / f"step-{step:08d}"
    ckpt.mkdir(exist_ok=True)
    runs.create(RunMeta(run_id=run_id, created_at=when, model={"id": rec.id, "name": rec.name}),
                RunState(run_id=run_id, status=RunStatus.COMPLETED, model_id=rec.id,
                         model_name=rec.name, created_at=when, step=step,
                         checkpoint=str(ckpt)))
    rec.runs.append(run_id)
    ModelStore(home).save(rec)
    return run_id


def status_rows(home: Path) -> dict[str, dict]:
    proc = run_cli("status", "--json", "--all", home=home)
    assert proc.returncode == 0, proc.stderr
    return {r["run_id"]: r for r in json.loads(proc.stdout)}


def test_new_model_ids_are_uuids(home):
    rec = ModelStore(home).create(None, default_base="corpus-tiny")
    uuid.UUID(rec.id)  # raises for anything else
    assert read_json(rec.path / "model.json")["id"] == rec.id


def test_a_rename_keeps_the_runs_and_their_checkpoints(home):
    models = ModelStore(home)
    rec = models.create(None, default_base="corpus-tiny")
    run = finished_run(home, rec, label="corpus-tiny-1", when=1.0)
    assert run_cli("models", "rename", "corpus-tiny-1", "bard", home=home).returncode == 0
    row = status_rows(home)[run]
    assert row["model"] == "bard" and row["model_id"] == rec.id
    # the checkpoint as it is now, in the renamed folder (not the folder's old name)
    assert row["checkpoint"] == str(home / "checkpoints" / "bard" / "step-00000004")
    assert run in ModelStore(home).get("bard").runs
    detail = run_cli("status", run, "--no-plot", home=home).stdout
    assert "bard" in detail and "checkpoints/bard/step-00000004" in detail


def test_a_new_model_with_a_deleted_models_name_does_not_inherit_its_runs(home):
    """Today's defect: rename, delete, train a new model that gets the same automatic name,
    and `status` shows the deleted model's runs as the new one's, with checkpoint paths into
    the new model's folder."""
    models = ModelStore(home)
    old = models.create(None, default_base="corpus-tiny")
    old_runs = [finished_run(home, old, label="corpus-tiny-1", when=float(i), step=i + 1)
                for i in range(3)]
    assert run_cli("models", "rename", "corpus-tiny-1", "bard", home=home).returncode == 0
    assert run_cli("models", "delete", "bard", "--yes", home=home).returncode == 0
    new = ModelStore(home).create(None, default_base="corpus-tiny")
    assert new.name == "corpus-tiny-1"  # the automatic name is free again
    (new.path / "step-00000001").mkdir()
    rows = status_rows(home)
    for run in old_runs:
        row = rows[run]
        assert row["model_id"] == old.id
        assert row["model"] != "corpus-tiny-1" and "deleted" in row["model"], row
        assert row["checkpoint"] is None or not row["checkpoint"].startswith(str(new.path))
    table = run_cli("status", "--all", home=home).stdout
    for line in (ln for ln in table.splitlines() if any(r in ln for r in old_runs)):
        assert "(deleted)" in line, table
    detail = run_cli("status", old_runs[0], "--no-plot", home=home).stdout
    assert str(new.path) not in detail and "deleted" in detail, detail


def test_a_model_json_without_an_id_gets_one_once(home):
    """A record from before ids: it is listed (not skipped), and gets one id, written back,
    that a rename keeps."""
    models = ModelStore(home)
    rec = models.create("old", default_base="x")
    data = read_json(rec.path / "model.json")
    del data["id"]
    atomic_write_json(rec.path / "model.json", data, schema_version=1)
    first = models.get("old")
    assert first.id and read_json(rec.path / "model.json")["id"] == first.id
    assert [m.name for m in models.list()] == ["old"]
    models.rename("old", "older")
    assert models.get("older").id == first.id


def test_runs_without_a_model_id_are_matched_by_name_once(home):
    """Runs from before ids: matched to the model of their name at the first read, and from
    then on by the id they got: a rename keeps them, and after a delete a new model of the
    same name does not take them."""
    models = ModelStore(home)
    rec = models.create("bard", default_base="x")
    run = finished_run(home, rec, label="bard", when=1.0)
    runs = RunStore(home)
    for path in (runs.paths(run).meta, runs.paths(run).state):
        data = read_json(path)
        data.pop("model_id", None)
        if "model" in data:
            data["model"] = {"name": "bard"}
        atomic_write_json(path, data, schema_version=2)
    assert status_rows(home)[run]["model_id"] == rec.id  # matched by name
    assert runs.read_meta(run).model["id"] == rec.id  # and written back, once
    assert runs.read_state(run).model_id == rec.id
    assert run_cli("models", "rename", "bard", "poet", home=home).returncode == 0
    assert status_rows(home)[run]["model"] == "poet"
    assert run_cli("models", "delete", "poet", "--yes", home=home).returncode == 0
    ModelStore(home).create("bard", default_base="x")
    assert "deleted" in status_rows(home)[run]["model"]


def test_a_run_of_a_model_deleted_before_ids_stays_unattached(home):
    """An id-less run whose model is gone is matched to nothing, and stays so when a model of
    its name appears later."""
    runs = RunStore(home)
    run = "20261201-120000-bard"
    runs.create(RunMeta(run_id=run, created_at=1.0, model={"name": "bard"}),
                RunState(run_id=run, status=RunStatus.COMPLETED, model_name="bard",
                         created_at=1.0))
    first = status_rows(home)[run]
    assert "deleted" in first["model"]
    ModelStore(home).create("bard", default_base="x")
    again = status_rows(home)[run]
    assert "deleted" in again["model"] and again["model_id"] == first["model_id"]


@pytest.mark.slow
def test_end_to_end_rename_delete_and_train_again(home, corpus):
    """The issue's walk with real training: the second model's `status` shows one run."""
    train_tiny(home, "--dataset", str(corpus), "--max-steps", "2")
    first = ModelStore(home).list()[0]
    assert run_cli("models", "rename", first.name, "bard", home=home).returncode == 0
    assert run_cli("models", "delete", "bard", "--yes", home=home).returncode == 0
    train_tiny(home, "--dataset", str(corpus), "--max-steps", "2")
    second = ModelStore(home).list()[0]
    assert second.name == first.name and second.id != first.id
    rows = status_rows(home).values()
    assert [r["run_id"] for r in rows if r["model"] == second.name] == second.runs
