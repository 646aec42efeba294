"""Samples, anomaly rollback, early stopping and TensorBoard through the real CLI and worker:
what lands in runs/<id>/ and what `status` shows."""

from __future__ import annotations

import json

import pytest

from llm_trainer.store.runs import RunStore
from tests.helpers import TINY, run_cli, shadow_package

pytestmark = pytest.mark.slow  # real training processes


def _only_run(home):
    (run_id,) = RunStore(home).run_ids()
    return run_id


def test_samples_rollback_and_tensorboard_are_recorded_and_shown(tmp_path, corpus):
    home = tmp_path / "h"
    home.mkdir()
    run_cli("train", "--foreground", *TINY, "--dataset", str(corpus), "--max-steps", "60",
            "--name", "cb", "--sample-interval", "20", "--sample-prompt", "The ",
            "--tensorboard", "--set", "train.eval_interval=20", "--set",
            "train.spike_window=5", "--set", "train.sample_tokens=16", "--sample", "0",
            home=home, env={"LLM_TRAINER_TEST_ANOMALY": "spike@30"}, check=True)
    runs = RunStore(home)
    run_id = _only_run(home)
    paths = runs.paths(run_id)

    samples = runs.read_samples(run_id)
    assert [s["step"] for s in samples] == [20, 40, 60]  # rolled back 30 -> 20, then on
    assert all(s["prompt"] == "The " and s["text"] for s in samples)

    metrics = runs.read_metrics(run_id)
    anomalies = [m for m in metrics if m["kind"] == "anomaly"]
    assert len(anomalies) == 1 and anomalies[0]["step"] == 30
    assert anomalies[0]["action"] == "rollback" and "loss spike" in anomalies[0]["reason"]
    train = [m for m in metrics if m["kind"] == "train"]
    assert train and all(m["grad_norm"] > 0 for m in train)

    log = paths.log.read_text()
    assert "anomaly at step 30: loss spike" in log and "rolled back to step-00000020" in log

    state = runs.read_state(run_id)
    assert state.status == "completed" and state.step == 60
    assert state.anomalies == 1 and state.rollbacks == 1
    assert state.last_anomaly.startswith("step 30: loss spike")

    shown = run_cli("status", run_id, home=home, check=True).stdout
    assert "anomalies:  1 (1 rollbacks); last: step 30: loss spike" in shown
    assert "sample:     step 60, prompt 'The ':" in shown
    last_line = [ln for ln in ("The " + samples[-1]["text"]).splitlines() if ln.strip()][-1]
    assert f"  {last_line}" in shown
    view = json.loads(run_cli("status", run_id, "--json", home=home, check=True).stdout)
    assert view["last_sample"]["step"] == 60 and view["anomalies"] == 1
    assert view["grad_norm"] > 0

    event_files = list(paths.tensorboard.glob("events.out.tfevents.*"))
    assert event_files and event_files[0].stat().st_size > 0


def test_early_stop_ends_completed_with_its_reason_and_resume_says_so(tmp_path, corpus):
    home = tmp_path / "h"
    home.mkdir()
    run_cli("train", "--foreground", *TINY, "--dataset", str(corpus), "--max-steps", "500",
            "--name", "flat", "--lr", "1e-9", "--early-stop-patience", "2", "--eval-interval",
            "5", "--set", "train.early_stop_min_delta=0.01", "--sample", "0", home=home,
            check=True)
    run_id = _only_run(home)
    shown = run_cli("status", run_id, home=home, check=True).stdout
    assert ("status:     completed (early stop: val loss did not improve for 2 evaluations "
            "(best ") in shown
    assert "step 15/500" in shown
    again = run_cli("resume", "flat", home=home)
    assert again.returncode == 2
    assert "model flat already ended at step 15 (early stop:" in again.stderr
    assert "--more-epochs" in again.stderr


def test_tensorboard_without_its_package_is_one_line_naming_the_extra(tmp_path, corpus,
                                                                       monkeypatch):
    home = tmp_path / "h"
    home.mkdir()
    shadow_package(monkeypatch, "tensorboard", tmp_path / "site")
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--tensorboard", home=home)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --tensorboard needs the tensorboard package, which is not installed",
        "hint: pip install 'llm-trainer[tensorboard]'"]
    assert RunStore(home).run_ids() == []
    assert not (home / "checkpoints").exists() or not any((home / "checkpoints").iterdir())


def test_train_help_lists_the_new_options(tmp_path):
    text = run_cli("train", "--help", home=tmp_path, check=True).stdout
    for flag in ("--early-stop-patience", "--sample-interval", "--sample-prompt",
                 "--on-anomaly", "--tensorboard"):
        assert flag in text, flag
