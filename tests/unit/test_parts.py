"""The parts of a training run, built and used without a fit: ``build_parts`` (device, data,
plan, model, optimizer, state), one ``train_step``, a change of micro-batch, evaluation, and
a resume restoring what the checkpoint holds. Also the typed launch records (``InitFrom`` in
meta.json, ``TrainingJob.from_meta``) and the epochs / max_steps rule."""

from __future__ import annotations

import json

import pytest
import torch

from llm_trainer.config import TrainConfig, load_config
from llm_trainer.store.records import InitFrom, InitMode, RunMeta
from llm_trainer.store.schema import SchemaError
from llm_trainer.training.parts import TrainingJob, build_parts
from llm_trainer.training.trainer import Trainer


@pytest.fixture
def cfg(corpus):
    return load_config(preset="tiny", overrides={
        "data.dataset": str(corpus), "train.max_steps": 30, "train.batch_size": 4,
        "train.grad_accum": 2, "model.dropout": 0.0, "runtime.device": "cpu",
        "runtime.precision": "fp32"})


def test_build_parts_gives_a_consistent_run_without_training(home, cfg):
    lines = []
    parts = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "m"),
                        log=lines.append)
    assert parts.device.type == "cpu" and parts.precision.name == "fp32"
    assert parts.start is None and parts.state.step == 0 and parts.total_steps == 30
    assert parts.plan.batch_size == 4 and parts.plan.grad_accum == 2
    assert parts.plan.tokens_per_step == 4 * 2 * cfg.model.block_size
    assert parts.shape.vocab_size == parts.tokenizer.vocab_size
    assert parts.params and all(p.requires_grad for p in parts.params)
    assert any(line.startswith("device: ") for line in lines)
    assert any(line.startswith("optimizer: ") for line in lines)
    assert not (home / "m").exists()  # building writes no checkpoint


def test_one_step_moves_the_weights_the_position_and_the_step(home, cfg):
    parts = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "m"))
    before = parts.model.transformer.wte.weight.detach().clone()
    cursor = parts.state.position.cursor
    stats = parts.train_step(read=True)
    assert stats.step == 1 == parts.state.step
    assert stats.loss is not None and stats.loss > 0 and stats.grad_norm > 0
    assert stats.lr == pytest.approx(parts.state.schedule(0))
    assert parts.state.position.cursor == cursor + parts.plan.seqs_per_step
    assert not torch.equal(before, parts.model.transformer.wte.weight)
    assert parts.train_step(read=False).loss is None  # not read: no host sync


def test_a_new_micro_batch_keeps_the_model_and_says_so_in_the_config(home, cfg):
    parts = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "m"))
    other = parts.with_micro_batch(8, 1)
    assert other.model is parts.model and other.optimizer is parts.optimizer
    assert (other.plan.batch_size, other.plan.grad_accum) == (8, 1)
    assert (other.config.train.batch_size, other.config.train.grad_accum) == (8, 1)
    assert other.plan.seqs_per_step == parts.plan.seqs_per_step
    assert other.train_step(read=True).step == 1


def test_evaluate_is_deterministic_and_leaves_train_mode(home, cfg):
    parts = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "m"))
    first, second = parts.evaluate(), parts.evaluate()
    assert first == second and first > 0
    assert parts.model.training


def test_resume_parts_hold_the_checkpoints_state(home, cfg):
    job = TrainingJob(config=cfg, home=home, model_dir=home / "m")
    parts = build_parts(job)
    for _ in range(3):
        parts.train_step(read=False)
    path = Trainer(parts).save()  # a checkpoint of step 3, no fit
    resumed = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "m",
                                      init=InitFrom(path)))
    assert resumed.start is not None and resumed.state.step == 3
    assert resumed.state.position == parts.state.position
    assert resumed.state.schedule == parts.state.schedule
    saved = parts.optimizer.state_dict()["state"]
    again = resumed.optimizer.state_dict()["state"]
    assert saved.keys() == again.keys()
    for i in saved:
        assert torch.equal(saved[i]["exp_avg"], again[i]["exp_avg"])
    fresh = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "m",
                                    init=InitFrom(path, InitMode.CONTINUE)))
    assert fresh.state.step == 3 and fresh.optimizer.state_dict()["state"] == {}
    assert fresh.total_steps == 3 + 30  # a new schedule from the checkpoint's step


