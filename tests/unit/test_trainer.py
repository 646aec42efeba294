"""The training loop in-process, on a tiny model: exactness, epochs, divergence."""

import math

import pytest
import torch
from safetensors.torch import load_file

from llm_trainer.config import load_config
from llm_trainer.errors import TrainingError, UsageError
from llm_trainer.store.checkpoints import list_checkpoints, resolve_checkpoint
from llm_trainer.store.records import InitFrom, InitMode
from llm_trainer.training.parts import TrainingJob
from llm_trainer.training.schedule import LRSchedule
from llm_trainer.training.trainer import train
from tests.helpers import Flag, Recorder


def run_training(job, *callbacks):
    return train(job, list(callbacks))


def _cfg(corpus, **extra):
    values = {"data.dataset": str(corpus), "train.max_steps": 40, "train.eval_interval": 20,
              "train.log_interval": 5, "model.dropout": 0.1, **extra}
    return load_config(preset="tiny", overrides=values)


def _weights(model_dir):
    return load_file(str(resolve_checkpoint(model_dir, "latest").path / "model.safetensors"))


@pytest.mark.parametrize("layout", ["one shard", "many shards, Feistel order"])
def test_pause_and_resume_equals_an_uninterrupted_run_bitwise(home, corpus, layout,
                                                               monkeypatch):
    if layout != "one shard":  # windows span shards; the order is computed per index
        monkeypatch.setenv("LLM_TRAINER_SHARD_TOKENS", "4000")
        monkeypatch.setattr("llm_trainer.data.prepare.TASK_CHARS", 3000)
        monkeypatch.setattr("llm_trainer.data.batches.PERMUTE_IN_MEMORY", 16)
    cfg = _cfg(corpus)
    rec = Recorder()
    straight = run_training(TrainingJob(config=cfg, home=home, model_dir=home / "a"), rec)
    assert straight.status == "completed" and straight.step == 40
    assert (rec.info["dataset"]["shards"] > 5) == (layout != "one shard")

    flag = Flag()
    paused = run_training(TrainingJob(config=cfg, home=home, model_dir=home / "b", stop=flag),
                          Recorder(stop_after=15, flag=flag))
    assert paused.status == "paused" and paused.step == 15
    resumed = run_training(TrainingJob(
        config=cfg, home=home, model_dir=home / "b",
        init=InitFrom(resolve_checkpoint(home / "b", "latest").path)), Recorder())
    assert resumed.status == "completed" and resumed.step == 40

    a, b = _weights(home / "a"), _weights(home / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # dropout RNG, optimizer, data: all exact


@pytest.mark.slow  # a full epoch of real steps
def test_epochs_count_passes_over_the_data(home, corpus):
    cfg = _cfg(corpus, **{"train.max_steps": None, "train.epochs": 2, "train.eval_interval": 0})
    rec = Recorder()
    result = run_training(TrainingJob(config=cfg, home=home, model_dir=home / "m"), rec)
    spe = rec.info["steps_per_epoch"]
    assert result.step == 2 * spe
    assert result.epoch == pytest.approx(2.0)


@pytest.mark.slow  # a full epoch of real steps
def test_more_epochs_trains_exactly_n_more_and_rebuilds_the_schedule(home, corpus):
    cfg = _cfg(corpus, **{"train.max_steps": None, "train.epochs": 1, "train.eval_interval": 0})
    first = Recorder()
    run_training(TrainingJob(config=cfg, home=home, model_dir=home / "m"), first)
    spe = first.info["steps_per_epoch"]
    ckpt = resolve_checkpoint(home / "m", "latest").path
    rec = Recorder()
    result = run_training(TrainingJob(config=cfg, home=home, model_dir=home / "m",
                                      init=InitFrom(ckpt, more_epochs=2)), rec)
    assert result.step == 3 * spe and result.epoch == pytest.approx(3.0)
    expected = LRSchedule(3 * spe, cfg.train.warmup_steps, cfg.train.lr,
                          cfg.train.lr * cfg.train.min_lr_ratio)
    for p in rec.progress:  # the LR of each logged step follows the stretched schedule
        assert p["lr"] == pytest.approx(expected(p["step"] - 1))
    assert rec.progress[0]["lr"] > cfg.train.lr * cfg.train.min_lr_ratio * 1.01


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(home, corpus,
                                                                          monkeypatch):
    from llm_trainer.model import gpt

    real_forward = gpt.GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = real_forward(self, idx, targets, **kw)
        if self.training and targets is not None:
            calls["n"] += 1
            if calls["n"] > 25:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(gpt.GPT, "forward", poisoned)
    cfg = _cfg(corpus)
    cfg = cfg.replace(**{"train.on_anomaly": "stop"})
    with pytest.raises(TrainingError, match=r"loss became nan at step 26; the last good "
                                            r"checkpoint \(step-00000020\) is intact"):
        run_training(TrainingJob(config=cfg, home=home, model_dir=home / "m"), Recorder())
    ckpts = list_checkpoints(home / "m", verify=True)
    assert [c.step for c in ckpts] == [20] and ckpts[0].valid
    weights = load_file(str(ckpts[0].path / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_continue_refuses_a_different_architecture(home, corpus):
    cfg = _cfg(corpus, **{"train.max_steps": 5})
    run_training(TrainingJob(config=cfg, home=home, model_dir=home / "m"), Recorder())
    ckpt = resolve_checkpoint(home / "m", "latest").path
    deeper = cfg.replace(**{"model.n_layer": 3})
    with pytest.raises(UsageError, match="n_layer 2 vs 3"):
        run_training(TrainingJob(config=deeper, home=home, model_dir=home / "m",
                                 init=InitFrom(ckpt, mode=InitMode.CONTINUE)), Recorder())


def test_target_val_loss_stops_early(home, corpus):
    cfg = _cfg(corpus, **{"train.max_steps": 200, "train.eval_interval": 10,
                          "train.target_val_loss": 10.0})
    result = run_training(TrainingJob(config=cfg, home=home, model_dir=home / "m"), Recorder())
    assert result.step == 10 and "target val loss" in result.reason
    assert math.isfinite(result.val_loss)
