"""--format hf for every architecture option: rope/rmsnorm/swiglu models as transformers'
LlamaForCausalLM (Qwen3ForCausalLM with qk_norm), GPT-2 ones as GPT2LMHeadModel, tied and
untied, each loaded back with from_pretrained and compared logit for logit with ours; the
combinations no Hugging Face class represents refused in one line before anything is written.
GGUF: the same families as llama.cpp's gpt2, llama and qwen3 architectures, read back with
gguf.GGUFReader (every --dtype), the rest refused. Tiny in-process checkpoints: no training."""

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


FAST_CASES = ()  # all slow: building and running transformers models takes seconds each


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


@pytest.mark.parametrize(("options", "named"), [
    (dict(pos="rope"), "pos rope"), (dict(norm="rmsnorm", bias=False), "norm rmsnorm"),
    (dict(qk_norm=True), "qk_norm true"), (dict(activation="relu2"), "activation relu2"),
    (dict(activation="swiglu"), "activation swiglu"),
    (dict(**LLAMA, qk_norm=True, bias=True), "bias true"),
    (dict(n_head=4, n_kv_head=1), "n_kv_head 1")])
@pytest.mark.parametrize("fmt", ["gguf", "ollama"])
def test_gguf_refuses_what_llama_cpp_cannot_run_in_one_line(tmp_path, options, named, fmt):
    from llm_trainer.inference import gguf_export

    ckpt = checkpoint(tmp_path, "odd", **options)
    out = tmp_path / ("m.gguf" if fmt == "gguf" else "m")
    write = gguf_export.export_gguf if fmt == "gguf" else gguf_export.export_ollama
    with pytest.raises(UsageError) as err:
        write(ckpt, out)
    message = str(err.value)
    assert "\n" not in message and "\n" not in err.value.hint
    assert message.startswith(f"llama.cpp cannot run this model: {named}")
    assert "gpt2, llama and qwen3 architectures" in message
    assert "--format safetensors" in err.value.hint
    assert not out.exists()


# every llama.cpp shape the HF export covers (CASES): GQA, wide heads, biases, MLP width,
# norm eps, rope theta, QK-norm, tied and untied heads
GGUF_CASES = {case: options for case, (cls, options) in CASES.items() if cls != "GPT2LMHeadModel"}
FAST_GGUF = ("llama-gqa", "qwen3-gqa-wide-heads")


def rope_pairs(x, theta: float):
    """llama.cpp's ``llama`` rope: x (T, heads, hd) rotated in adjacent pairs (2j, 2j+1)."""
    import numpy as np

    T, _, hd = x.shape
    freq = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    angle = np.arange(T)[:, None, None] * freq  # (T, 1, hd/2)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * np.cos(angle) - b * np.sin(angle)
    out[..., 1::2] = a * np.sin(angle) + b * np.cos(angle)
    return out


def test_llama_q_k_rows_in_pairs_give_our_rotary_embedding(tmp_path):
    """The permuted attn_q rows, rotated as llama.cpp's llama graph rotates (adjacent
    pairs), give the same attention scores as ours (rotate_half on the original rows)."""
    import numpy as np

    from llm_trainer.inference.gguf_export import _to_pairs
    from llm_trainer.model.gpt import apply_rope, rope_tables

    shape = ModelShape(vocab_size=8, block_size=6, n_layer=1, n_head=2, n_embd=16, **LLAMA,
                       rope_theta=100.0)
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(16, 16)).astype(np.float32), rng.normal(size=(6, 16)).astype(
        np.float32)
    cos, sin = rope_tables(shape)
    ours = apply_rope(torch.from_numpy(x @ w.T).view(6, 2, 8), cos, sin).numpy()
    theirs = rope_pairs((x @ _to_pairs(w, 2).T).reshape(6, 2, 8), 100.0)
    # the same vectors with their coordinates reordered: equal dot products between positions
    scores = np.einsum("thd,shd->hts", ours, ours)
    assert np.allclose(np.einsum("thd,shd->hts", theirs, theirs), scores, atol=1e-4)
    assert np.allclose(_to_pairs(ours.reshape(6, 16).T, 2).T.reshape(6, 2, 8), theirs,
                       atol=1e-5)


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0", "q4_0", "q5_1"])
@pytest.mark.parametrize("case", [c if c in FAST_GGUF else pytest.param(c, marks=pytest.mark.slow)
                                  for c in GGUF_CASES])