def test_init_from_is_typed_in_meta_json_and_reaches_the_job(tmp_path):
    init = InitFrom(tmp_path / "step-10", InitMode.RESUME, more_epochs=2)
    meta = RunMeta(run_id="r1", model={"id": "m1", "name": "a"},
                   config=load_config(preset="tiny").to_dict(), init=init)
    data = json.loads(json.dumps(meta.to_json()))
    assert data["init"] == {"checkpoint": str(tmp_path / "step-10"), "mode": "resume",
                            "more_epochs": 2, "restart_schedule": False, "data_from": None}
    back = RunMeta.from_json(data)
    assert back.init == init and back.init.mode is InitMode.RESUME
    job = TrainingJob.from_meta(back, home=tmp_path, model_dir=tmp_path / "a")
    assert job.init == init and job.resumes and job.run_id == "r1"
    assert job.extra_state == {"model_id": "m1"}
    # an older meta.json (no data_from) reads the same; an unknown mode is refused
    old = {**data, "init": {"checkpoint": "x", "mode": "continue", "more_epochs": None,
                            "restart_schedule": False}}
    assert RunMeta.from_json(old).init.mode is InitMode.CONTINUE
    with pytest.raises(SchemaError, match="unknown init mode 'rewind'"):
        RunMeta.from_json({**data, "init": {"checkpoint": "x", "mode": "rewind"}})


def test_max_steps_wins_over_epochs_and_asked_epochs_clear_it():
    assert TrainConfig(epochs=3, max_steps=None).planned_steps(100) == 300
    assert TrainConfig(epochs=3, max_steps=50).planned_steps(100) == 50
    assert TrainConfig.epochs_clear_max_steps({"train.epochs": 2}) == {
        "train.epochs": 2, "train.max_steps": None}
    both = {"train.epochs": 2, "train.max_steps": 7}
    assert TrainConfig.epochs_clear_max_steps(both) == both


@pytest.mark.slow  # two chat runs built (~4 s)
def test_a_chat_step_is_the_mean_over_its_trained_targets_however_it_is_split(home, tmp_path):
    """Windows of chat data hold different numbers of trained targets: a step of 4 x 2
    micro-batches must train as 8 x 1 (``--batch-size auto`` changes the split), so each
    micro-batch's mean is weighted by its share of the step's targets."""
    import random

    rng = random.Random(0)
    data = tmp_path / "chat.jsonl"
    with open(data, "w") as fh:
        for _ in range(120):
            word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 12)))
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"rev {word}"},
                                              {"role": "assistant",
                                               "content": word[::-1]}]}) + "\n")
    cfg = load_config(preset="tiny", overrides={
        "data.dataset": str(data), "data.tokenizer": "char", "model.block_size": 48,
        "train.max_steps": 5, "train.batch_size": 4, "train.grad_accum": 2,
        "model.dropout": 0.0, "runtime.device": "cpu", "runtime.precision": "fp32"})
    split = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "a"))
    whole = build_parts(TrainingJob(config=cfg, home=home, model_dir=home / "b")
                        ).with_micro_batch(8, 1)
    xb = [split.batches.get(split.state.position, m)[1] for m in range(2)]
    counts = [int((y >= 0).sum()) for y in xb]
    assert counts[0] != counts[1]  # the case that matters: unequal micro-batches
    a, b = split.train_step(read=True), whole.train_step(read=True)
    assert a.tokens == b.tokens == sum(counts)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    for p, q in zip(split.model.parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
