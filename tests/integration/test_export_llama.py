"""--format hf for every architecture option: rope/rmsnorm/swiglu models as transformers'
LlamaForCausalLM (Qwen3ForCausalLM with qk_norm), GPT-2 ones as GPT2LMHeadModel, tied and
untied, each loaded back with from_pretrained and compared logit for logit with ours; the
combinations no Hugging Face class represents, and every non-GPT-2 block for GGUF, refused
in one line before anything is written. Tiny in-process checkpoints: no training."""

from __future__ import annotations

import json

import pytest
import torch

from llm_trainer.errors import UsageError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape

LLAMA = dict(pos="rope", norm="rmsnorm", activation="swiglu")


def checkpoint(root, name: str, **options):
    """A checkpoint of a tiny model whose every weight (norms, biases) is away from its init."""
    from llm_trainer.checkpoint_io import read_checkpoint, save_checkpoint
    from llm_trainer.config import RunConfig
    from llm_trainer.data.tokenizer import TextTokenizer

    tok = TextTokenizer.build_byte()
    shape = ModelShape(**(dict(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2,
                             n_embd=32) | options))
    torch.manual_seed(0)
    model = GPT(shape)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_checkpoint(root / "checkpoints" / name, model=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                           trainer_state={"step": 1, "schedule": {}}, config=RunConfig(),
                           shape=shape, tokenizer=tok, step=1, epoch=0.1, val_loss=None)
    return read_checkpoint(path)


CASES = {
    "llama-tied-bias": ("LlamaForCausalLM", dict(**LLAMA, bias=True)),
    "llama-untied": ("LlamaForCausalLM", dict(**LLAMA, bias=False, tie_embeddings=False,
                                              rope_theta=500.0)),
    "qwen3-untied": ("Qwen3ForCausalLM", dict(**LLAMA, qk_norm=True, bias=False,
                                              tie_embeddings=False)),
    "qwen3-tied": ("Qwen3ForCausalLM", dict(**LLAMA, qk_norm=True, bias=False)),
    # grouped-query attention, another MLP width and norm eps (heads of 8)
    "llama-gqa": ("LlamaForCausalLM", dict(**LLAMA, bias=False, n_head=4, n_kv_head=2,
                                           mlp_width=80, norm_eps=1e-6)),
    # heads wider than n_embd / n_head: q_dim 64 for n_embd 32, one key/value head
    "qwen3-gqa-wide-heads": ("Qwen3ForCausalLM", dict(**LLAMA, qk_norm=True, bias=False,
                                                      n_head=4, n_kv_head=1, head_size=16)),
    "gpt2": ("GPT2LMHeadModel", {}),
    "gpt2-inner-eps": ("GPT2LMHeadModel", dict(mlp_width=48, norm_eps=1e-6)),
    "gpt2-untied-gelu-nobias": ("GPT2LMHeadModel", dict(activation="gelu", bias=False,
                                                        tie_embeddings=False)),
}


FAST_CASES = ("gpt2",)  # the rest: slow (the fast suite's 30 s budget)


@pytest.mark.parametrize("case", [c if c in FAST_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in CASES])
def test_hf_export_loads_in_transformers_with_our_logits(tmp_path, case):
    transformers = pytest.importorskip("transformers")
    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.export import export

    cls, options = CASES[case]
    ckpt = checkpoint(tmp_path, case, **options)
    out = export(ckpt, tmp_path / "hf", "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [cls]
    assert config["tie_word_embeddings"] == ckpt.shape.tie_embeddings
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert type(hf).__name__ == cls
    if cls != "GPT2LMHeadModel":
        assert config["intermediate_size"] == ckpt.shape.mlp_hidden
        assert hf.config.rms_norm_eps == ckpt.shape.norm_eps
        assert hf.config.num_key_value_heads == ckpt.shape.kv_heads
        assert hf.model.rotary_emb.inv_freq[1].item() == pytest.approx(
            1 / ckpt.shape.rope_theta ** (2 / ckpt.shape.head_dim))
    else:
        assert hf.config.layer_norm_epsilon == ckpt.shape.norm_eps
        assert hf.transformer.h[0].mlp.c_fc.nf == ckpt.shape.mlp_hidden
    tied = hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    assert tied == ckpt.shape.tie_embeddings
    ours = load_model(ckpt).eval()
    x = torch.randint(0, ckpt.shape.vocab_size, (2, 16))
    with torch.no_grad():
        diff = (hf(x).logits - ours(x)[0]).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize(("options", "named", "nearest"), [
    (dict(pos="rope", norm="rmsnorm", activation="relu2"), "activation relu2", "Llama"),
    (dict(norm="rmsnorm"), "norm rmsnorm", "GPT-2"),
    (dict(qk_norm=True), "qk_norm true", "GPT-2"),
    (dict(**LLAMA, qk_norm=True, bias=True), "bias true", "Qwen3"),
    (dict(pos="rope", activation="swiglu"), "norm layernorm", "Llama"),
    (dict(n_head=4, n_kv_head=2), "n_kv_head 2", "GPT-2"),
    (dict(head_size=8), "head_size 8", "GPT-2"),
])
def test_hf_export_refuses_what_no_class_represents_in_one_line(tmp_path, options, named,
                                                               nearest):
    from llm_trainer.inference.export import export

    ckpt = checkpoint(tmp_path, "odd", **options)
    out = tmp_path / "hf"
    with pytest.raises(UsageError) as err:
        export(ckpt, out, "hf")
    message = str(err.value)
    assert "\n" not in message and "\n" not in err.value.hint
    assert named in message and f"fit {nearest}" in message and "Llama (pos rope" in message
    assert "--format safetensors" in err.value.hint
    assert not out.exists()


@pytest.mark.parametrize("options", [dict(pos="rope"), dict(norm="rmsnorm", bias=False),
                                     dict(qk_norm=True), dict(activation="relu2"),
                                     dict(activation="swiglu"), LLAMA,
                                     dict(n_head=4, n_kv_head=1)])
@pytest.mark.parametrize("fmt", ["gguf", "ollama"])
def test_gguf_refuses_every_block_but_gpt2s_in_one_line(tmp_path, options, fmt):
    from llm_trainer.inference import gguf_export

    ckpt = checkpoint(tmp_path, "odd", **options)
    out = tmp_path / ("m.gguf" if fmt == "gguf" else "m")
    write = gguf_export.export_gguf if fmt == "gguf" else gguf_export.export_ollama
    with pytest.raises(UsageError) as err:
        write(ckpt, out)
    message = str(err.value)
    assert "\n" not in message and "\n" not in err.value.hint
    assert "llama.cpp's gpt2 architecture" in message
    assert all(f"{k} {v}" in message for k, v in options.items() if k in ("pos", "norm"))
    if options == LLAMA:
        assert "--format hf (as Llama)" in err.value.hint
    assert not out.exists()


def test_gguf_writes_an_untied_head_as_output(tmp_path):
    pytest.importorskip("gguf")
    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.gguf_export import gguf_tensors

    ckpt = checkpoint(tmp_path, "untied", tie_embeddings=False)
    tensors = gguf_tensors(ckpt)
    model = load_model(ckpt)
    assert torch.equal(torch.from_numpy(tensors["output.weight"]), model.lm_head.weight)
    assert torch.equal(torch.from_numpy(tensors["token_embd.weight"]),
                       model.transformer.wte.weight)
    assert "lm_head.weight" not in tensors
