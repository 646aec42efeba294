"""GGUF and Ollama export: tiny models trained through the real CLI (the session's
trained_zoo, tests/conftest.py), exported, and read back with llama.cpp's own Python reader
(gguf.GGUFReader): tensor names, ggml shapes, dtypes and values against the checkpoint,
metadata, the embedded tokenizer, and the refusals."""

from __future__ import annotations

import shutil

import gguf
import numpy as np
import pytest

from llm_trainer.data.tokenizer import EOT, TextTokenizer
from llm_trainer.errors import UsageError
from tests.helpers import corpus_text, run_cli, shadow_package

TEXT = ("The water was here. <|endoftext|>Then they went away!\n\n  what  number 1234, "
        "don't they'll -- (sound)   \tend")
CONTROL = 3


@pytest.fixture(scope="module")
def home(trained_zoo, tmp_path_factory):
    """bpe, nobias, bytes and chars (the zoo's char model demo), trained for 10 steps."""
    home = tmp_path_factory.mktemp("gguf") / "home"
    shutil.copytree(trained_zoo, home)
    run_cli("models", "rename", "demo", "chars", home=home, check=True)
    return home


def checkpoint(home, name):
    from llm_trainer.checkpoint_io import read_checkpoint
    from llm_trainer.store.checkpoints import resolve_checkpoint

    return read_checkpoint(resolve_checkpoint(home / "checkpoints" / name, "latest").path)


def expected_tensors(shape) -> dict[str, tuple[str, list[int]]]:
    """GGUF name -> (our parameter, ggml ne: the numpy shape reversed)."""
    C, V, T, F = shape.n_embd, shape.vocab_size, shape.block_size, 4 * shape.n_embd
    out = {"token_embd.weight": ("transformer.wte.weight", [C, V]),
           "position_embd.weight": ("transformer.wpe.weight", [C, T]),
           "output_norm.weight": ("transformer.ln_f.weight", [C]),
           "output_norm.bias": ("transformer.ln_f.bias", [C]),
           "output.weight": ("transformer.wte.weight", [C, V])}  # tied: a copy
    for i in range(shape.n_layer):
        for ggml, ours, w_ne, b_ne in (("attn_norm", "ln_1", [C], [C]),
                                       ("attn_qkv", "attn.c_attn", [C, 3 * C], [3 * C]),
                                       ("attn_output", "attn.c_proj", [C, C], [C]),
                                       ("ffn_norm", "ln_2", [C], [C]),
                                       ("ffn_up", "mlp.c_fc", [C, F], [F]),
                                       ("ffn_down", "mlp.c_proj", [F, C], [C])):
            out[f"blk.{i}.{ggml}.weight"] = (f"transformer.h.{i}.{ours}.weight", w_ne)
            out[f"blk.{i}.{ggml}.bias"] = (f"transformer.h.{i}.{ours}.bias", b_ne)
    return out


def field(reader, key):
    return reader.fields[key].contents()


