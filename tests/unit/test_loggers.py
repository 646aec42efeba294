"""The experiment loggers (training.loggers): the interface driven in-process, each backend
writing its real files (TensorBoard event files, the CSV file, a W&B offline run, an MLflow
file store), and a model's curve staying one line across a resume."""

from __future__ import annotations

import glob
import struct
from pathlib import Path

import pytest

from llm_trainer.config import RunConfig, load_config
from llm_trainer.errors import ConfigError, LLMTrainerError
from llm_trainer.store.checkpoints import resolve_checkpoint
from llm_trainer.store.records import InitFrom
from llm_trainer.training.events import EvalDone, Progress, StartInfo
from llm_trainer.training.loggers import (
    CsvLogger,
    ExperimentLoggers,
    Logger,
    LoggerRun,
    MlflowLogger,
    TensorBoardLogger,
    WandbLogger,
)
from tests.helpers import wait_for

# ============================================================================ helpers


def _run(home: Path, run_id: str, lines: list[str] | None = None) -> LoggerRun:
    run_dir = home / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (home / "checkpoints" / "m").mkdir(parents=True, exist_ok=True)
    return LoggerRun(home=home, run_id=run_id, run_dir=run_dir, model_name="m",
                     model_dir=home / "checkpoints" / "m", config={"train": {"lr": 0.001}},
                     start_step=0, say=(lines.append if lines is not None else print))


def _start_info(step: int) -> StartInfo:
    from llm_trainer.training.events import DatasetInfo

    return StartInfo(device={"selected": "cpu"}, precision="fp32", parameters=1,
                     architecture={}, tokenizer={}, dataset=DatasetInfo(
                         spec="x", fingerprint="f", train_tokens=1, val_tokens=1,
                         hold_out=False, separator=None, cache="", shards=1),
                     steps_per_epoch=100, tokens_per_step=1, global_batch=1, world_size=1,
                     start_step=step, total_steps=100, optimizer="adamw", compiled=False,
                     config={"train": {"lr": 0.001}}, startup_s=0.0)


def _progress(step: int, loss: float) -> Progress:
    return Progress(step=step, total_steps=100, epoch=0.1, loss=loss, lr=1e-3, grad_norm=1.0,
                    tokens_per_s=100.0, train_time_s=1.0, elapsed_s=1.0, eta_seconds=1.0,
                    finish_at=None, step_time_s=0.1)


def _eval(step: int, loss: float) -> EvalDone:
    return EvalDone(step=step, epoch=0.1, val_loss=loss, perplexity=2.0, best_val_loss=loss,
                    seconds=0.1)


class _Result:  # what on_end reads of a TrainingResult
    def __init__(self, status: str) -> None:
        self.status = status


def _life(callback: ExperimentLoggers, start: int, steps: range, *, end: str = "paused"
          ) -> dict:
    """One run of the loggers: start at ``start``, a train point at each step (an eval at
    each multiple of 10), the end; returns the state a checkpoint would hold."""
    callback.on_start(None, _start_info(start))
    for step in steps:
        callback.on_progress(None, _progress(step, 10.0 / step))
        if step % 10 == 0:
            callback.on_eval(None, _eval(step, 20.0 / step))
    state = callback.state_dict()
    callback.on_end(None, _Result(end))
    return state


def _again(loggers: list[Logger], run: LoggerRun, state: dict) -> ExperimentLoggers:
    """The callback of the next run, loaded from a checkpoint's state (as the trainer does)."""
    callback = ExperimentLoggers(loggers, run)
    callback.load_state_dict(state)
    return callback


# ============================================================================ config


