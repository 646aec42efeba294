"""One damaged or forbidden run record costs only itself: the other runs and models are
listed as usual, the bad one is shown as unreadable with its reason, and no command prints
a traceback. The damage is real (files written wrong, folders chmod 000)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import RunMeta, RunState
from llm_trainer.store.runs import RunStore
from tests.faults.powers import as_a_user, cli_as_a_user
from tests.helpers import run_cli, train_tiny

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

GOOD, BAD = "20261201-100000-good", "20261202-100000-bad"


def fake_run(home: Path, run_id: str, **state) -> Path:
    """A finished run's records, as the worker leaves them (no training needed to list it)."""
    store = RunStore(home)
    store.create(RunMeta(run_id=run_id, created_at=time.time()),
                 RunState(run_id=run_id, status="completed", step=10, total_steps=10,
                          loss=2.5, created_at=time.time(), **state))
    return store.paths(run_id).dir


def damage_state(folder: Path, how: str) -> None:
    state = folder / "state.json"
    if how == "folder":
        state.unlink()
        state.mkdir()
    elif how == "not utf-8":
        state.write_bytes(b'{"status": "completed", "model_name": "\xff\xfe"}')
    elif how == "not json":
        state.write_text('{"status": "completed", ')
    elif how == "not an object":
        state.write_text("[1, 2, 3]")
    elif how == "wrong types":
        data = json.loads(state.read_text())
        state.write_text(json.dumps({**data, "created_at": "yesterday", "step": "ten"}))


REASONS = {"folder": "is a folder", "not utf-8": "not UTF-8", "not json": "not valid JSON",
           "not an object": "not a JSON object", "wrong types": "created_at"}


@pytest.mark.parametrize("how", list(REASONS))
def test_a_damaged_state_json_is_one_unreadable_row(home, how):
    fake_run(home, GOOD)
    damage_state(fake_run(home, BAD), how)

    listed = run_cli("status", home=home)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stdout + listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line[:1] == "2"}
    assert "completed" in rows[GOOD]
    assert "unreadable" in rows[BAD]
    assert f"{BAD}: " in listed.stdout and REASONS[how] in listed.stdout  # why, below

    as_json = {v["run_id"]: v for v in json.loads(run_cli("status", "--json", home=home).stdout)}
    assert as_json[GOOD]["status"] == "completed"
    assert as_json[BAD]["status"] == "unreadable" and REASONS[how] in as_json[BAD]["error"]

    one = run_cli("status", BAD, home=home)
    assert one.returncode == 1
    assert "Traceback" not in one.stderr
    first = one.stderr.splitlines()[0]
    assert first.startswith("error: ") and "state.json" in first and REASONS[how] in first


def test_a_run_whose_meta_json_is_damaged_is_named_not_lost(home):
    """`status RUN` and `compare` say which file is damaged and how, in one line; the run is
    not "no run with id"."""
    fake_run(home, GOOD)
    bad = fake_run(home, BAD)
    (bad / "meta.json").write_bytes(b"\xff\xfe\x00garbage")
    for args in (("status", BAD), ("compare", BAD, GOOD)):
        proc = run_cli(*args, home=home)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        assert "meta.json is unreadable: not UTF-8" in proc.stderr.splitlines()[0]


# ---------------------------------------------------------------------------- chmod 000
@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> Path:
    """v1model (the v1 fixture home) and alpha, trained here: its model folder's lock file
    names its run, which is what `models list` looks at."""
    home = tmp_path_factory.mktemp("faults") / "home"
    shutil.copytree(FIXTURES / "v1-home", home)
    train_tiny(home, "--dataset", "corpus.txt", "--max-steps", "4", "--name", "alpha")
    return home


@pytest.fixture
def forbidden(two_models, tmp_path):
    """A copy of ``two_models`` whose alpha run folder is chmod 000; (home, that run id)."""
    home = Path(shutil.copytree(two_models, tmp_path / "home"))
    run = next(r for r in RunStore(home).run_ids() if r.endswith("-alpha"))
    folder = RunStore(home).paths(run).dir
    folder.chmod(0)
    yield home, run
    folder.chmod(0o755)  # so that the temp folder can be cleaned up