def retokenize(tokens: list[str], types: list[int], merges: list[str], text: str) -> list[int]:
    """``text`` through a fresh byte-level BPE built only from what the GGUF holds."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens([t for t, k in zip(tokens, types, strict=True) if k == CONTROL])
    return tok.encode(text, add_special_tokens=False).ids


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), [("bpe", "f32"), ("bpe", "f16"), ("nobias", "f32"),
                                             ("bytes", "f16"), ("bpe", "q8_0"),
                                             ("nobias", "q4_1")])
def test_gguf_matches_the_checkpoint(home, tmp_path, name, dtype):
    from llm_trainer.checkpoint_io import load_model

    out = tmp_path / f"{name}.gguf"
    proc = run_cli("models", "export", name, "--format", "gguf", "--dtype", dtype,
                   "--out", str(out), home=home)
    assert proc.returncode == 0, proc.stderr
    assert f"as gguf ({dtype}) to {out}" in proc.stdout
    assert f"llama-cli -m {out} -c 32" in proc.stdout
    assert f"Llama(model_path={str(out)!r}, n_ctx=32)" in proc.stdout  # llama-cpp-python's 512
    assert ("tanh GELU" in proc.stderr) == (name != "nobias")  # exact-GELU models are warned
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left

    ckpt = checkpoint(home, name)
    shape = ckpt.shape
    ours = {k: v.detach().numpy() for k, v in load_model(ckpt).state_dict().items()}
    reader = gguf.GGUFReader(str(out))
    expected = expected_tensors(shape)
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(expected)
    for tname, (param, ne) in expected.items():
        t = tensors[tname]
        assert [int(n) for n in t.shape] == ne, tname  # ggml order: ne0 is the row length
        # 2-D weights in --dtype (the output head at 8 bits for 4/5-bit types); biases, norms
        # and the position table f32, as llama.cpp's converter writes them
        Q = gguf.GGMLQuantizationType
        qtype = Q.F32 if len(ne) == 1 or dtype == "f32" or tname == "position_embd.weight" \
            else Q.Q8_0 if tname == "output.weight" and dtype.startswith(("q4", "q5")) \
            else Q[dtype.upper()]
        assert t.tensor_type == qtype, tname
        data = gguf.quants.dequantize(np.asarray(t.data), qtype).reshape(tuple(reversed(ne)))
        value = ours.get(param, np.zeros(ne[0], dtype=np.float32))  # bias=false: zeros
        if name == "nobias" and tname.endswith(".bias"):
            assert param not in ours and not data.any(), tname
        assert np.array_equal(data, gguf.quants.dequantize(gguf.quants.quantize(value, qtype),
                                                           qtype).reshape(value.shape)), tname

    assert field(reader, "general.architecture") == "gpt2"
    assert field(reader, "general.name") == name
    assert field(reader, "general.file_type") == {"f32": 0, "f16": 1, "q8_0": 7, "q4_1": 3}[dtype]
    assert field(reader, "gpt2.context_length") == shape.block_size == 32
    assert field(reader, "gpt2.embedding_length") == shape.n_embd
    assert field(reader, "gpt2.feed_forward_length") == 4 * shape.n_embd
    assert field(reader, "gpt2.block_count") == shape.n_layer
    assert field(reader, "gpt2.attention.head_count") == shape.n_head
    assert field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")  # present even when empty (llama.cpp)
    assert len(tokens) == len(types) == shape.vocab_size
    tok = ckpt.tokenizer
    if name == "bytes":  # 256 bytes, then the separator
        assert merges == [] and len(tokens) == 257 and tok.eot_id == 256
    else:
        assert len(merges) == shape.vocab_size - 257 > 0  # 256 bytes + <|endoftext|>
    eot = tok.tok.token_to_id(EOT)
    assert field(reader, "tokenizer.ggml.eos_token_id") == eot
    assert field(reader, "tokenizer.ggml.bos_token_id") == eot
    assert tokens[eot] == EOT and types[eot] == CONTROL
    assert [i for i, k in enumerate(types) if k != 1] == [eot]
    assert retokenize(tokens, types, merges, TEXT) == tok.encode(TEXT)


@pytest.mark.slow
def test_char_tokenizer_is_refused_and_nothing_is_written(home, tmp_path):
    out = tmp_path / "exports" / "chars.gguf"
    proc = run_cli("models", "export", "chars", "--format", "gguf", "--out", str(out),
                   home=home)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: llama.cpp cannot use this model's "
                                                   "char tokenizer")
    assert lines[1].startswith("hint: ") and "bpe or byte" in lines[1]
    assert not out.exists() and not (tmp_path / "exports").exists()
    proc = run_cli("models", "export", "chars", "--format", "ollama", "--out",
                   str(tmp_path / "ollama"), home=home)
    assert proc.returncode == 2 and not (tmp_path / "ollama").exists()


@pytest.mark.slow
def test_ollama_folder(home, tmp_path):
    out = tmp_path / "ollama-bpe"
    proc = run_cli("models", "export", "bpe", "--format", "ollama", "--out", str(out),
                   home=home)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf"]
    assert f"ollama create bpe -f {out / 'Modelfile'}" in proc.stdout
    lines = (out / "Modelfile").read_text().splitlines()
    for line in ("FROM ./model.gguf", 'TEMPLATE "{{ .Prompt }}"', "PARAMETER temperature 0.8",
                 "PARAMETER top_k 200", "PARAMETER num_ctx 32", f'PARAMETER stop "{EOT}"'):
        assert line in lines
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    assert field(reader, "general.architecture") == "gpt2" and len(reader.tensors) == 29
    again = run_cli("models", "export", "bpe", "--format", "ollama", "--out", str(out),
                    home=home)
    assert again.returncode == 2 and "not empty" in again.stderr
    bytes_out = tmp_path / "ollama-bytes"  # its separator stops generation too
    assert run_cli("models", "export", "bytes", "--format", "ollama", "--out", str(bytes_out),
                   home=home).returncode == 0
    assert f'PARAMETER stop "{EOT}"' in (bytes_out / "Modelfile").read_text()


@pytest.mark.slow
def test_refusals_and_force(home, tmp_path):
    out = tmp_path / "m.gguf"
    assert run_cli("models", "export", "bpe", "--format", "gguf", "--out", str(out),
                   home=home).returncode == 0
    before = out.read_bytes()
    again = run_cli("models", "export", "bpe", "--format", "gguf", "--dtype", "f16", "--out",
                    str(out), home=home)
    assert again.returncode == 2 and f"error: {out} exists" in again.stderr
    assert "--force" in again.stderr and out.read_bytes() == before
    forced = run_cli("models", "export", "bpe", "--format", "gguf", "--dtype", "f16", "--out",
                     str(out), "--force", home=home)
    assert forced.returncode == 0 and out.stat().st_size < len(before)  # f16 replaced it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    for args, says in ((["--format", "hf", "--dtype", "f16"], "--dtype is for"),
                       (["--format", "gguf", "--dtype", "bf16"], "unknown --dtype"),
                       (["--format", "gguf"], "is a folder"),
                       (["--format", "onnx"], "unknown export format")):
        proc = run_cli("models", "export", "bpe", *args, "--out", str(tmp_path), home=home)
        assert proc.returncode == 2 and says in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 2  # error + hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


@pytest.mark.slow
def test_missing_gguf_package_names_the_extra(home, tmp_path, monkeypatch):
    shadow_package(monkeypatch, "gguf", tmp_path / "shadow")  # unimportable, ahead of the real
    proc = run_cli("models", "export", "bpe", "--format", "gguf", "--out",
                   str(tmp_path / "m.gguf"), home=home)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --format gguf needs the gguf package, which is not installed",
        "hint: pip install 'llm-trainer[gguf]'"]
    assert not (tmp_path / "m.gguf").exists()


# ---------------------------------------------------------------- the vocabulary, in-process
@pytest.fixture(scope="module")
def bpe_tok():
    return TextTokenizer.train_bpe(corpus_text(20_000, seed=3), 320)


@pytest.mark.parametrize("kind", ["bpe", "file"])
def test_vocab_tokens_and_merges_round_trip(bpe_tok, kind):
    from llm_trainer.inference.gguf_export import gguf_vocab

    tok = bpe_tok if kind == "bpe" else TextTokenizer.from_str(bpe_tok.to_str(), "file")
    vocab = gguf_vocab(tok)
    assert len(vocab.tokens) == tok.vocab_size == 320 and len(vocab.merges) == 320 - 257
    assert vocab.eot_id == tok.tok.token_to_id(EOT)
    for text in (TEXT, corpus_text(2_000, seed=9), "é ü 日本 🙂 \x00\x7f"):
        assert retokenize(vocab.tokens, vocab.types, vocab.merges, text) == tok.encode(text)


def test_vocab_byte_tokenizer_has_no_merges_and_pads():
    from llm_trainer.inference.gguf_export import UNUSED, gguf_vocab

    tok = TextTokenizer.build_byte()
    vocab = gguf_vocab(tok, vocab_size=260)  # an embedding with more rows than tokens
    assert vocab.merges == [] and vocab.eot_id == 256 and vocab.tokens[256] == EOT
    assert len(vocab.tokens) == 260 and vocab.types[257:] == [UNUSED] * 3
    assert retokenize(vocab.tokens[:257], vocab.types[:257], [], TEXT) == tok.encode(TEXT)
    old = gguf_vocab(TextTokenizer.build_byte(eot=False))  # a checkpoint from before separators
    assert old.eot_id is None and len(old.tokens) == 256


def test_vocab_refuses_what_llama_cpp_cannot_reproduce(bpe_tok):
    import json

    from llm_trainer.inference.gguf_export import gguf_vocab

    def variant(change) -> TextTokenizer:
        spec = json.loads(bpe_tok.to_str())
        change(spec)
        return TextTokenizer.from_str(json.dumps(spec), "file")

    refused = {
        "char": TextTokenizer.build_char("abc"),
        "prefix space": variant(lambda s: s["pre_tokenizer"].update(add_prefix_space=True)),
        "no regex": variant(lambda s: s["pre_tokenizer"].update(use_regex=False)),
        "whitespace": variant(lambda s: s.update(pre_tokenizer={"type": "Whitespace"})),
        "normalizer": variant(lambda s: s.update(normalizer={"type": "Lowercase"})),
        "ignore merges": variant(lambda s: s["model"].update(ignore_merges=True)),
    }
    for why, tok in refused.items():
        with pytest.raises(UsageError) as err:
            gguf_vocab(tok)
        assert "llama.cpp cannot use" in str(err.value), why
        assert "bpe or byte" in err.value.hint, why

# llama.cpp itself (llama-cpp-python builds from source for minutes) is checked by
# benchmarks/bench_llamacpp.py, recorded in benchmarks/RESULTS.md.
