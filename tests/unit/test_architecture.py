"""The model's architecture options (model.pos, norm, qk_norm, activation, tie_embeddings):
parameter names and shapes, the KV cache and the one-token decode path against the full
forward for every option value, and the default staying GPT-2's block exactly."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace

import pytest
import torch
import torch.nn.functional as F

from llm_trainer.inference.generate import GenerationSettings, OneTokenStep, TextGenerator
from llm_trainer.model.gpt import GPT, KVCache
from llm_trainer.model.shape import ModelShape, mlp_hidden

TINY = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
# together these cover every value of every option
COMBOS = {
    "default": {},
    "gelu": dict(activation="gelu"),
    "rope": dict(pos="rope"),
    "rmsnorm-nobias": dict(norm="rmsnorm", bias=False),
    "qk_norm": dict(qk_norm=True),
    "relu2-untied": dict(activation="relu2", tie_embeddings=False),
    "llama": dict(pos="rope", norm="rmsnorm", activation="swiglu", tie_embeddings=False),
    "qwen3": dict(pos="rope", norm="rmsnorm", activation="swiglu", qk_norm=True, bias=False,
                  rope_theta=500.0),
    "mixed": dict(pos="rope", activation="relu2", qk_norm=True, tie_embeddings=False),
    # grouped-query attention (1 key/value head for 2 query heads), on GPT-2's block
    "gqa": dict(n_kv_head=1),
    # all the size options: GQA, heads wider than n_embd / n_head, MLP width, norm eps
    "sizes": dict(pos="rope", norm="rmsnorm", activation="swiglu", qk_norm=True, bias=False,
                  n_kv_head=1, head_size=24, mlp_width=40, norm_eps=1e-6),
    "wide-heads-rope": dict(pos="rope", head_size=8, mlp_width=72),
}
# the parameter names and shapes of the GPT-2 block before the options existed
OLD_LAYOUT = {"transformer.wte.weight": (50, 32), "transformer.wpe.weight": (16, 32),
              "transformer.ln_f.weight": (32,), "transformer.ln_f.bias": (32,),
              "lm_head.weight": (50, 32)}
for _i in range(2):
    for _part, _shape in (("ln_1.weight", (32,)), ("ln_1.bias", (32,)),
                          ("attn.c_attn.weight", (96, 32)), ("attn.c_attn.bias", (96,)),
                          ("attn.c_proj.weight", (32, 32)), ("attn.c_proj.bias", (32,)),
                          ("ln_2.weight", (32,)), ("ln_2.bias", (32,)),
                          ("mlp.c_fc.weight", (128, 32)), ("mlp.c_fc.bias", (128,)),
                          ("mlp.c_proj.weight", (32, 128)), ("mlp.c_proj.bias", (32,))):
        OLD_LAYOUT[f"transformer.h.{_i}.{_part}"] = _shape


def model_for(options: dict, seed: int = 0) -> GPT:
    """A tiny model with every parameter (norms and biases too) away from its init, so a
    swapped or missing weight shows in the logits."""
    torch.manual_seed(seed)
    model = GPT(ModelShape(**TINY, **options)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def gpt2_reference(sd: dict[str, torch.Tensor], idx: torch.Tensor, n_head: int,
                   approximate: str) -> torch.Tensor:
    """GPT-2 written out by hand from a state dict: the behaviour the default must keep."""
    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    C = x.shape[-1]
    hd = C // n_head

    def ln(t, name):
        return F.layer_norm(t, (C,), sd[name + ".weight"], sd[name + ".bias"], 1e-5)

    def lin(t, name):
        return t @ sd[name + ".weight"].T + sd[name + ".bias"]

    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})):
        p = f"transformer.h.{i}."
        q, k, v = lin(ln(x, p + "ln_1"), p + "attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(B, T, n_head, hd).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + lin(y, p + "attn.c_proj")
        h = F.gelu(lin(ln(x, p + "ln_2"), p + "mlp.c_fc"), approximate=approximate)
        x = x + lin(h, p + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ sd["transformer.wte.weight"].T


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_an_old_checkpoint_loads_strict_and_computes_gpt2(activation):
    # the architecture dict a checkpoint stored before the options existed
    old_meta = dict(**TINY, dropout=0.0, bias=True, activation=activation)
    shape = ModelShape(**old_meta)
    assert (shape.pos, shape.norm, shape.qk_norm, shape.tie_embeddings, shape.rope_theta) == \
        ("learned", "layernorm", False, True, 10000.0)
    torch.manual_seed(1)
    old_sd = {k: torch.randn(s) * 0.2 for k, s in OLD_LAYOUT.items()}
    old_sd["lm_head.weight"] = old_sd["transformer.wte.weight"]
    model = GPT(shape).eval()
    model.load_state_dict(old_sd, strict=True)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == OLD_LAYOUT
    assert [n for n, _ in model.named_buffers()] == []
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        ours = model(idx)[0]
    ref = gpt2_reference(old_sd, idx, 2, "tanh" if activation == "gelu_tanh" else "none")
    assert (ours - ref).abs().max().item() < 1e-5


def test_architecture_diff_reads_missing_keys_as_the_defaults():
    old = ModelShape.from_stored(dict(**TINY, dropout=0.0, bias=True, activation="gelu_tanh"))
    assert old.diff(ModelShape(**TINY)) == []
    assert old.diff(ModelShape(**TINY, rope_theta=5.0)) == []  # learned
    diff = old.diff(ModelShape(**TINY, pos="rope", qk_norm=True, tie_embeddings=False))
    assert diff == ["pos learned vs rope", "qk_norm False vs True",
                    "tie_embeddings True vs False"]
    rope = ModelShape(**TINY, pos="rope")
    assert rope.diff(replace(rope, rope_theta=5.0)) == ["rope_theta 10000.0 vs 5.0"]
    assert old.diff(ModelShape(**TINY, norm="rmsnorm", activation="swiglu")) == \
        ["activation gelu_tanh vs swiglu", "norm layernorm vs rmsnorm"]
    # comparing configs, a changed rope_theta counts even without rope
    assert old.changes(ModelShape(**TINY, rope_theta=5.0), every_key=True) == ["rope_theta"]


def test_a_stored_shape_round_trips_and_reads_old_keys_as_gpt2():
    shape = ModelShape(**TINY, pos="rope", norm="rmsnorm", activation="swiglu", n_kv_head=2)
    stored = json.loads(json.dumps(shape.to_json()))
    assert list(stored) == [f.name for f in fields(ModelShape)]  # config.json's key order
    assert ModelShape.from_stored(stored) == shape
    old = ModelShape.from_stored(dict(**TINY, dropout=0.0, bias=True, activation="gelu"))
    assert (old.pos, old.norm, old.qk_norm, old.tie_embeddings, old.n_kv_head, old.head_size,
            old.mlp_width, old.norm_eps) == ("learned", "layernorm", False, True, None, None,
                                             None, 1e-5)


def test_describe_words_a_shape_as_models_show_does():
    old = ModelShape.from_stored({"vocab_size": 53, "block_size": 32, "n_layer": 2,
                                  "n_head": 2, "n_embd": 16, "dropout": 0.0, "bias": True,
                                  "activation": "gelu"})
    assert old.describe() == ("2 layers x 16 dims, 2 heads, context 32, vocab 53; "
                              "learned positions, layernorm, gelu, tied head, biases")
    arch = {"vocab_size": 300, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32,
            "bias": False, "activation": "swiglu", "pos": "rope", "norm": "rmsnorm",
            "qk_norm": True, "tie_embeddings": True, "n_kv_head": 2, "head_size": 16,
            "mlp_width": 128, "norm_eps": 1e-6}
    assert ModelShape.from_stored(arch).describe() == (
        "2 layers x 32 dims, 4 heads sharing 2 key/value heads of 16, context 32, vocab 300; "
        "rope, rmsnorm, QK-norm, swiglu, MLP width 128, norm eps 1e-06, tied head, no biases")


def test_the_shape_module_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; import llm_trainer.model.shape, llm_trainer.model.families, "
            "llm_trainer.model.hf_import, llm_trainer.config; "
            "assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_option_parameters_names_and_shapes():
    names = {k: tuple(v.shape) for k, v in GPT(ModelShape(**TINY, **COMBOS["llama"])).state_dict()
             .items()}
    hidden = mlp_hidden(32, "swiglu")
    assert hidden == 96 and mlp_hidden(768, "swiglu") == 2048 and mlp_hidden(128, "swiglu") == 352
    assert mlp_hidden(32, "relu2") == 128
    assert "transformer.wpe.weight" not in names  # rope: no position table
    assert names["transformer.h.0.mlp.c_fc.weight"] == (2 * hidden, 32)  # gate, up fused
    assert names["transformer.h.0.mlp.c_proj.weight"] == (32, hidden)
    assert names["transformer.h.1.ln_1.weight"] == (32,)
    assert not any(k.endswith(("ln_1.bias", "ln_2.bias", "ln_f.bias")) for k in names)  # RMS
    assert names["lm_head.weight"] == (50, 32)
    assert not any("q_norm" in k for k in names)
    qk = GPT(ModelShape(**TINY, qk_norm=True)).state_dict()
    assert qk["transformer.h.1.attn.q_norm.weight"].shape == (16,)  # head_dim
    assert qk["transformer.h.1.attn.k_norm.weight"].shape == (16,)
    # rope tables are buffers, not state: old and new checkpoints hold weights only
    rope = GPT(ModelShape(**TINY, pos="rope"))
    assert set(rope.state_dict()) == set(OLD_LAYOUT) - {"transformer.wpe.weight"}
    assert rope.rope_cos.shape == (16, 1, 16)


def test_untied_head_has_its_own_initialised_weight():
    torch.manual_seed(0)
    model = GPT(ModelShape(**{**TINY, "vocab_size": 400}, tie_embeddings=False))
    head, wte = model.lm_head.weight, model.transformer.wte.weight
    assert head.data_ptr() != wte.data_ptr()
    assert abs(head.std().item() - 0.02) < 0.002 and abs(head.mean().item()) < 0.002
    assert model.num_params(non_embedding=False) - model.num_params() == \
        wte.numel() + model.transformer.wpe.weight.numel()


@pytest.mark.parametrize("name", list(COMBOS))
def test_parameter_count_and_flops(name):
    options = COMBOS[name]
    shape = ModelShape(**TINY, **options)
    model = GPT(shape)
    embeddings = (16 * 32 if shape.pos == "learned" else 0) + \
        (0 if shape.tie_embeddings else 50 * 32)
    assert model.num_params() == model.num_params(non_embedding=False) - embeddings
    assert model.flops_per_token() == 6 * model.num_params() + 12 * 2 * shape.q_dim * 16


def through_the_cache(model: GPT, idx: torch.Tensor, chunk: int, end: int):
    """The logits of ``idx[:, :chunk]`` at once, then of each token up to ``end``, through
    one KV cache (returned, to go on with)."""
    cache = KVCache(model.shape, idx.shape[0], "cpu", torch.float32)
    first, _ = model(idx[:, :chunk], cache=cache)
    rest = [model(idx[:, i:i + 1], cache=cache)[0] for i in range(chunk, end)]
    return torch.cat([first, *rest], dim=1), cache


@pytest.mark.parametrize("name", list(COMBOS))
def test_cache_and_one_token_step_match_the_full_forward(name):
    model = model_for(COMBOS[name])
    idx = torch.randint(0, 50, (1, 16))
    with torch.no_grad():
        full, _ = model(idx)
        cached, cache = through_the_cache(model, idx, 5, 9)  # a chunk, then tokens...
        step = OneTokenStep(model)  # ...and the hand-written decode path
        fast = [step(int(idx[0, i]), cache).view(1, 1, -1) for i in range(9, 16)]
    stepped = torch.cat([cached, *fast], dim=1)
    assert (full - stepped).abs().max().item() < 1e-5
    assert cache.length == 16


@pytest.mark.parametrize("name", ["gqa", "sizes"])
def test_a_batch_through_the_cache_matches_the_full_forward(name):
    model = model_for(COMBOS[name])
    idx = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        full, _ = model(idx)
        cached, _ = through_the_cache(model, idx, 6, 16)
    assert (full - cached).abs().max().item() < 1e-5


def test_grouped_query_attention_without_enable_gqa_is_the_same(monkeypatch):
    """torch < 2.5 has no enable_gqa: the key/value heads are repeated instead."""
    import llm_trainer.model.gpt as gpt

    model = model_for(COMBOS["sizes"])
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        native = model(idx)[0]
        monkeypatch.setattr(gpt, "_SDPA_GQA", False)
        repeated = model(idx)[0]
    assert (native - repeated).abs().max().item() < 1e-6


@pytest.mark.parametrize("name", list(COMBOS))
def test_greedy_with_the_cache_equals_without(name):
    from llm_trainer.data.tokenizer import TextTokenizer

    tok = TextTokenizer.build_byte()
    torch.manual_seed(0)
    model = GPT(ModelShape(**{**TINY, "vocab_size": tok.vocab_size}, **COMBOS[name]))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # peaked logits: no near-ties for argmax
    gen = TextGenerator(model, tok)
    ids, _ = gen.prompt_ids("the water")
    settings = GenerationSettings(max_new_tokens=30, temperature=0.0, top_k=None)  # > context
    cached = list(gen.generate_ids(ids, settings, use_cache=True))
    assert cached == list(gen.generate_ids(ids, settings, use_cache=False))
    assert len(cached) == 30


def test_rope_depends_on_relative_positions_only():
    """With rotary embeddings and no other position signal, attention scores depend on the
    distance between positions: shifting a whole sequence leaves q.k unchanged."""
    from llm_trainer.model.gpt import apply_rope, rope_tables

    shape = ModelShape(**TINY, pos="rope")
    cos, sin = rope_tables(shape)  # (T, 1, hd)
    q, k = torch.randn(1, 16), torch.randn(1, 16)

    def score(i, j):
        return (apply_rope(q, cos[i], sin[i]) * apply_rope(k, cos[j], sin[j])).sum().item()

    assert score(7, 3) == pytest.approx(score(12, 8), abs=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)
    assert torch.equal(apply_rope(q, cos[0], sin[0]), q)  # position 0: no rotation


def test_bad_option_values_are_refused():
    with pytest.raises(ValueError, match="activation 'silu'"):
        ModelShape(**TINY, activation="silu")
    with pytest.raises(ValueError, match="even head size"):
        ModelShape(**{**TINY, "n_embd": 30, "n_head": 2}, pos="rope")


def test_hf_import_keeps_gpt2_options_and_refuses_changes(tmp_path):
    import json

    from llm_trainer.config import ARCH_KEYS, ModelConfig
    from llm_trainer.data.tokenizer import TextTokenizer
    from llm_trainer.model.hf_import import arch_changes, inspect_hf_folder

    folder = tmp_path / "gpt2"  # what inspect_hf_folder reads (the weights are not opened)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64,
         "vocab_size": 300}))
    (folder / "model.safetensors").write_bytes(b"")
    TextTokenizer.build_byte().save(folder / "tokenizer.json")
    src = inspect_hf_folder(f"hf:{folder}")
    assert set(ARCH_KEYS) <= set(src.arch)
    defaults = ModelConfig()
    for key in ("pos", "rope_theta", "norm", "qk_norm", "tie_embeddings"):
        assert src.arch[key] == getattr(defaults, key)
    assert arch_changes(src, {"model.qk_norm": "false", "model.rope_theta": "10000",
                              "model.pos": "learned", "model.tie_embeddings": True}) == []
    assert arch_changes(src, {"model.pos": "rope", "model.norm": "rmsnorm"}) == [
        "model.pos=rope (the folder's model has learned)",
        "model.norm=rmsnorm (the folder's model has layernorm)"]
    assert arch_changes(src, {"model.n_kv_head": "1", "model.norm_eps": "1e-5"}) == [
        "model.n_kv_head=1 (unset in the folder's model)"]