def test_runtime_loggers_are_checked_and_tensorboard_flag_joins_them():
    cfg = RunConfig().replace(**{"runtime.loggers": "[csv, wandb]", "runtime.tensorboard": True})
    assert cfg.runtime.active_loggers() == ("csv", "wandb", "tensorboard")
    assert RunConfig().replace(**{"runtime.loggers": "[]"}).runtime.active_loggers() == ()
    assert RunConfig().runtime.active_loggers() == ()
    both = RunConfig().replace(**{"runtime.loggers": ["tensorboard"], "runtime.tensorboard": 1})
    assert both.runtime.active_loggers() == ("tensorboard",)
    with pytest.raises(ConfigError) as err:
        RunConfig().replace(**{"runtime.loggers": "[csv, neptune]"})
    assert str(err.value) == "runtime.loggers: no logger named 'neptune'"
    assert err.value.hint == "allowed: tensorboard, csv, wandb, mlflow"


# ============================================================================ CSV


def _csv_rows(home: Path) -> list[list[str]]:
    import csv

    with open(home / "checkpoints" / "m" / "metrics.csv", newline="") as f:
        return list(csv.reader(f))


def test_csv_is_one_file_per_model_with_its_header_once_across_a_resume(tmp_path):
    first = ExperimentLoggers([CsvLogger()], _run(tmp_path, "r1"))
    state = _life(first, 0, range(5, 25, 5))
    assert state["ids"] == {"csv": "metrics.csv"}
    second = _again([CsvLogger()], _run(tmp_path, "r2"), state)
    _life(second, 20, range(25, 45, 5), end="completed")
    rows = _csv_rows(tmp_path)
    assert rows[0] == ["step", "time", "run_id", "train/loss", "train/lr", "train/tokens_per_s",
                       "train/grad_norm", "val/loss", "val/perplexity"]
    assert sum(r[0] == "step" for r in rows) == 1
    train = [(int(r[0]), r[2]) for r in rows[1:] if r[3]]
    assert train == [(5, "r1"), (10, "r1"), (15, "r1"), (20, "r1"), (25, "r2"), (30, "r2"),
                     (35, "r2"), (40, "r2")]
    evals = [int(r[0]) for r in rows[1:] if r[7]]
    assert evals == [10, 20, 30, 40]
    assert float(next(r for r in rows if r[0] == "40" and r[3])[3]) == pytest.approx(0.25)


def test_csv_resumed_from_an_older_step_replaces_the_rows_past_it(tmp_path):
    """A run killed at step 30 after its checkpoint at 20: the resume re-trains 21..30, and
    the file holds each step once, the new values."""
    state = _life(ExperimentLoggers([CsvLogger()], _run(tmp_path, "r1")), 0, range(5, 35, 5))
    path = tmp_path / "checkpoints" / "m" / "metrics.csv"
    with open(path, "a") as f:
        f.write("35,17")  # a line a crash cut short
    _life(_again([CsvLogger()], _run(tmp_path, "r2"), state), 20, range(25, 45, 5))
    rows = _csv_rows(tmp_path)[1:]
    train = [(int(r[0]), r[2]) for r in rows if r[3]]
    assert train == [(5, "r1"), (10, "r1"), (15, "r1"), (20, "r1"), (25, "r2"), (30, "r2"),
                     (35, "r2"), (40, "r2")]
    assert path.read_text().endswith("\n") and "35,17" not in path.read_text().splitlines()


# ============================================================================ the callback


class ForwardOnly(Logger):
    """A backend that, like W&B and MLflow, only goes forward and knows what it holds."""

    kind = "wandb"  # a forward-only kind

    def __init__(self, holds: int = -1, fail_at: int | None = None) -> None:
        self.holds, self.fail_at, self.sent = holds, fail_at, []

    def start(self, run, resume_id):
        return resume_id or "run-1"

    def last_step(self):
        return self.holds

    def log(self, step, scalars):
        if step == self.fail_at:
            raise ConnectionError("server went away\nmore detail")
        self.sent.append((step, *sorted(scalars)))


