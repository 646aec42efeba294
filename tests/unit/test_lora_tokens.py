"""LoRA on chat data: the embedding rows a chat template added (its markers) train with the
adapters, through peft's Trainable Tokens, and every way a LoRA model is saved, loaded,
merged and resumed keeps them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from llm_trainer.checkpoint_io import load_base, load_model, read_checkpoint
from llm_trainer.config import load_config
from llm_trainer.data.chat import IM_END, IM_START
from llm_trainer.model.gpt import GPT
from llm_trainer.model.hf_import import inspect_hf_folder
from llm_trainer.model.lora import (
    adapter_state_dict,
    apply_lora,
    freeze_layers,
    load_adapters,
    merge,
    settings_of,
)
from llm_trainer.model.shape import ModelShape
from llm_trainer.store.checkpoints import resolve_checkpoint
from llm_trainer.store.records import InitFrom, InitMode
from llm_trainer.training.parts import TrainingJob
from llm_trainer.training.trainer import train
from tests.helpers import Flag, Recorder, corpus_text, make_hf_gpt2

OLD, NEW = 20, [20, 21]  # a 20-token model that gained two chat markers
SETTINGS = {"r": 2, "alpha": 4.0, "dropout": 0.0, "targets": ["c_attn"], "tokens": NEW}


def grown_model(tied: bool) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelShape(vocab_size=OLD, block_size=16, n_layer=1, n_head=2, n_embd=8,
                           tie_embeddings=tied))
    model.grow_vocab(OLD + len(NEW))
    return model


def trained(model: GPT, steps: int = 5) -> GPT:
    """A few AdamW steps on a sequence that uses both markers, in and out."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.tensor([[20, 1, 2, 21, 3, 20, 4, 21]])
    y = torch.tensor([[1, 2, 21, 3, 20, 4, 21, 5]])
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "own-head"])
def test_lora_trains_the_added_rows_only_and_keeps_them_through_save_load_and_merge(tied):
    before = grown_model(tied)
    emb0, head0 = before.transformer.wte.weight.clone(), before.lm_head.weight.clone()
    assert torch.equal(emb0[20], emb0[21])  # both markers start at the same mean row
    model = trained(apply_lora(grown_model(tied), SETTINGS))
    assert settings_of(model) == SETTINGS  # what a checkpoint records, so it rebuilds the same

    state = adapter_state_dict(model)
    token_keys = sorted(k for k in state if "trainable_tokens" in k)
    # a tied head shares the embedding's rows (saved once); an own head has rows of its own
    assert token_keys == (["transformer.wte.token_adapter.trainable_tokens_delta"] if tied else
                          ["lm_head.token_adapter.trainable_tokens_delta",
                           "transformer.wte.token_adapter.trainable_tokens_delta"])
    assert all(v.shape == (len(NEW), 8) for k, v in state.items() if k in token_keys)

    x = torch.tensor([[3, 20, 5, 21, 1]])
    with torch.no_grad():
        logits = model(x)[0]
    # the head tells the markers apart: a tied head reads the trained rows, not the mean
    assert not torch.allclose(logits[..., 20], logits[..., 21])

    # a fresh base with the same settings and the saved adapters computes the same
    again = apply_lora(grown_model(tied), SETTINGS)
    load_adapters(again, state)
    with torch.no_grad():
        assert torch.equal(again.eval()(x)[0], logits)

    # merged: plain modules again, the trained rows written in, the same logits
    merged = merge(again)
    assert sorted(merged.state_dict()) == sorted(GPT(merged.shape).state_dict())
    assert (merged.lm_head.weight is merged.transformer.wte.weight) == tied
    with torch.no_grad():
        assert torch.allclose(merged(x)[0], logits, atol=1e-6)
    emb, head = merged.transformer.wte.weight, merged.lm_head.weight
    assert torch.equal(emb[:OLD], emb0[:OLD]) and torch.equal(head[:OLD], head0[:OLD])
    for w, w0 in ((emb, emb0), (head, head0)):
        assert not torch.allclose(w[20], w[21])  # trained apart
        assert not torch.allclose(w[20], w0[20]) and not torch.allclose(w[21], w0[21])


def test_lora_without_added_tokens_is_unchanged():
    settings = {k: v for k, v in SETTINGS.items() if k != "tokens"}
    model = apply_lora(grown_model(True), settings)
    assert settings_of(model) == settings  # no "tokens" key: older checkpoints read the same
    assert not any("trainable_tokens" in k for k in adapter_state_dict(model))
    assert not model.transformer.wte.weight.requires_grad
    assert not hasattr(model, "config") and not hasattr(model, "_tied_weights_keys")


def test_frozen_layers_leave_the_added_rows_training():
    model = apply_lora(grown_model(True), SETTINGS)
    freeze_layers(model, 1)
    training = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert training == ["transformer.wte.token_adapter.trainable_tokens_delta.default"]


def test_the_added_rows_get_no_weight_decay_like_the_rest_of_the_embedding():
    from llm_trainer.training.optim import build_optimizer

    model = apply_lora(grown_model(True), SETTINGS)
    opt, _ = build_optimizer(model, load_config(preset="tiny"), "cpu")
    rows = model.transformer.wte.token_adapter.trainable_tokens_delta["default"]
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed and all(p is not rows for p in decayed)
    assert any(p is rows for g in opt.param_groups for p in g["params"])