@pytest.mark.slow  # real processes, and a model trained once
def test_a_run_folder_nobody_may_read_breaks_no_other_command(forbidden):
    home, run = forbidden
    models = cli_as_a_user(home, "models", "list")
    assert models.returncode == 0, models.stdout + models.stderr
    assert "alpha" in models.stdout and "v1model" in models.stdout

    listed = cli_as_a_user(home, "status")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line[:1] == "2"}
    assert "unreadable" in rows[run]
    assert "completed" in rows["20261124-231310-v1model"]
    assert f"{run}: " in listed.stdout and "permission denied" in listed.stdout

    one = cli_as_a_user(home, "status", run)
    assert one.returncode == 1
    assert one.stderr.startswith("error: ") and "permission denied" in one.stderr
    assert f"{run}/" in one.stderr.splitlines()[0]

    again = cli_as_a_user(home, "resume", "alpha")  # not blocked by its unreadable run
    assert "already finished its planned 4 steps" in again.stderr, again.stderr

    both = cli_as_a_user(home, "compare", run, "20261124-231310-v1model")
    assert both.returncode == 1 and "permission denied" in both.stderr.splitlines()[0]
    for proc in (models, listed, one, again, both):
        assert "Traceback" not in proc.stdout + proc.stderr


DASHBOARD = """
import asyncio, json, sys
from textual.widgets import DataTable
from llm_trainer.tui.app import TrainerApp

async def main():
    app = TrainerApp(sys.argv[1], refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("1", "f")
        runs = app.query_one("#runs-table", DataTable)
        models = app.query_one("#models-table", DataTable)
        for _ in range(100):
            await pilot.pause(0.1)
            if runs.row_count >= 2 and models.row_count >= 2:
                break
        print(json.dumps({"runs": [[str(c) for c in runs.get_row(k)] for k in runs.rows],
                          "models": [[str(c) for c in models.get_row(k)]
                                     for k in models.rows],
                          "running": app.is_running}))

asyncio.run(main())
"""


@pytest.mark.slow  # a whole dashboard, in a real process
def test_the_dashboard_starts_beside_a_run_nobody_may_read(forbidden):
    home, _run = forbidden
    proc = subprocess.run([*as_a_user(), sys.executable, "-c", DASHBOARD, str(home)],
                          capture_output=True, text=True, timeout=120, cwd=str(home),
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout.splitlines()[-1])
    assert shown["running"]
    assert any("unreadable" in " ".join(row) for row in shown["runs"]), shown
    assert any("completed" in " ".join(row) for row in shown["runs"]), shown
    names = " ".join(" ".join(row) for row in shown["models"])
    assert "alpha" in names and "v1model" in names


MODEL_DAMAGE = {"newer": ({"schema_version": 99, "id": "m-new"}, "newer llm-trainer"),
                "wrong types": ({"id": "m-bad", "created_at": "today"}, "created_at"),
                "a list": (["m-x"], "not a JSON object")}


@pytest.mark.parametrize("how", list(MODEL_DAMAGE))
def test_a_damaged_model_json_is_one_unreadable_model(home, how):
    store = ModelStore(home)
    store.create("good", default_base="x")
    bad = store.create("bad", default_base="x")
    data, reason = MODEL_DAMAGE[how]
    (bad.path / "model.json").write_text(json.dumps(data))
    fake_run(home, GOOD, model_id=store.get("good").id)

    listed = run_cli("models", "list", home=home)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert "unreadable" in rows["bad"] and "new" in rows["good"]
    assert "bad: " in listed.stdout and reason in listed.stdout

    runs = run_cli("status", home=home)  # names its runs' models from the readable records
    assert runs.returncode == 0 and GOOD in runs.stdout and "good" in runs.stdout

    one = run_cli("models", "show", "bad", home=home)
    assert one.returncode == 1 and reason in one.stderr.splitlines()[0]
    for proc in (listed, runs, one):
        assert "Traceback" not in proc.stderr


@pytest.mark.slow  # a whole dashboard
async def test_the_dashboard_starts_beside_damaged_records(home):
    from textual.widgets import DataTable

    from llm_trainer.tui.app import TrainerApp

    store = ModelStore(home)
    good = store.create("good", default_base="x")
    bad = store.create("bad", default_base="x")
    (bad.path / "model.json").write_text('{"id": "m-bad", "created_at": "today"}')
    fake_run(home, GOOD, model_id=good.id)
    damage_state(fake_run(home, BAD), "wrong types")

    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("1", "f")  # finished runs too
        runs = app.query_one("#runs-table", DataTable)
        models = app.query_one("#models-table", DataTable)
        for _ in range(100):
            await pilot.pause(0.1)
            if runs.row_count == 2 and models.row_count == 2:
                break
        # rows are keyed by run id (the first column is a short label: model and start time)
        shown = {k.value: " ".join(map(str, runs.get_row(k))) for k in runs.rows}
        assert app.is_running
        assert "unreadable" in shown[BAD], shown
        assert "completed" in shown[GOOD], shown
        named = {" ".join(map(str, models.get_row(k))) for k in models.rows}
        assert any("bad" in row and "unreadable" in row for row in named), named