def test_a_forward_only_logger_never_gets_a_step_it_holds_again(tmp_path):
    first = ForwardOnly()
    state = _life(ExperimentLoggers([first], _run(tmp_path, "r1")), 0, range(5, 25, 5))
    assert state == {"ids": {"wandb": "run-1"}, "high": {"wandb": 20}}
    # the previous run logged up to 30 (then was killed); the checkpoint it resumes is at 20
    second = ForwardOnly(holds=30)
    callback = _again([second], _run(tmp_path, "r2"), state)
    _life(callback, 20, range(25, 45, 5))
    assert callback.ids == {"wandb": "run-1"}  # the same run, continued
    assert [s[0] for s in second.sent] == [35, 40, 40]  # train 35, train 40, val 40
    assert second.sent[-1] == (40, "val/loss", "val/perplexity")


def test_a_logger_that_fails_mid_run_is_turned_off_with_one_line(tmp_path):
    lines: list[str] = []
    failing, csv_logger = ForwardOnly(fail_at=10), CsvLogger()
    _life(ExperimentLoggers([failing, csv_logger], _run(tmp_path, "r1", lines)), 0,
          range(5, 25, 5))
    assert [s[0] for s in failing.sent] == [5]
    assert ("wandb: logging failed (ConnectionError: server went away); wandb logging is off "
            "for the rest of this run") in lines
    assert [int(r[0]) for r in _csv_rows(tmp_path)[1:] if r[3]] == [5, 10, 15, 20]


def test_a_logger_that_cannot_start_fails_the_run_in_one_line(tmp_path):
    class Refuses(ForwardOnly):
        def start(self, run, resume_id):
            raise RuntimeError("api_key not configured (no-tty)\ntraceback...")

    callback = ExperimentLoggers([CsvLogger(), Refuses()], _run(tmp_path, "r1"))
    with pytest.raises(LLMTrainerError) as err:
        callback.on_start(None, _start_info(0))
    assert str(err.value) == ("runtime.loggers wandb: could not start (api_key not configured "
                              "(no-tty))")
    assert callback.started == []


# ============================================================================ TensorBoard


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.slow  # imports tensorboard
def test_tensorboard_resume_writes_into_the_same_run_folder_as_one_curve(tmp_path):
    """Today's split: each run wrote its own runs/<id>/tensorboard/. Now the resume writes a
    new event file into the first run's folder, and a resume from an older step than the
    last one logged replaces what was logged past it (purge_step)."""
    state = _life(ExperimentLoggers([TensorBoardLogger()], _run(tmp_path, "r1")), 0,
                  range(5, 35, 5))  # logged to 30; say the last checkpoint was at 20
    assert state["ids"] == {"tensorboard": "r1"}
    _life(_again([TensorBoardLogger()], _run(tmp_path, "r2"), state), 20, range(25, 45, 5))
    folder = tmp_path / "runs" / "r1" / "tensorboard"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    assert not (tmp_path / "runs" / "r2" / "tensorboard").exists()
    loss = _scalars(folder, "train/loss")
    assert [s for s, _ in loss] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [s for s, _ in _scalars(folder, "val/loss")] == [10, 20, 30, 40]


@pytest.mark.slow  # imports tensorboard
def test_tensorboard_whose_first_run_folder_is_gone_starts_in_this_run(tmp_path):
    lines: list[str] = []
    callback = _again([TensorBoardLogger()], _run(tmp_path, "r2", lines),
                      {"ids": {"tensorboard": "pruned"}})
    _life(callback, 20, range(25, 35, 5))
    assert callback.ids == {"tensorboard": "r2"}
    assert [s for s, _ in _scalars(tmp_path / "runs" / "r2" / "tensorboard",
                                   "train/loss")] == [25, 30]
    assert ("tensorboard: the folder of run pruned is gone; this run's curve starts a new "
            "TensorBoard run") in lines


# ============================================================================ W&B (offline)