def _chats(path, n: int) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            word = "abcdefgh"[: 3 + i % 5]
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": f"reverse {word}"},
                {"role": "assistant", "content": word[::-1]}]}) + "\n")


@pytest.mark.slow
def test_a_lora_run_on_chat_data_trains_the_markers_and_resumes_bitwise(tmp_path, home):
    folder = make_hf_gpt2(tmp_path / "gpt2", corpus_text(20_000))  # no chat template
    _chats(tmp_path / "chats.jsonl", 300)
    src = inspect_hf_folder(f"hf:{folder}")
    values = {**{f"model.{k}": v for k, v in src.arch.items()}, "model.block_size": 32,
              "data.dataset": str(tmp_path / "chats.jsonl"), "data.tokenizer": str(src.tokenizer),
              "finetune.init_from": src.spec, "finetune.lora_r": 4, "finetune.lora_alpha": 8,
              "train.max_steps": 12, "train.eval_interval": 6, "train.log_interval": 3,
              "train.lr": 1e-2, "train.batch_size": 4}
    cfg = load_config(preset="tiny", overrides=values)
    init = InitFrom(src.path, InitMode.IMPORT)
    rec = Recorder()
    straight = train(TrainingJob(config=cfg, home=home, model_dir=home / "a", init=init), [rec])
    assert straight.status == "completed"
    flag = Flag()
    paused = train(TrainingJob(config=cfg, home=home, model_dir=home / "b", init=init,
                               stop=flag), [Recorder(stop_after=6, flag=flag)])
    assert paused.status == "paused"
    resumed = train(TrainingJob(config=cfg, home=home, model_dir=home / "b", init=InitFrom(
        resolve_checkpoint(home / "b", "latest").path)), [Recorder()])
    assert resumed.status == "completed" and resumed.step == 12

    ckpt = read_checkpoint(resolve_checkpoint(home / "a", "latest").path)
    start, end = (ckpt.tokenizer.tok.token_to_id(t) for t in (IM_START, IM_END))
    assert src.vocab_size == 300 and sorted((start, end)) == [300, 301]  # added at the end
    assert ckpt.lora["tokens"] == [300, 301]  # config.json records them
    a, b = (load_file(str(resolve_checkpoint(home / m, "latest").path / "adapter.safetensors"))
            for m in ("a", "b"))
    assert a.keys() == b.keys() and "transformer.wte.token_adapter.trainable_tokens_delta" in a
    for name in a:
        assert torch.equal(a[name], b[name]), name  # the rows resume exactly too

    base = load_base(home / "a" / "base")[0].transformer.wte.weight
    assert torch.equal(base[300], base[301])  # the base keeps the mean rows
    merged = load_model(ckpt)  # generation and export
    emb = merged.transformer.wte.weight
    assert torch.equal(emb[:300], base[:300])  # nothing else of the embedding moved
    assert not torch.allclose(emb[300], emb[301])
    assert not torch.allclose(emb[300], base[300]) and not torch.allclose(emb[301], base[301])
    assert merged.lm_head.weight is emb  # the tied head sees the trained rows
    ids = torch.tensor([[start, 40, 50, end, start, 60]])
    with torch.no_grad():
        apart = load_model(ckpt, merged=False).eval()(ids)[0]
        assert torch.allclose(merged.eval()(ids)[0], apart, atol=1e-5)


def test_markers_in_a_padded_embedding_train_too(tmp_path, home):
    """Embedding rows beyond the folder's tokens (padded to a multiple): the markers take
    two of those rows without the embedding growing, and still train with the adapters."""
    folder = make_hf_gpt2(tmp_path / "gpt2", corpus_text(20_000), pad_vocab=20)
    _chats(tmp_path / "chats.jsonl", 100)
    src = inspect_hf_folder(f"hf:{folder}")
    cfg = load_config(preset="tiny", overrides={
        **{f"model.{k}": v for k, v in src.arch.items()}, "model.block_size": 32,
        "data.dataset": str(tmp_path / "chats.jsonl"), "data.tokenizer": str(src.tokenizer),
        "finetune.init_from": src.spec, "finetune.lora_r": 2, "train.max_steps": 3,
        "train.eval_interval": 3, "train.lr": 1e-2, "train.batch_size": 4})
    train(TrainingJob(config=cfg, home=home, model_dir=home / "p",
                      init=InitFrom(src.path, InitMode.IMPORT)), [Recorder()])
    ckpt = read_checkpoint(resolve_checkpoint(home / "p", "latest").path)
    assert ckpt.shape.vocab_size == 320 and ckpt.lora["tokens"] == [300, 301]
    emb = load_model(ckpt).transformer.wte.weight
    base = load_base(home / "p" / "base")[0].transformer.wte.weight
    assert not torch.equal(emb[300:302], base[300:302])
    assert torch.equal(emb[:300], base[:300]) and torch.equal(emb[302:], base[302:])
