"""Detached runs in real processes: status, stop/pause, kill -9, exact resume."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from llm_trainer.store.checkpoints import resolve_checkpoint
from llm_trainer.store.records import RUN_SCHEMA
from llm_trainer.store.runs import RunStore
from tests.helpers import corpus_text, run_cli, stop_all_runs, wait_for

pytestmark = pytest.mark.slow  # real training processes

STEPS = 1500  # long enough to pause and kill a live run at step 400-450 with seconds to spare
SETTINGS = ["--preset", "tiny", "--max-steps", str(STEPS), "--set", "model.dropout=0.1",
            "--set", "train.eval_interval=500", "--set", "train.checkpoint_interval=100",
            "--set", "train.log_interval=20", "--set", "runtime.num_threads=1"]


def state_of(home, run_id):
    """state.json as it is on disk (the worker's own record)."""
    return json.loads(RunStore(home).paths(run_id).state.read_text())


def status_of(home, run_id):
    """The run as `status --json` shows it (the state combined with liveness and intents)."""
    return json.loads(run_cli("status", run_id, "--json", home=home, check=True).stdout)


def latest_run(home):
    return sorted(p.name for p in (home / "runs").iterdir())[-1]


def weights(home, model):
    path = resolve_checkpoint(home / "checkpoints" / model, "latest").path
    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("bg")
    (home / "corpus.txt").write_text(corpus_text(80_000))
    yield home
    stop_all_runs(home)


@pytest.fixture(scope="module")
def uninterrupted(data_home):
    proc = run_cli("train", *SETTINGS, "--dataset", "corpus.txt", "--name", "straight",
                   "--foreground", "--sample", "0", home=data_home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return weights(data_home, "straight")


def start_detached(home, name):
    proc = run_cli("train", *SETTINGS, "--dataset", "corpus.txt", "--name", name, home=home)
    assert proc.returncode == 0, proc.stderr
    assert "started run" in proc.stdout and "llm-trainer status" in proc.stdout
    return latest_run(home)


def test_detached_run_outlives_its_launcher_and_status_follows_it(data_home):
    run_id = start_detached(data_home, "detached")
    # the launcher has returned; the run goes on in the background
    assert state_of(data_home, run_id)["status"] in ("queued", "running")
    first = wait_for(lambda: (s := state_of(data_home, run_id)).get("step", 0) > 50 and s)
    assert first["status"] == "running"
    later = wait_for(lambda: (s := state_of(data_home, run_id))["step"] > first["step"] and s)
    assert later["step"] > first["step"]
    proc = run_cli("status", "--json", home=data_home)
    rows = json.loads(proc.stdout)
    row = next(r for r in rows if r["run_id"] == run_id)
    for key in ("run_id", "model", "status", "epoch", "step", "total_steps", "loss",
                "val_loss", "device", "eta_seconds", "pid"):
        assert key in row
    assert row["model"] == "detached" and row["device"] == "cpu"
    assert row["status"] in ("running", "completed")
    assert rows[0]["run_id"] == run_id  # running first
    detail = run_cli("status", run_id, home=data_home)
    assert "remaining:" in detail.stdout and "tokens/s" in detail.stdout
    assert "last log lines:" in detail.stdout
    done = wait_for(lambda: state_of(data_home, run_id)["status"] == "completed", timeout=120)
    assert done
    final = state_of(data_home, run_id)
    assert final["step"] == STEPS and final["schema_version"] == RUN_SCHEMA


def test_stop_pauses_and_resume_finishes_bitwise_equal(data_home, uninterrupted):
    run_id = start_detached(data_home, "paused")
    wait_for(lambda: state_of(data_home, run_id).get("step", 0) >= 400)
    proc = run_cli("stop", run_id, home=data_home)
    assert proc.returncode == 0, proc.stderr
    assert f"asking run {run_id} to pause" in proc.stdout
    assert f"run {run_id} is paused" in proc.stdout
    state = RunStore(data_home).read_state(run_id)
    assert state.status == "paused" and 400 <= state.step < STEPS
    assert state.checkpoint.endswith(f"step-{state.step:08d}")
    again = run_cli("stop", run_id, home=data_home)
    assert again.returncode == 1 and "is not running (status: paused)" in again.stdout

    proc = run_cli("resume", "paused", "--foreground", "--sample", "0", home=data_home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"completed: model paused at step {STEPS:,}" in proc.stdout
    assert_same_weights(uninterrupted, weights(data_home, "paused"))
    # the paused run is history now: continued by the resume, and off the default list
    resumed = latest_run(data_home)
    assert status_of(data_home, run_id)["continued_by"] == resumed
    listed = [r["run_id"] for r in json.loads(run_cli("status", "--json", home=data_home).stdout)]
    assert resumed in listed and run_id not in listed


def test_kill_9_is_reported_failed_and_resume_finishes_bitwise_equal(data_home, uninterrupted):
    run_id = start_detached(data_home, "killed")
    wait_for(lambda: state_of(data_home, run_id).get("step", 0) >= 450)
    pid = state_of(data_home, run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: json.loads(run_cli("status", "--json", home=data_home).stdout), 10)
    rows = json.loads(run_cli("status", "--json", home=data_home).stdout)
    row = next(r for r in rows if r["run_id"] == run_id)
    assert row["status"] == "failed" and row["error"] == "process ended unexpectedly"
    detail = run_cli("status", run_id, home=data_home).stdout
    assert "failed (process ended unexpectedly)" in detail

    proc = run_cli("resume", run_id, "--foreground", "--sample", "0", home=data_home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_weights(uninterrupted, weights(data_home, "killed"))


def test_more_epochs_trains_exactly_that_many_more(data_home, uninterrupted):
    store = RunStore(data_home)
    spe = store.read_state(latest_run(data_home)).steps_per_epoch
    proc = run_cli("resume", "straight", home=data_home)
    assert proc.returncode == 2 and "already finished its planned" in proc.stderr
    assert "--more-epochs" in proc.stderr
    proc = run_cli("resume", "straight", "--more-epochs", "2", "--foreground", "--sample", "0",
                   home=data_home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = store.read_state(latest_run(data_home))
    assert state.start_step == STEPS
    assert state.step == state.total_steps == STEPS + 2 * spe


def test_busy_models_and_bad_targets_are_refused(data_home):
    run_id = start_detached(data_home, "busy")
    wait_for(lambda: state_of(data_home, run_id).get("checkpoint"))
    proc = run_cli("resume", "busy", home=data_home)
    assert proc.returncode == 1 and f"is already training in run {run_id}" in proc.stderr
    proc = run_cli("train", "--model", "busy", "--dataset", "corpus.txt", home=data_home)
    assert proc.returncode == 1 and "training in run" in proc.stderr
    proc = run_cli("status", run_id[:-3] + "zzz", home=data_home)
    assert proc.returncode == 2 and "no run with id" in proc.stderr
    assert "closest:" in proc.stderr and run_id in proc.stderr
    proc = run_cli("stop", run_id, "--now", home=data_home)
    assert proc.returncode == 0 and "killed" in proc.stdout
    assert status_of(data_home, run_id)["status"] == "stopped"
    assert state_of(data_home, run_id)["status"] == "running"  # the worker's file, untouched
    proc = run_cli("train", "--model", "busy", "--set", "model.n_layer=3", home=data_home)
    assert proc.returncode == 2
    assert "different architecture: n_layer: checkpoint 2, requested 3" in proc.stderr


def test_a_model_in_its_first_run_has_no_checkpoint_yet_for_generate_eval_or_export(data_home):
    proc = run_cli("train", "--preset", "tiny", "--max-steps", "100000", "--dataset",
                   "corpus.txt", "--name", "fresh", "--set", "train.checkpoint_interval=100000",
                   "--set", "train.eval_interval=0", home=data_home)
    assert proc.returncode == 0, proc.stderr
    run_id = latest_run(data_home)
    wait_for(lambda: state_of(data_home, run_id).get("step", 0) > 5)
    for command in (["generate", "--model", "fresh", "--prompt", "the"], ["eval", "fresh"],
                    ["models", "export", "fresh", "--format", "hf", "--out", "x"]):
        proc = run_cli(*command, home=data_home)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert proc.stderr.splitlines() == [  # not "delete it and train it again"
            f"error: model fresh has no checkpoint yet: run {run_id} is training it",
            f"hint: use it once its first checkpoint is saved (`llm-trainer status {run_id}`)"]
    assert run_cli("stop", run_id, home=data_home).returncode == 0
    wait_for(lambda: state_of(data_home, run_id)["status"] == "paused")
    assert run_cli("generate", "--model", "fresh", "--prompt", "the", "--max-new-tokens", "4",
                   home=data_home).returncode == 0  # the pause saved one


def test_readers_never_see_a_partial_state_file(data_home):
    proc = run_cli("train", "--preset", "tiny", "--max-steps", "2000", "--dataset", "corpus.txt",
                   "--name", "chatty", "--set", "train.log_interval=1", home=data_home)
    assert proc.returncode == 0
    run_id = latest_run(data_home)
    path = data_home / "runs" / run_id / "state.json"
    states = set()  # the steps seen: reads went on across that many writes

    def read_once():
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)  # raises on a torn file
        assert data["schema_version"] == RUN_SCHEMA
        states.add(data.get("step"))
        return len(states) >= 50

    wait_for(read_once, timeout=120, interval=0)
    run_cli("stop", run_id, "--now", home=data_home)


def test_ctrl_c_in_the_foreground_pauses_with_a_checkpoint(data_home):
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group (the CLI
    and the worker it follows)."""
    import subprocess
    import sys

    env = {**os.environ, "LLM_TRAINER_HOME": str(data_home), "PYTHONUNBUFFERED": "1"}
    # started with SIGINT ignored, as a background job of a shell without job control is
    # (and CI jobs can be): the CLI must still see Ctrl-C while it follows the run
    cli = subprocess.Popen([sys.executable, "-m", "llm_trainer", "train", *SETTINGS,
                            "--dataset", "corpus.txt", "--name", "interrupted", "--foreground",
                            "--sample", "0"], cwd=data_home, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    store = RunStore(data_home)

    def running_run():
        for run_id in store.run_ids():
            state = store.read_state(run_id)
            if state is not None and state.model_name == "interrupted" and state.step > 100:
                return run_id
        return None

    run_id = wait_for(running_run, timeout=120)
    os.killpg(cli.pid, signal.SIGINT)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, out + err
    assert "stopping: finishing the current step" in out
    assert "paused at step" in out and " resume interrupted" in out
    assert out.count(f"run {run_id}: training model interrupted") == 1  # the log, once
    state = store.read_state(run_id)
    assert state.status == "paused"
    assert state.checkpoint.endswith(f"step-{state.step:08d}")
