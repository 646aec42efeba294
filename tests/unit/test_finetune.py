"""Importing a Hugging Face GPT-2 folder, LoRA adapters and frozen layers, in-process."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from llm_trainer.checkpoint_io import load_model, read_checkpoint
from llm_trainer.config import load_config
from llm_trainer.errors import UsageError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.hf_import import check_complete, inspect_hf_folder, load_hf_weights
from llm_trainer.model.shape import ModelShape
from llm_trainer.store.checkpoints import resolve_checkpoint
from llm_trainer.store.records import InitFrom, InitMode
from llm_trainer.training.parts import TrainingJob
from llm_trainer.training.trainer import train
from tests.helpers import Flag, Recorder, corpus_text, imported_model, make_hf_gpt2


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return make_hf_gpt2(tmp_path_factory.mktemp("gpt2"), corpus_text(30_000))


imported = imported_model


def hf_logits(folder, ids):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return hf(ids).logits


def test_imported_weights_compute_what_transformers_computes(tmp_path):
    text = corpus_text(20_000)
    folder = make_hf_gpt2(tmp_path / "st", text, seed=3)
    src = inspect_hf_folder(f"hf:{folder}")
    assert src.arch == {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64,
                        "bias": True, "activation": "gelu_tanh", "pos": "learned",
                        "rope_theta": 10000.0, "norm": "layernorm", "qk_norm": False,
                        "tie_embeddings": True, "n_kv_head": None, "head_size": None,
                        "mlp_width": None, "norm_eps": 1e-5}
    ids = torch.randint(0, src.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    expected = hf_logits(folder, ids)
    with torch.no_grad():
        ours = imported(src)(ids)[0]
    assert torch.allclose(ours, expected, atol=1e-5)
    # the same weights as an old-style pytorch_model.bin (loaded with weights_only)
    old = make_hf_gpt2(tmp_path / "bin", text, seed=3, weights="bin")
    assert (old / "pytorch_model.bin").is_file() and not (old / "model.safetensors").exists()
    with torch.no_grad():
        from_bin = imported(inspect_hf_folder(f"hf:{old}"))(ids)[0]
    assert torch.equal(from_bin, ours)
    # a shorter context keeps the first rows of the position table: same logits
    with torch.no_grad():
        short = imported(src, block_size=24)(ids)[0]
    assert torch.allclose(short, ours, atol=1e-6)


def test_an_incomplete_weights_file_is_refused(hf_folder, tmp_path):
    src = inspect_hf_folder(f"hf:{hf_folder}")
    model = GPT(ModelShape(vocab_size=src.vocab_size, **src.arch))
    sd = load_hf_weights(src, 64)
    del sd["transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(UsageError, match="lacks transformer.h.1.mlp.c_fc.weight"):
        check_complete(sd, model.state_dict(), src)


def text_loss(model, src, corpus) -> float:
    """Mean next-token loss on the corpus's last 8,000 characters (its validation split)."""
    from llm_trainer.data.tokenizer import TextTokenizer

    ids = TextTokenizer.from_file(src.tokenizer).encode(corpus.read_text()[-8000:])
    n = (len(ids) - 1) // 32 * 32
    x = torch.tensor(ids[:n]).view(-1, 32)
    y = torch.tensor(ids[1:n + 1]).view(-1, 32)
    with torch.no_grad():
        return model.eval()(x, y)[1].item()


def _cfg(src, corpus, **extra):
    values = {**{f"model.{k}": v for k, v in src.arch.items()}, "model.block_size": 32,
              "data.dataset": str(corpus), "data.tokenizer": str(src.tokenizer),
              "finetune.init_from": src.spec, "train.max_steps": 30, "train.eval_interval": 10,
              "train.log_interval": 5, "train.lr": 1e-3, "train.batch_size": 4, **extra}
    return load_config(preset="tiny", overrides=values)