def _wandb_history(path: str) -> tuple[str, list[tuple[int, dict]]]:
    """The run id and the history rows of a W&B offline run file (.wandb: LevelDB-log
    framing of protobuf records, as ``wandb sync`` reads them)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    pos, pending, records = 7, b"", []  # a 7-byte header: ":W&B", magic, version
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            records.append(pending)
            pending = b""
    run_id, history = "", []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "run":
            run_id = record.run.run_id
        elif record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            history.append((record.history.step.num, items))
    return run_id, history


@pytest.mark.slow  # wandb starts its service process (a few seconds)
def test_wandb_offline_resume_continues_the_same_run_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # in the dev extra: CI runs this
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "test-loggers")
    state = _life(ExperimentLoggers([WandbLogger()], _run(tmp_path, "r1")), 0,
                  range(5, 25, 5))
    run_id = state["ids"]["wandb"]
    _life(_again([WandbLogger()], _run(tmp_path, "r2"), state), 20, range(25, 45, 5),
          end="completed")
    files = [sorted(glob.glob(str(tmp_path / "runs" / r / "wandb" / "offline-run-*" /
                                  "run-*.wandb"))) for r in ("r1", "r2")]
    assert [len(f) for f in files] == [1, 1]
    # wandb's service process writes the file; finish() can return before its last records
    def complete(path: str) -> bool:
        try:
            run_id, history = _wandb_history(path)
        except Exception:  # a record still being written
            return False
        return bool(run_id) and len(history) == 4  # 4 steps a run (val shares their rows)

    wait_for(lambda: all(complete(f[0]) for f in files), timeout=20)
    (id1, h1), (id2, h2) = _wandb_history(files[0][0]), _wandb_history(files[1][0])
    assert id1 == id2 == run_id and files[1][0].endswith(f"run-{run_id}.wandb")
    steps = [s for s, items in h1 + h2 if "train/loss" in items]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40]
    last = next(items for s, items in h2 if s == 40 and "train/loss" in items)
    assert float(last["train/loss"]) == pytest.approx(0.25)
    assert any("val/loss" in items for s, items in h2 if s == 40)


# ============================================================================ MLflow (file store)


@pytest.mark.slow  # imports mlflow (a few seconds)
def test_mlflow_file_store_resume_continues_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")  # in the dev extra: CI runs this
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the logger sets by default
    state = _life(ExperimentLoggers([MlflowLogger()], _run(tmp_path, "r1")), 0,
                  range(5, 35, 5))  # logged to 30; the checkpoint resumed is at 20
    run_id = state["ids"]["mlflow"]
    state20 = {**state, "high": {"mlflow": 20}}
    callback = _again([MlflowLogger()], _run(tmp_path, "r2"), state20)
    _life(callback, 20, range(25, 45, 5), end="completed")
    assert callback.ids == {"mlflow": run_id}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [5, 10, 15, 20, 25, 30, 35, 40]  # each once
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [10, 20, 30, 40]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "m"
    assert run.data.params["train.lr"] == "0.001"
    (experiment,) = [e for e in client.search_experiments() if e.name == "llm-trainer"]
    assert len(client.search_runs([experiment.experiment_id])) == 1


# ============================================================================ real training


def _cfg(corpus, **extra):
    values = {"data.dataset": str(corpus), "train.max_steps": 40, "train.eval_interval": 10,
              "train.log_interval": 5, "train.warmup_steps": 5, "runtime.num_threads": 1,
              **extra}
    return load_config(preset="tiny", overrides=values)


def _train(home, corpus, run_id, *callbacks, model_id="m-1", cfg=None, **job):
    """The trainer in-process with the TensorBoard and CSV loggers, as the worker runs it."""
    from llm_trainer.training.parts import TrainingJob
    from llm_trainer.training.trainer import train

    loggers = ExperimentLoggers([TensorBoardLogger(), CsvLogger()], _run(home, run_id))
    return train(TrainingJob(config=cfg or _cfg(corpus), home=home,
                             model_dir=home / "checkpoints" / "m", run_id=run_id,
                             extra_state={"model_id": model_id}, **job),
                 [loggers, *callbacks])


def _train_steps(home) -> list[tuple[int, str]]:
    return [(int(r[0]), r[2]) for r in _csv_rows(home)[1:] if r[3]]


@pytest.mark.slow  # two short trainings and tensorboard
def test_training_resumed_from_an_older_checkpoint_keeps_one_curve(home, corpus):
    """In-process training through the trainer: paused at 30 (checkpoints 20 and 30), then
    resumed from step 20 explicitly: TensorBoard and CSV hold each step once, the resumed
    run's values past 20."""
    from tests.helpers import Flag, Recorder

    def fit(run_id, *callbacks, **job):
        return _train(home, corpus, run_id, *callbacks, **job)

    flag = Flag()
    paused = fit("r1", Recorder(stop_after=30, flag=flag), stop=flag)
    assert paused.status == "paused" and paused.step == 30
    older = resolve_checkpoint(home / "checkpoints" / "m", "step-00000020").path
    rec = Recorder()
    done = fit("r2", rec, init=InitFrom(older))
    assert done.status == "completed" and done.step == 40
    folder = home / "runs" / "r1" / "tensorboard"
    loss = dict(_scalars(folder, "train/loss"))
    assert sorted(loss) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert loss[25] == pytest.approx(rec.progress[0]["loss"], rel=1e-6)  # the resumed run's
    rows = [r for r in _csv_rows(home)[1:] if r[3]]
    assert [(int(r[0]), r[2]) for r in rows] == [(5, "r1"), (10, "r1"), (15, "r1"),
                                                 (20, "r1"), (25, "r2"), (30, "r2"),
                                                 (35, "r2"), (40, "r2")]