def test_llama_and_qwen3_gguf_read_back(tmp_path, case, dtype):
    """Names, shapes, types, metadata and values, as llama.cpp's convert_hf_to_gguf.py would
    write them from our --format hf folder: each tensor dequantized equals our weight
    quantized and dequantized by gguf-py, within the type's error of ours."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.gguf_export import _to_pairs, export_gguf
    from llm_trainer.model.families import family_for

    ckpt = checkpoint(tmp_path, case, **GGUF_CASES[case])
    s = ckpt.shape
    out = export_gguf(ckpt, tmp_path / "m.gguf", dtype=dtype)
    reader = gguf.GGUFReader(str(out))
    arch = "qwen3" if s.qk_norm else "llama"

    def field(key):
        return reader.fields[key].contents()

    assert field("general.architecture") == arch
    for key, value in (("context_length", 16), ("embedding_length", s.n_embd),
                       ("feed_forward_length", s.mlp_hidden), ("block_count", s.n_layer),
                       ("attention.head_count", s.n_head),
                       ("attention.head_count_kv", s.kv_heads),
                       ("attention.key_length", s.head_dim),
                       ("attention.value_length", s.head_dim),
                       ("rope.dimension_count", s.head_dim), ("vocab_size", s.vocab_size)):
        assert field(f"{arch}.{key}") == value, key
    assert field(f"{arch}.rope.freq_base") == pytest.approx(s.rope_theta)
    assert field(f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(s.norm_eps)
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert len(field("tokenizer.ggml.tokens")) == s.vocab_size

    hf = {k: v.numpy() for k, v in family_for(s)(s).to_hf(load_model(ckpt).state_dict()).items()}
    expected = {"token_embd.weight": hf["model.embed_tokens.weight"],
                "output_norm.weight": hf["model.norm.weight"]}
    if not s.tie_embeddings:
        expected["output.weight"] = hf["lm_head.weight"]
    parts = ("weight", "bias") if s.bias else ("weight",)
    for i in range(s.n_layer):
        h = f"model.layers.{i}."
        names = {"attn_norm.weight": "input_layernorm.weight",
                 "ffn_norm.weight": "post_attention_layernorm.weight"}
        names |= {f"{g}.{part}": f"{m}.{part}" for part in parts for g, m in (
            ("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
            ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"))}
        if s.qk_norm:
            names |= {"attn_q_norm.weight": "self_attn.q_norm.weight",
                      "attn_k_norm.weight": "self_attn.k_norm.weight"}
        for g, m in names.items():
            value = hf[h + m]
            if arch == "llama" and g.startswith(("attn_q.", "attn_k.")):  # rope in pairs
                value = _to_pairs(value, s.n_head if g.startswith("attn_q") else s.kv_heads)
            expected[f"blk.{i}.{g}"] = value
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(expected)
    Q = gguf.GGMLQuantizationType
    head = "token_embd.weight" if s.tie_embeddings else "output.weight"
    bound = {"q8_0": 1 / 127, "q5_1": 1 / 20, "q4_0": 1 / 7}  # of the largest weight
    for name, want in expected.items():
        t = tensors[name]
        assert [int(n) for n in t.shape] == list(reversed(want.shape)), name
        if want.ndim == 1 or name.endswith("_norm.weight") or dtype == "f32":
            qtype = Q.F32
        elif dtype == "f16" or want.shape[-1] % 32:  # rows not whole blocks: f16
            qtype = Q.F16
        else:  # 4/5 bits: the output head at 8 (llama-quantize's q6_K)
            qtype = Q.Q8_0 if name == head else Q[dtype.upper()]
        assert t.tensor_type == qtype, name
        got = gguf.quants.dequantize(np.asarray(t.data), qtype).reshape(want.shape)
        assert np.array_equal(got, gguf.quants.dequantize(gguf.quants.quantize(want, qtype),
                                                          qtype).reshape(want.shape)), name
        err = np.abs(got - want).max()
        if qtype == Q.F32:
            assert err == 0, name
        elif qtype == Q.F16:
            assert err <= np.abs(want).max() * 1e-3, name
        else:
            q = "q8_0" if qtype == Q.Q8_0 else dtype
            assert err <= np.abs(want).max() * bound[q], name
    assert field("general.file_type") == {"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2,
                                          "q5_1": 9}[dtype]


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


def test_ollama_folder_for_a_qwen3_model(tmp_path):
    """An Ollama folder of a non-GPT-2 model: its qwen3 GGUF and a Modelfile with its context."""
    gguf = pytest.importorskip("gguf")
    from llm_trainer.inference.gguf_export import export_notes, export_ollama

    ckpt = checkpoint(tmp_path, "qwen3", **GGUF_CASES["qwen3-tied"])
    out = export_ollama(ckpt, tmp_path / "ollama", dtype="q8_0")
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf"]
    assert "PARAMETER num_ctx 16" in (out / "Modelfile").read_text().splitlines()
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    assert reader.fields["general.architecture"].contents() == "qwen3"
    assert reader.fields["qwen3.context_length"].contents() == 16
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied: token_embd serves
    assert export_notes(ckpt, "ollama") == []  # no GELU to warn about