@pytest.mark.slow
def test_lora_trains_adapters_only_and_resumes_bitwise(hf_folder, home, corpus):
    src = inspect_hf_folder(f"hf:{hf_folder}")
    cfg = _cfg(src, corpus, **{"finetune.lora_r": 4, "finetune.lora_alpha": 8,
                               "finetune.lora_dropout": 0.1, "train.lr": 1e-2})
    init = InitFrom(src.path, InitMode.IMPORT)
    straight = train(TrainingJob(config=cfg, home=home, model_dir=home / "a", init=init),
                       [Recorder()])
    assert straight.status == "completed" and straight.step == 30
    flag = Flag()
    paused = train(TrainingJob(config=cfg, home=home, model_dir=home / "b", init=init,
                                 stop=flag), [Recorder(stop_after=15, flag=flag)])
    assert paused.status == "paused" and paused.step == 15
    resumed = train(TrainingJob(config=cfg, home=home, model_dir=home / "b", init=InitFrom(
        resolve_checkpoint(home / "b", "latest").path)), [Recorder()])
    assert resumed.status == "completed" and resumed.step == 30

    last = {m: resolve_checkpoint(home / m, "latest").path for m in ("a", "b")}
    assert not (last["a"] / "model.safetensors").exists()
    a, b = (load_file(str(last[m] / "adapter.safetensors")) for m in ("a", "b"))
    assert a.keys() == b.keys() and all("lora_" in k for k in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name  # dropout RNG, optimizer, data: all exact
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # the adapters learned

    # the base is the folder's weights, untouched
    base = load_file(str(home / "a" / "base" / "model.safetensors"))
    ref = imported(src, block_size=32).state_dict()
    assert set(base) | {"transformer.wte.weight", "lm_head.weight"} == set(ref)  # tied: once
    for name, value in base.items():
        assert torch.equal(value, ref[name]), name

    # merged (generation, export) computes what base + adapters compute
    ckpt = read_checkpoint(last["a"])
    ids = torch.randint(0, src.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        apart = load_model(ckpt, merged=False).eval()(ids)[0]
        merged = load_model(ckpt).eval()(ids)[0]
        plain = imported(src, block_size=32)(ids)[0]
    assert torch.allclose(apart, merged, atol=1e-5)
    assert not torch.allclose(merged, plain, atol=1e-4)  # the adapters do change the model
    before, after = text_loss(imported(src, 32), src, corpus), text_loss(
        load_model(ckpt), src, corpus)
    assert after < before - 0.05, (before, after)  # and they learned the corpus


@pytest.mark.parametrize("frozen_blocks", [pytest.param(0, marks=pytest.mark.slow), 1])
def test_full_fine_tuning_learns_and_frozen_layers_stay(hf_folder, home, corpus, frozen_blocks):
    src = inspect_hf_folder(f"hf:{hf_folder}")
    cfg = _cfg(src, corpus, **{"finetune.freeze_layers": frozen_blocks,
                               "train.max_steps": 20})
    train(TrainingJob(config=cfg, home=home, model_dir=home / "f",
                        init=InitFrom(src.path, InitMode.IMPORT)), [Recorder()])
    after = load_file(str(resolve_checkpoint(home / "f", "latest").path / "model.safetensors"))
    before = imported(src, block_size=32).state_dict()
    kept = ("transformer.wte", "transformer.wpe", "lm_head",  # lm_head is tied to wte
            *(f"transformer.h.{i}." for i in range(frozen_blocks))) if frozen_blocks else ()
    for name, value in after.items():
        assert torch.equal(value, before[name]) == name.startswith(kept), name
    ckpt = read_checkpoint(resolve_checkpoint(home / "f", "latest").path)
    assert text_loss(load_model(ckpt), src, corpus) < text_loss(imported(src, 32), src,
                                                                corpus) - 0.05


def test_a_padded_embedding_imports_and_resumes(tmp_path, home, corpus):
    """More embedding rows than tokens (GPT-2 variants padded to a multiple of 64)."""
    folder = make_hf_gpt2(tmp_path / "padded", corpus_text(20_000), pad_vocab=20)
    src = inspect_hf_folder(f"hf:{folder}")
    assert src.vocab_size == 320
    cfg = _cfg(src, corpus, **{"train.max_steps": 10})
    first = train(TrainingJob(config=cfg, home=home, model_dir=home / "p",
                                init=InitFrom(src.path, InitMode.IMPORT)), [Recorder()])
    assert first.status == "completed"
    ckpt = read_checkpoint(resolve_checkpoint(home / "p", "latest").path)
    assert ckpt.shape.vocab_size == 320 and ckpt.tokenizer.vocab_size == 300
    more = train(TrainingJob(config=cfg.replace(**{"train.max_steps": 20}), home=home,
                               model_dir=home / "p", init=InitFrom(ckpt.path, InitMode.CONTINUE)),
                   [Recorder()])
    assert more.status == "completed" and more.step == 30  # continue: 20 more


def test_an_imported_tokenizer_without_a_separator_is_kept_as_it_is(tmp_path, home, corpus):
    """The imported embedding has no row for an added <|endoftext|>: the model's tokenizer is
    used unchanged, and its data is the plain text (no separators)."""
    from llm_trainer.data.tokenizer import TextTokenizer

    folder = make_hf_gpt2(tmp_path / "bytes-gpt2", corpus_text(5_000), vocab_size=300)
    TextTokenizer.build_byte(eot=False).save(folder / "tokenizer.json")  # 256 tokens, no EOT
    src = inspect_hf_folder(f"hf:{folder}")
    rec = Recorder()
    result = train(TrainingJob(config=_cfg(src, corpus, **{"train.max_steps": 3}), home=home,
                               model_dir=home / "m", init=InitFrom(src.path, InitMode.IMPORT)),
                   [rec])
    assert result.status == "completed"
    assert rec.info["tokenizer"]["vocab_size"] == 256
    assert rec.info["dataset"]["separator"] is None
