"""`train --dry-run`, `--batch-size auto` and the recorded estimate error, through the real
CLI on a small local corpus."""

from __future__ import annotations

import json

import pytest

from tests.helpers import TINY, dry_run, home_contents, run_cli, train_tiny

JSON_KEYS = {"kind", "model", "notes", "config", "device", "precision", "dataset", "parameters",
             "trainable_parameters", "architecture", "batch_size", "grad_accum",
             "global_batch", "tokens_per_step", "steps_per_epoch", "start_step",
             "total_steps", "steps", "batch_choice", "memory", "time", "profile"}


def _only_run(home):
    [run] = [p for p in (home / "runs").iterdir() if (p / "meta.json").exists()]
    return (json.loads((run / "meta.json").read_text()),
            json.loads((run / "state.json").read_text()))


def test_batch_size_must_be_a_number_or_auto(tmp_path):
    proc = run_cli("train", *TINY, "--batch-size", "many", "--dry-run", home=tmp_path)
    assert proc.returncode == 2
    assert "--batch-size must be a whole number or auto (got 'many')" in proc.stderr
    proc = run_cli("train", *TINY, "--json", home=tmp_path)
    assert proc.returncode == 2 and "--json goes with --dry-run" in proc.stderr


@pytest.mark.slow
def test_dry_run_writes_nothing_and_predicts_the_steps(tmp_path, corpus):
    """A whole epoch (the step count comes from the data), then the real run."""
    args = ("--dataset", str(corpus), "--epochs", "1", "--set", "train.max_steps=null",
            "--set", "train.eval_interval=0")
    est = dry_run(tmp_path, *args)
    assert home_contents(tmp_path, "runs") == [] and home_contents(tmp_path, "checkpoints") == []
    assert set(est) == JSON_KEYS
    assert est["kind"] == "train" and est["start_step"] == 0
    assert est["steps"] == est["total_steps"] == est["steps_per_epoch"] > 0
    assert est["tokens_per_step"] == est["global_batch"] * est["architecture"]["block_size"]
    assert est["dataset"]["train_tokens"] > est["dataset"]["val_tokens"] > 0
    mem = est["memory"]
    assert mem["total"] == sum(mem[k] for k in ("weights", "gradients", "optimizer",
                                                "activations"))
    assert mem["optimizer"] == 2 * mem["weights"] == 8 * est["parameters"]
    t = est["time"]
    assert t["timed_steps"] >= 5 and t["warmup_steps"] == 2 and t["step_time_s"] > 0
    assert t["run_time_s"] >= t["step_time_s"] * est["steps"]
    assert t["epoch_time_s"] == pytest.approx(t["step_time_s"] * est["steps_per_epoch"])

    train_tiny(tmp_path, *args, "--name", "m")
    meta, state = _only_run(tmp_path)
    assert state["status"] == "completed"
    assert state["step"] == state["total_steps"] == est["total_steps"]
    assert meta["steps_per_epoch"] == est["steps_per_epoch"]
    assert meta["parameters"] == est["parameters"]

    # continuing the model and resuming it: estimated from its checkpoint, nothing written
    runs_before = home_contents(tmp_path, "runs")
    ckpts_before = home_contents(tmp_path / "checkpoints", "m")
    cont = dry_run(tmp_path, "--model", "m", "--dataset", str(corpus), "--max-steps", "7")
    assert cont["kind"] == "continue" and cont["model"] == "m"
    assert cont["start_step"] == est["total_steps"]
    assert cont["total_steps"] == est["total_steps"] + 7
    res = dry_run(tmp_path, "resume", "m", "--more-epochs", "1")
    assert res["kind"] == "resume" and res["start_step"] == est["total_steps"]
    assert res["steps"] == est["steps_per_epoch"]
    text = run_cli("train", *TINY, "--dataset", str(corpus), "--max-steps", "9", "--dry-run",
                   home=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "no run or checkpoint written" in text.stdout
    assert "memory (estimate, cpu)" in text.stdout and "time (estimate from " in text.stdout
    assert home_contents(tmp_path, "runs") == runs_before
    assert home_contents(tmp_path / "checkpoints", "m") == ckpts_before


@pytest.mark.slow
def test_batch_size_auto_on_cpu_keeps_the_global_batch_and_records_it(tmp_path, corpus):
    proc = train_tiny(tmp_path, "--dataset", str(corpus), "--max-steps", "10",
                      "--batch-size", "auto", "--grad-accum", "2")
    assert "batch size auto: micro-batch" in proc.stdout
    meta, state = _only_run(tmp_path)
    choice = meta["batch_choice"]
    global_batch = 8 * 2  # the tiny preset's batch_size x --grad-accum
    assert choice["global_batch"] == global_batch
    assert choice["batch_size"] * choice["grad_accum"] == global_batch
    assert choice["method"] == "cpu memory and throughput"
    assert choice["tried"][0]["batch_size"] == global_batch
    cfg = meta["config"]["train"]
    assert (cfg["batch_size"], cfg["grad_accum"]) == (choice["batch_size"],
                                                      choice["grad_accum"])
    assert meta["global_batch"] == global_batch
    assert state["status"] == "completed" and state["step"] == 10


@pytest.mark.slow
def test_auto_batch_in_a_config_file_chooses_the_micro_batch_too(tmp_path, corpus):
    (tmp_path / "mine.yaml").write_text(
        "model: {n_layer: 2, n_head: 2, n_embd: 32, block_size: 32}\n"
        "data: {tokenizer: char}\n"
        "train: {batch_size: 8, grad_accum: 2, auto_batch: true, eval_interval: 0}\n")
    proc = run_cli("train", "--config", str(tmp_path / "mine.yaml"), "--dataset", str(corpus),
                   "--max-steps", "5", "--foreground", "--sample", "0", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "batch size auto: micro-batch" in proc.stdout
    meta, state = _only_run(tmp_path)
    choice, cfg = meta["batch_choice"], meta["config"]["train"]
    assert choice["global_batch"] == 16 == choice["batch_size"] * choice["grad_accum"]
    assert (cfg["batch_size"], cfg["grad_accum"], cfg["auto_batch"]) == (
        choice["batch_size"], choice["grad_accum"], False)  # a resume keeps these numbers
    assert state["status"] == "completed"


@pytest.mark.slow
def test_the_estimate_error_is_recorded_after_a_run(tmp_path, corpus):
    train_tiny(tmp_path, "--dataset", str(corpus), "--max-steps", "20")
    _meta, state = _only_run(tmp_path)
    e = state["estimate"]
    assert e["warmup_steps"] == 2 and 5 <= e["timed_steps"] <= 18 and e["run_steps"] == 20
    assert e["step_time_s"] > 0 and e["train_time_s"] == pytest.approx(e["step_time_s"] * 20)
    assert state["actual_step_time_s"] > 0
    assert state["estimate_error"] == pytest.approx(
        state["actual_step_time_s"] / e["step_time_s"] - 1)
    shown = run_cli("status", _meta["run_id"], home=tmp_path).stdout
    line = next(ln for ln in shown.splitlines() if ln.startswith("step time:"))
    assert f"{e['step_time_s'] * 1000:.1f} ms per step (estimated from its first steps); " \
           f"actual {state['actual_step_time_s'] * 1000:.1f} ms " \
           f"({state['estimate_error']:+.0%})" in line
