"""Trainer callbacks in-process on a tiny model: TrainState, early stopping, samples, the
anomaly guard's rollback, TensorBoard."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from llm_trainer.config import load_config
from llm_trainer.data.batches import DataPosition
from llm_trainer.errors import TrainingError
from llm_trainer.inference.samples import Sampler
from llm_trainer.store.checkpoints import list_checkpoints, resolve_checkpoint
from llm_trainer.store.records import InitFrom
from llm_trainer.training.parts import TrainingJob
from llm_trainer.training.schedule import LRSchedule
from llm_trainer.training.state import TrainState
from llm_trainer.training.trainer import train
from tests.helpers import Flag, Recorder


def _cfg(corpus, **extra):
    values = {"data.dataset": str(corpus), "train.max_steps": 40, "train.eval_interval": 10,
              "train.log_interval": 1, "model.dropout": 0.1, "train.warmup_steps": 5,
              **extra}
    return load_config(preset="tiny", overrides=values)


def _fit(cfg, home, name, *callbacks, **job):
    """Train as the worker does: with the sampler when the config asks for samples."""
    sampler = Sampler.from_config(cfg.train)
    return train(TrainingJob(config=cfg, home=home, model_dir=home / name, **job),
                 [*callbacks, *([sampler] if sampler else [])])


def _resume(cfg, home, name, *callbacks, **init):
    ckpt = resolve_checkpoint(home / name, "latest").path
    return _fit(cfg, home, name, *callbacks, init=InitFrom(ckpt, **init))


def _weights(model_dir):
    return load_file(str(resolve_checkpoint(model_dir, "latest").path / "model.safetensors"))


def _trainer_json(model_dir):
    return json.loads((resolve_checkpoint(model_dir, "latest").path / "trainer.json").read_text())


def _assert_same_weights(a_dir, b_dir):
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ============================================================================ TrainState


def test_train_state_round_trips_through_its_state_dict():
    state = TrainState(step=123, position=DataPosition(2, 48),
                       schedule=LRSchedule(500, 10, 3e-3, 3e-4, "cosine", origin=100),
                       val_loss=2.5, best_val_loss=2.25, best_val_step=100, last_eval_step=120,
                       finished="early stop: ...",
                       callbacks={"early_stop": {"best": 2.25, "best_step": 100,
                                                 "bad_evals": 2},
                                  "anomaly": {"rollbacks": 1, "history": [{"step": 90}]}})
    text = json.dumps(state.state_dict())  # what trainer.json holds
    back = TrainState.from_state_dict(json.loads(text))
    assert back == state
    assert back.schedule(130) == state.schedule(130)


def test_train_state_reads_a_trainer_json_from_before_callbacks():
    old = {"step": 40, "epoch": 0.5, "data_position": {"epoch": 0, "cursor": 320},
           "schedule": {"total_steps": 40, "warmup_steps": 10, "max_lr": 0.003,
                        "min_lr": 0.0003, "kind": "cosine", "origin": 0},
           "val_loss": 3.1, "best_val_loss": 3.0, "scaler": None}
    state = TrainState.from_state_dict(old)
    assert (state.step, state.position, state.best_val_loss) == (40, DataPosition(0, 320), 3.0)
    assert state.callbacks == {} and state.finished is None and state.last_eval_step == -1


def test_checkpoints_hold_the_whole_train_state(home, corpus):
    cfg = _cfg(corpus, **{"train.early_stop_patience": 5, "train.max_steps": 20})
    _fit(cfg, home, "m")
    saved = _trainer_json(home / "m")
    state = TrainState.from_state_dict(saved)
    assert state.step == 20 and state.last_eval_step == 20
    assert set(state.callbacks) == {"early_stop", "anomaly"}
    assert state.callbacks["early_stop"]["best_step"] in (10, 20)
    assert len(state.callbacks["anomaly"]["window"]) == 20  # the losses of 20 good steps


# ============================================================================ early stopping


def _plateau(corpus, **extra):
    # a learning rate this small moves the val loss by far less than min_delta: a plateau
    return _cfg(corpus, **{"train.lr": 1e-9, "train.max_steps": 200, "train.eval_interval": 5,
                           "train.early_stop_patience": 3, "train.early_stop_min_delta": 0.01,
                           **extra})


def test_early_stopping_ends_a_plateaued_run_at_the_exact_step(home, corpus):
    rec = Recorder()
    result = _fit(_plateau(corpus), home, "m", rec)
    # eval at 5 sets the best; 10, 15 and 20 do not improve by 0.01 -> stop at 20
    assert result.status == "completed" and result.step == 20
    assert [e["step"] for e in rec.evals] == [5, 10, 15, 20]
    assert result.reason.startswith("early stop: val loss did not improve for 3 evaluations "
                                    "(best ") and result.reason.endswith("at step 5)")
    assert _trainer_json(home / "m")["finished"] == result.reason
    # the checkpoint with the lowest val loss is kept
    best = min(rec.evals, key=lambda e: e["val_loss"])["step"]
    assert best in [c.step for c in list_checkpoints(home / "m")]


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_early_stop_counter_survives_stop_and_resume(home, corpus):
    flag = Flag()
    paused = _fit(_plateau(corpus), home, "m", Recorder(stop_after=10, flag=flag), stop=flag)
    assert paused.status == "paused" and paused.step == 10  # evals at 5 (best) and 10 (1 bad)
    result = _resume(_plateau(corpus), home, "m")
    assert result.step == 20 and result.reason.startswith("early stop")  # not 30


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_more_epochs_after_an_early_stop_gives_patience_anew(home, corpus):
    cfg = _plateau(corpus, **{"train.max_steps": None, "train.epochs": 1})
    _fit(cfg, home, "m")
    more = _resume(cfg, home, "m", more_epochs=1)
    assert more.step == 40 and more.reason.startswith("early stop")  # 3 more evaluations


# ============================================================================ samples


@pytest.mark.slow  # two runs (the fast suite's 30 s budget; samples: also end to end)
def test_samples_are_written_at_their_steps_and_do_not_change_training(home, corpus):
    plain = _cfg(corpus)
    sampled = _cfg(corpus, **{"train.sample_interval": 10, "train.sample_tokens": 12,
                              "train.sample_prompts": ["The ", ""]})
    _fit(plain, home, "plain")
    rec = Recorder()
    _fit(sampled, home, "straight", rec)
    assert [(s["step"], s["prompt"]) for s in rec.samples] == [
        (step, prompt) for step in (10, 20, 30, 40) for prompt in ("The ", "")]
    assert all(s["text"] for s in rec.samples)

    flag = Flag()
    first = Recorder(stop_after=15, flag=flag)
    assert _fit(sampled, home, "resumed", first, stop=flag).step == 15
    second = Recorder()
    assert _resume(sampled, home, "resumed", second).step == 40
    assert [s["step"] for s in first.samples + second.samples][::2] == [10, 20, 30, 40]
    # the same text at the same step: the sampler's randomness is seeded by (seed, step)
    assert [s["text"] for s in first.samples + second.samples] == [s["text"]
                                                                   for s in rec.samples]
    _assert_same_weights(home / "plain", home / "straight")
    _assert_same_weights(home / "straight", home / "resumed")


# ============================================================================ anomalies


def test_an_injected_spike_rolls_back_with_a_lower_lr_and_the_run_completes(home, corpus,
                                                                            monkeypatch):
    monkeypatch.setenv("LLM_TRAINER_TEST_ANOMALY", "spike@25")
    cfg = _cfg(corpus, **{"train.spike_window": 5})
    rec = Recorder()
    result = _fit(cfg, home, "m", rec)
    assert result.status == "completed" and result.step == 40
    assert len(rec.anomalies) == 1
    event = rec.anomalies[0]
    assert event["step"] == 25 and event["action"] == "rollback" and event["rollbacks"] == 1
    assert "loss spike" in event["reason"]
    assert any("rolled back to step-00000020" in line for line in rec.lines)

    full = LRSchedule(40, 5, cfg.train.lr, cfg.train.lr * cfg.train.min_lr_ratio)
    spike_at = next(i for i, p in enumerate(rec.progress) if p["step"] == 25)
    after = rec.progress[spike_at + 1:]
    assert [p["step"] for p in after] == list(range(21, 41))  # back to 20, then on to 40
    for p in after:
        assert p["lr"] == pytest.approx(0.5 * full(p["step"] - 1))
    for p in rec.progress[:spike_at + 1]:
        assert p["lr"] == pytest.approx(full(p["step"] - 1))
    saved = _trainer_json(home / "m")
    assert saved["callbacks"]["anomaly"]["rollbacks"] == 1
    assert saved["schedule"]["max_lr"] == pytest.approx(0.5 * cfg.train.lr)
    assert all(torch.isfinite(t).all() for t in _weights(home / "m").values())


def test_exhausted_rollbacks_fail_the_run_and_keep_the_last_good_checkpoint(home, corpus,
                                                                            monkeypatch):
    monkeypatch.setenv("LLM_TRAINER_TEST_ANOMALY", "nan@25x99")
    cfg = _cfg(corpus, **{"train.max_rollbacks": 2})
    rec = Recorder()
    with pytest.raises(TrainingError, match=r"training failed at step 25: the loss became nan, "
                                            r"after 2 rollbacks \(train.max_rollbacks\); the "
                                            r"last good checkpoint \(step-00000020\) is intact"):
        _fit(cfg, home, "m", rec)
    assert [e["action"] for e in rec.anomalies] == ["rollback", "rollback", "exhausted"]
    ckpts = list_checkpoints(home / "m", verify=True)
    assert [c.step for c in ckpts] == [10, 20] and all(c.valid for c in ckpts)
    weights = load_file(str(ckpts[-1].path / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_an_anomaly_before_any_checkpoint_stops_with_a_plain_message(home, corpus,
                                                                     monkeypatch):
    monkeypatch.setenv("LLM_TRAINER_TEST_ANOMALY", "nan@3")
    rec = Recorder()
    with pytest.raises(TrainingError, match="loss became nan at step 3; no checkpoint was "
                                            "written in this run"):
        _fit(_cfg(corpus), home, "m", rec)
    assert rec.anomalies[0]["action"] == "stop"


def test_spikes_are_measured_against_the_median_after_warm_up():
    from llm_trainer.config import TrainConfig
    from llm_trainer.training.callbacks import AnomalyGuard, StepStats

    guard = AnomalyGuard(TrainConfig(spike_factor=2.0, spike_window=10), warmup_steps=3,
                         gradients_may_overflow=False)
    for step, loss in enumerate([9.0, 8.0, 20.0, 4.0, 4.2, 3.9, 4.1, 4.0], start=1):
        assert guard.check(StepStats(step, 1e-3, loss, 1.0)) is None  # warm-up jumps pass
    assert "loss spike: 8.5000" in guard.check(StepStats(9, 1e-3, 8.5, 1.0))
    assert guard.check(StepStats(10, 1e-3, 7.9, 1.0)) is None  # under 2x the median 4.1
    assert "gradient norm became inf" in guard.check(StepStats(11, 1e-3, 4.0, math.inf))
    assert guard.check(StepStats(12, 1e-3, None, None)) is None  # not read this step


# ============================================================================ TensorBoard


@pytest.mark.slow  # imports tensorboard (the fast suite's 30 s budget)
def test_tensorboard_event_files_hold_the_scalars_at_their_steps(home, corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from llm_trainer.training.loggers import ExperimentLoggers, LoggerRun, TensorBoardLogger

    cfg = _cfg(corpus, **{"train.log_interval": 5, "train.eval_interval": 20,
                          "train.sample_interval": 20, "train.sample_tokens": 8})
    rec = Recorder()
    tb = tmp_path / "runs" / "r1" / "tensorboard"
    _fit(cfg, home, "m", rec, ExperimentLoggers([TensorBoardLogger()], LoggerRun(
        home=tmp_path, run_id="r1", run_dir=tb.parent, model_name="m", model_dir=home / "m",
        config={}, start_step=0)))
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm"):
        assert tag in tags
        assert [e.step for e in events.Scalars(tag)] == [5, 10, 15, 20, 25, 30, 35, 40]
    losses = {e.step: e.value for e in events.Scalars("train/loss")}
    assert losses[40] == pytest.approx(rec.progress[-1]["loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("val/loss")] == [20, 40]
    assert [e.step for e in events.Scalars("val/perplexity")] == [20, 40]
    assert events.Scalars("val/loss")[-1].value == pytest.approx(rec.evals[-1]["val_loss"],
                                                                 rel=1e-6)
    assert all(e.value > 0 for e in events.Scalars("train/grad_norm"))
    assert [e.step for e in events.Tensors("samples/text_summary")] == [20, 40]
