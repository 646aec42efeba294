"""train.optimizer: which weights Muon trains, each group's LR, Muon's state in checkpoints,
exact resume, and the refusals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from llm_trainer.app.planner import LaunchPlanner, check_optimizer
from llm_trainer.checkpoint_io import load_model, load_optimizer_state, read_checkpoint
from llm_trainer.config import load_config
from llm_trainer.errors import UsageError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from llm_trainer.store.checkpoints import resolve_checkpoint
from llm_trainer.store.records import InitFrom
from llm_trainer.training.estimate import memory_estimate
from llm_trainer.training.optim import (
    MuonWithAdamW,
    build_optimizer,
    load_optimizer,
    muon_param_count,
    split_params,
)
from llm_trainer.training.parts import TrainingJob, build_parts
from llm_trainer.training.trainer import Trainer, train
from tests.helpers import Flag, Recorder, corpus_text

MUON = {"train.optimizer": "muon", "train.muon_lr": 0.02, "train.embed_lr": 0.006}


def _cfg(corpus, **extra):
    values = {"data.dataset": str(corpus), "train.max_steps": 8, "train.eval_interval": 0,
              "train.log_interval": 1, "train.warmup_steps": 2, "model.dropout": 0.1,
              **MUON, **extra}
    return load_config(preset="tiny", overrides=values)


def _tiny(**shape) -> GPT:
    return GPT(ModelShape(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, **shape))


def _names(model, params) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}  # a tied tensor: its first name
    return {by_id[id(p)] for p in params}


# ============================================================================ what goes where
@pytest.mark.parametrize("tied", [True, False])
def test_muon_takes_the_block_matrices_and_adamw_the_rest(tied):
    model = _tiny(tie_embeddings=tied)
    split = split_params(model)
    muon = _names(model, split.muon)
    assert muon == {n for n, p in model.named_parameters()
                    if n.startswith("transformer.h.") and p.dim() == 2}
    assert any("attn.c_attn" in n for n in muon) and any("mlp.c_fc" in n for n in muon)
    assert _names(model, split.embed) == {"transformer.wte.weight"}
    assert _names(model, split.head_decay) == (set() if tied else {"lm_head.weight"})
    assert split.decay == []
    assert "transformer.wpe.weight" in _names(model, split.no_decay)
    assert all(p.dim() == 1 for p in split.no_decay if p is not model.transformer.wpe.weight)
    every = [*split.muon, *split.head_decay, *split.embed, *split.decay, *split.no_decay]
    assert len({id(p) for p in every}) == len(every) == len(list(model.parameters()))

    opt, kind = build_optimizer(model, load_config(preset="tiny", overrides=MUON), "cpu")
    assert isinstance(opt, MuonWithAdamW) and kind.startswith("muon (")
    assert muon_param_count(opt) == sum(p.numel() for p in split.muon)
    head = model.lm_head.weight  # the untied head is decayed, the embedding never
    decayed = {id(p) for g in opt.adamw.param_groups if g["weight_decay"] for p in g["params"]}
    assert (id(head) in decayed) is not tied and id(model.transformer.wte.weight) not in decayed


def test_the_split_goes_by_identity_not_by_names():
    """A plain module with an untied head named like a block weight, and frozen weights."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(10, 4), h=nn.ModuleList([nn.Linear(4, 4)])))
            self.lm_head = self.transformer.h[0]  # the "head" is the block's own layer

    net = Net()
    net.transformer.h[0].bias.requires_grad_(False)
    split = split_params(net)
    assert split.muon == [] and split.head_decay == [net.lm_head.weight]
    assert split.embed == [net.transformer.wte.weight] and split.no_decay == []


def test_adamw_is_what_it_was():
    model = _tiny()
    opt, kind = build_optimizer(model, load_config(preset="tiny"), "cpu")
    assert type(opt) is torch.optim.AdamW and kind in ("adamw (fused)", "adamw (foreach)")
    decay, no_decay = opt.param_groups
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all("lr_scale" not in g for g in opt.param_groups)
    assert _names(model, decay["params"]) == {n for n, p in model.named_parameters()
                                              if p.dim() == 2 and "wte" not in n
                                              and "wpe" not in n}
    assert "transformer.wte.weight" in _names(model, no_decay["params"])


def test_muon_memory_estimate_counts_one_buffer_per_weight():
    kw = dict(params=1000, trainable=1000, batch=1, seq=8, n_layer=1, n_embd=8, n_head=1,
              vocab=10, precision="fp32", dropout=0.0, device_type="cpu")
    assert memory_estimate(**kw).optimizer == 8000
    assert memory_estimate(**kw, muon=600).optimizer == 600 * 4 + 400 * 8


# ============================================================================ refusals
def test_muon_with_lora_is_refused_in_one_line():
    cfg = load_config(preset="tiny", overrides={**MUON, "finetune.lora_r": 4})
    with pytest.raises(UsageError) as err:
        check_optimizer(cfg)
    assert "\n" not in str(err.value) and "LoRA" in str(err.value)
    check_optimizer(cfg.replace(**{"train.optimizer": "adamw"}))


def test_resume_refuses_another_optimizer_in_one_line(tmp_path):
    saved = load_config(preset="tiny").to_dict()  # an adamw checkpoint
    admin = SimpleNamespace(checkpoint_config=lambda info: saved)
    planner = LaunchPlanner(tmp_path, runs=None, admin=admin)
    rec, info = SimpleNamespace(name="m"), SimpleNamespace(path=tmp_path / "step-1")

    def plan(overrides, exact):
        return planner._from_checkpoint(rec, info, overrides, what="checkpoint step-1 of m",
                                        hint="", exact=exact)

    with pytest.raises(UsageError) as err:
        plan({"train.optimizer": "muon"}, exact=True)
    assert str(err.value) == ("checkpoint step-1 of m was trained with train.optimizer adamw: "
                              "a resume cannot change it to muon")
    assert "train --model m" in err.value.hint
    assert plan({"train.optimizer": "muon"}, exact=False).train.optimizer == "muon"  # continue