@pytest.mark.slow  # a short training and tensorboard
def test_a_rollback_replaces_the_steps_it_trains_again(home, corpus, monkeypatch):
    """A spike at 25 rolls back to the checkpoint at 20: steps 21..25 are trained again, and
    TensorBoard and CSV show them once, with the values after the rollback."""
    from tests.helpers import Recorder

    monkeypatch.setenv("LLM_TRAINER_TEST_ANOMALY", "spike@25")
    rec = Recorder()
    done = _train(home, corpus, "r1", rec, cfg=_cfg(corpus, **{"train.spike_window": 5}))
    assert done.status == "completed" and [a["action"] for a in rec.anomalies] == ["rollback"]
    loss = dict(_scalars(home / "runs" / "r1" / "tensorboard", "train/loss"))
    assert sorted(loss) == [5, 10, 15, 20, 25, 30, 35, 40]
    after = [p["loss"] for p in rec.progress if p["step"] == 25][-1]
    assert loss[25] == pytest.approx(after, rel=1e-6) and loss[25] < 100  # not the spike
    assert [s for s, _ in _train_steps(home)] == [5, 10, 15, 20, 25, 30, 35, 40]


@pytest.mark.slow  # two short trainings and tensorboard
def test_a_model_trained_further_continues_its_curve_another_model_starts_its_own(home,
                                                                                corpus):
    from llm_trainer.store.records import InitMode

    _train(home, corpus, "r1", cfg=_cfg(corpus, **{"train.max_steps": 20}))
    ckpt = resolve_checkpoint(home / "checkpoints" / "m", "latest").path
    more = _train(home, corpus, "r2", cfg=_cfg(corpus, **{"train.max_steps": 10}),
                  init=InitFrom(ckpt, InitMode.CONTINUE))
    assert more.step == 30
    assert not (home / "runs" / "r2" / "tensorboard").exists()
    folder = home / "runs" / "r1" / "tensorboard"
    assert [s for s, _ in _scalars(folder, "train/loss")] == [5, 10, 15, 20, 25, 30]
    assert _train_steps(home)[-2:] == [(25, "r2"), (30, "r2")]
    # the same checkpoint continued as another model (its id differs): a new curve
    _train(home, corpus, "r3", cfg=_cfg(corpus, **{"train.max_steps": 5}), model_id="m-2",
           init=InitFrom(ckpt, InitMode.CONTINUE))
    assert [s for s, _ in _scalars(home / "runs" / "r3" / "tensorboard", "train/loss")] == [25]