def test_optimizer_state_of_the_other_kind_is_refused():
    model = _tiny()
    adamw, _ = build_optimizer(model, load_config(preset="tiny"), "cpu")
    muon, _ = build_optimizer(model, load_config(preset="tiny", overrides=MUON), "cpu")
    with pytest.raises(UsageError, match="train.optimizer adamw: a resume cannot change it to "
                                         "muon"):
        load_optimizer(muon, adamw.state_dict(), where="checkpoint step-00000005")
    with pytest.raises(UsageError, match="train.optimizer muon: .* to adamw"):
        load_optimizer(adamw, muon.state_dict(), where="checkpoint step-00000005")


# ============================================================================ in training
def test_fp16_grad_scaler_steps_the_pair():
    model = _tiny()
    opt, _ = build_optimizer(model, load_config(preset="tiny", overrides=MUON), "cpu")
    for g in opt.param_groups:
        g["lr"] = 0.01
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _, loss = model(torch.randint(0, 40, (2, 8)), torch.randint(0, 40, (2, 8)))
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert len(opt.muon.state) == len(opt.muon.param_groups[0]["params"])


@pytest.fixture(scope="module")
def paused(tmp_path_factory):
    """A muon run paused at step 4 of 8 (its checkpoint), and the uninterrupted run."""
    home = tmp_path_factory.mktemp("muon")
    corpus = home / "corpus.txt"
    corpus.write_text(corpus_text(), encoding="utf-8")
    cfg = _cfg(corpus)
    straight = Recorder()
    result = train(TrainingJob(config=cfg, home=home, model_dir=home / "a"),
                     [straight])
    assert result.status == "completed" and result.step == 8
    flag = Flag()
    paused = train(TrainingJob(config=cfg, home=home, model_dir=home / "b", stop=flag),
                     [Recorder(stop_after=4, flag=flag)])
    assert paused.status == "paused" and paused.step == 4
    return SimpleNamespace(home=home, cfg=cfg, straight=straight,
                           ckpt=resolve_checkpoint(home / "b", "latest").path)


def test_a_muon_run_learns_and_logs_its_optimizer(paused):
    losses = [p["loss"] for p in paused.straight.progress]
    assert losses[-1] < losses[0] - 0.5, losses  # char-level: ~3.7 -> well below in 8 steps
    line = next(m for m in paused.straight.lines if m.startswith("optimizer: "))
    assert line.startswith("optimizer: muon (8 block matrices") and "+ adamw (" in line
    assert paused.straight.info["optimizer"].startswith("muon")


def test_muon_resume_equals_an_uninterrupted_run_bitwise(paused):
    home = paused.home
    resumed = train(TrainingJob(config=paused.cfg, home=home, model_dir=home / "c",
                                  init=InitFrom(paused.ckpt)), [Recorder()])
    assert resumed.status == "completed" and resumed.step == 8
    a = load_file(str(resolve_checkpoint(home / "a", "latest").path / "model.safetensors"))
    c = load_file(str(resolve_checkpoint(home / "c", "latest").path / "model.safetensors"))
    assert a.keys() == c.keys()
    for name in a:
        assert torch.equal(a[name], c[name]), name  # Muon momentum, AdamW moments: exact


def test_muon_state_round_trips_through_a_checkpoint(paused):
    saved = load_optimizer_state(read_checkpoint(paused.ckpt), "cpu")
    assert saved["kind"] == "muon" and saved["muon"]["state"] and saved["adamw"]["state"]
    model = load_model(read_checkpoint(paused.ckpt), "cpu")
    opt, _ = build_optimizer(model, paused.cfg, "cpu")
    load_optimizer(opt, saved, where="test")
    again = opt.state_dict()
    for part in ("muon", "adamw"):
        assert again[part]["param_groups"] == saved[part]["param_groups"]
        for i, state in saved[part]["state"].items():
            for key, value in state.items():
                assert torch.equal(again[part]["state"][i][key], value), (part, i, key)
    buffers = [s["momentum_buffer"] for s in opt.muon.state.values()]
    assert len(buffers) == 8 and all(b.abs().sum() > 0 for b in buffers)


def test_each_group_follows_the_schedule_at_its_own_peak_through_a_rollback(paused):
    cfg = paused.cfg
    parts = build_parts(TrainingJob(config=cfg, home=paused.home,
                                    model_dir=paused.home / "d", init=InitFrom(paused.ckpt)))
    trainer = Trainer(parts)
    t = cfg.train
    peaks = {"muon": t.muon_lr, "embed": t.embed_lr, "rest": t.lr}

    def check(factor):
        step = parts.state.step
        parts.train_step(read=True)
        base = parts.state.schedule(step)
        assert base == pytest.approx(factor * paused.straight.progress[step]["lr"])
        opt = parts.optimizer
        wte = parts.model.transformer.wte.weight
        for group in opt.param_groups:
            kind = ("muon" if any(group is g for g in opt.muon.param_groups) else
                    "embed" if any(p is wte for p in group["params"]) else "rest")
            assert group["lr"] == pytest.approx(base * peaks[kind] / t.lr), kind

    check(1.0)
    check(1.0)
    trainer.rollback()  # back to step 4 with the peak lowered by rollback_lr_factor
    assert parts.state.step == 4
    check(t.rollback_lr_factor)
