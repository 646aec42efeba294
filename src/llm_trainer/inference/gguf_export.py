"""GGUF export for llama.cpp, and an Ollama folder around it.

The file is llama.cpp's ``gpt2`` architecture, laid out as its ``convert_hf_to_gguf.py``
writes a GPT-2: ``token_embd``, ``position_embd``, ``blk.N.{attn_norm, attn_qkv, attn_output,
ffn_norm, ffn_up, ffn_down}``, ``output_norm`` and ``output`` (a copy of the tied embedding,
or the head's own weight for ``tie_embeddings: false``), every one with its bias (zeros for a
model trained without biases: llama.cpp requires them). Only GPT-2's block exports (see
``check_architecture``); rope/rmsnorm/swiglu models go through ``--format hf``.
Our ``nn.Linear`` weights are (out, in), which is already ggml's {in, out}: no transpose.
f16 stores the 2-D weights in float16 and keeps norms and biases in float32.

The tokenizer goes in as llama.cpp's ``gpt2`` BPE: tokens in id order, their types, merges,
and ``tokenizer.ggml.pre = "gpt-2"`` (the converter recognises pre-tokenizers by hashing known
tokenizers' output and would not know ours; our byte-level split is GPT-2's regex). Only
byte-level BPE tokenizers can be written this way: ``bpe``, ``byte``, or a GPT-2 style
``tokenizer.json``; the JSON is checked, not the kind.

A chat model's file also holds its jinja template (``tokenizer.chat_template``) and its
end-of-turn id (``tokenizer.ggml.eot_token_id``); its Modelfile gets the template rewritten in
Ollama's Go syntax (``ollama_template``) and a stop at the end-of-turn marker.

Files are written to a temporary name in the destination folder and renamed at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm_trainer.checkpoint_io import LoadedCheckpoint, load_model
from llm_trainer.data.tokenizer import EOT, TextTokenizer
from llm_trainer.errors import UsageError
from llm_trainer.inference.outputs import check_out_folder, replace_atomically
from llm_trainer.inference.settings import GenerationSettings
from llm_trainer.model.families import GPT2Adapter, family_for

DTYPES = ("f32", "f16")
PRE_TOKENIZER = "gpt-2"
EXPORTABLE = "bpe or byte (byte-level BPE), or a GPT-2 style tokenizer.json"
# llama.cpp token types (gguf.TokenType), spelled out so this module imports without gguf
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]  # by id
    types: list[int]
    merges: list[str]  # "left right", in rank order
    eot_id: int | None  # <|endoftext|>: bos and eos


def gguf_vocab(tokenizer: TextTokenizer, vocab_size: int | None = None) -> GGUFVocab:
    """The tokenizer as llama.cpp's ``gpt2`` BPE, padded to ``vocab_size`` rows with unused
    tokens; a UsageError naming what exports when llama.cpp could not reproduce it."""
    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    problem = None
    if model.get("type") != "BPE":
        problem = f"a {model.get('type') or 'non-BPE'} model"
    elif pre.get("type") != "ByteLevel":
        problem = f"a {pre.get('type') or 'missing'} pre-tokenizer instead of ByteLevel"
    elif pre.get("add_prefix_space"):
        problem = "a ByteLevel pre-tokenizer that adds a prefix space"
    elif not pre.get("use_regex", True) and merges:
        problem = "merges applied across word boundaries (ByteLevel without its regex)"
    elif spec.get("normalizer"):
        problem = "a normalizer"
    elif model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        problem = "subword prefixes or suffixes"
    elif model.get("ignore_merges"):
        problem = "whole words looked up before merges (ignore_merges)"
    elif any(len(m.split(" ")) != 2 for m in merges):
        problem = "merges with spaces in their tokens"
    if problem:
        raise UsageError(f"llama.cpp cannot use this model's {tokenizer.kind} tokenizer "
                         f"({problem}); GGUF export needs byte-level BPE",
                         hint=f"models trained with data.tokenizer {EXPORTABLE} export")
    vocab = tokenizer.tok.get_vocab(with_added_tokens=True)
    added = {t.content: t.special for t in tokenizer.tok.get_added_tokens_decoder().values()}
    n = max(vocab_size or 0, max(vocab.values(), default=-1) + 1)
    if vocab_size is not None and n > vocab_size:
        raise UsageError(f"the tokenizer has ids up to {n - 1} but the model only {vocab_size} "
                         "embeddings", hint="this checkpoint's tokenizer.json does not match "
                                            "its weights")
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [UNUSED] * n
    for token, i in vocab.items():
        tokens[i] = token
        types[i] = NORMAL if token not in added else (CONTROL if added[token] else USER_DEFINED)
    return GGUFVocab(tokens, types, merges, vocab.get(EOT))


def _writer(path: Path):
    """gguf.GGUFWriter that can also write an empty string array: the ``byte`` tokenizer has
    no merges, and llama.cpp's gpt2 vocabulary loader requires the merges key to exist
    (an empty list is fine) while gguf-py skips or refuses empty arrays."""
    import gguf

    class _Writer(gguf.GGUFWriter):
        def _pack_val(self, val, vtype, add_vtype, *args, **kwargs):
            if isinstance(val, _EmptyStrings):
                head = self._pack("I", gguf.GGUFValueType.ARRAY) if add_vtype else b""
                return head + self._pack("I", gguf.GGUFValueType.STRING) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, *args, **kwargs)

    return _Writer(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])


class _EmptyStrings(list):
    """Marks the one empty array the writer above packs itself."""


def gguf_tensors(ckpt: LoadedCheckpoint) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 array in numpy (row-major) order; GGUF's ne is the reverse
    (token_embd (vocab, n_embd) has ne {n_embd, vocab})."""
    import gguf

    model_sd = load_model(ckpt, "cpu").state_dict()
    sd = {k: v.float().numpy() for k, v in GPT2Adapter(ckpt.shape).with_biases(model_sd).items()}

    def name(tensor, bid: int | None = None) -> str:
        return gguf.TENSOR_NAMES[tensor].format(bid=bid)

    T = gguf.MODEL_TENSOR
    out = {
        name(T.TOKEN_EMBD) + ".weight": sd["transformer.wte.weight"],
        name(T.POS_EMBD) + ".weight": sd["transformer.wpe.weight"],
    }
    per_layer = ((T.ATTN_NORM, "ln_1"), (T.ATTN_QKV, "attn.c_attn"),
                 (T.ATTN_OUT, "attn.c_proj"), (T.FFN_NORM, "ln_2"), (T.FFN_UP, "mlp.c_fc"),
                 (T.FFN_DOWN, "mlp.c_proj"))
    for i in range(ckpt.shape.n_layer):
        for tensor, ours in per_layer:
            for part in ("weight", "bias"):
                out[f"{name(tensor, i)}.{part}"] = sd[f"transformer.h.{i}.{ours}.{part}"]
    out[name(T.OUTPUT_NORM) + ".weight"] = sd["transformer.ln_f.weight"]
    out[name(T.OUTPUT_NORM) + ".bias"] = sd["transformer.ln_f.bias"]
    # tied: the embedding written twice; untied (tie_embeddings false): the head's own weight
    out[name(T.OUTPUT) + ".weight"] = sd.get("lm_head.weight", sd["transformer.wte.weight"])
    return out


def check_architecture(ckpt: LoadedCheckpoint) -> None:
    """llama.cpp's gpt2 architecture is GPT-2's block, what ``--format hf`` writes as
    GPT2LMHeadModel: refuse, in one line, any other."""
    odd = GPT2Adapter.misfits(ckpt.shape)
    if not odd:
        return
    try:
        family = family_for(ckpt.shape).name
    except UsageError:
        family = None
    raise UsageError(f"llama.cpp's gpt2 architecture, which GGUF export writes, cannot run this "
                     f"model ({', '.join(odd)}); it needs GPT-2's block: "
                     f"{GPT2Adapter.requirements()}",
                     hint=f"export --format hf (as {family}) and convert that folder with "
                          f"llama.cpp's convert_hf_to_gguf.py" if family else
                          "--format safetensors exports any model in our own layout")


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}", hint="use --dtype f32 or f16")


def model_name(ckpt: LoadedCheckpoint) -> str:
    return ckpt.path.parent.name  # checkpoints/<model>/<checkpoint>


def special_ids(ckpt: LoadedCheckpoint, vocab: GGUFVocab
                ) -> tuple[int | None, int | None, int | None]:
    """BOS, EOS and end-of-turn ids for the file. Without a chat template: the document
    separator as BOS and EOS (as before). With one: the tokens the template is rendered with
    (llama.cpp's ``--jinja`` passes the BOS/EOS texts to it; a Hugging Face folder's own, or
    the separator for ChatML), and the end-of-turn marker as EOT, which llama.cpp stops at
    as it does at EOS."""
    chat = ckpt.chat
    if chat is None:
        return vocab.eot_id, vocab.eot_id, None
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    bos = ids.get(chat.bos_token) if chat.bos_token else None
    eos = ids.get(chat.eos_token) if chat.eos_token else None
    return (vocab.eot_id if bos is None else bos, vocab.eot_id if eos is None else eos,
            ids.get(chat.end_of_turn))


def write_gguf(ckpt: LoadedCheckpoint, path: Path, vocab: GGUFVocab, dtype: str) -> None:
    """Write the file at ``path`` (no temporary file, no checks: see export_gguf)."""
    import gguf

    shape = ckpt.shape
    defaults = GenerationSettings()
    w = _writer(path)
    w.add_name(model_name(ckpt))
    w.add_context_length(shape.block_size)
    w.add_embedding_length(shape.n_embd)
    w.add_feed_forward_length(shape.mlp_hidden)
    w.add_block_count(shape.n_layer)
    w.add_head_count(shape.n_head)
    w.add_layer_norm_eps(shape.norm_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16"
                    else gguf.LlamaFileType.ALL_F32)
    # sampling defaults llama.cpp reads: the ones `llm-trainer generate` uses
    w.add_float32("general.sampling.temp", defaults.temperature)
    if defaults.top_k is not None:
        w.add_int32("general.sampling.top_k", defaults.top_k)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    if vocab.merges:
        w.add_token_merges(vocab.merges)
    else:
        w.add_key_value(gguf.Keys.Tokenizer.MERGES, _EmptyStrings(), gguf.GGUFValueType.ARRAY)
    bos, eos, end_of_turn = special_ids(ckpt, vocab)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if ckpt.chat is not None:
        w.add_chat_template(ckpt.chat.source)
        if end_of_turn is not None:
            w.add_eot_token_id(end_of_turn)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    for name, array in gguf_tensors(ckpt).items():
        if dtype == "f16" and array.ndim == 2:
            array = array.astype(np.float16)
        w.add_tensor(name, np.ascontiguousarray(array))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def export_gguf(ckpt: LoadedCheckpoint, out: Path, *, dtype: str = "f32",
                overwrite: bool = False) -> Path:
    _check_dtype(dtype)
    if out.is_dir():
        raise UsageError(f"{out} is a folder; --format gguf writes one file",
                         hint=f"e.g. --out {out / (model_name(ckpt) + '.gguf')}")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists", hint="pick a new --out file, or pass --force to "
                                               "overwrite it")
    check_architecture(ckpt)  # refuse before writing
    vocab = gguf_vocab(ckpt.tokenizer, ckpt.shape.vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(out, lambda tmp: write_gguf(ckpt, tmp, vocab, dtype))
    return out


def modelfile(ckpt: LoadedCheckpoint, vocab: GGUFVocab) -> str:
    """An Ollama Modelfile for ./model.gguf. A base model takes the prompt raw; a chat model
    gets its template as a Go ``TEMPLATE`` (``ollama_template``) and stops at its
    end-of-turn marker as well as at the document separator."""
    from llm_trainer.inference.ollama_template import ollama_template

    defaults = GenerationSettings()
    eot = vocab.tokens[vocab.eot_id] if vocab.eot_id is not None else None
    lines = [f"# {model_name(ckpt)} ({ckpt.path.name}), exported by llm-trainer",
             "FROM ./model.gguf"]
    if ckpt.chat is None:
        lines.append('TEMPLATE "{{ .Prompt }}"')
        stops = [eot] if eot else []
    else:
        template = ollama_template(ckpt.chat, eot)
        if template.note:
            lines.append(f"# note: {template.note}")
        lines.append(f'TEMPLATE """{template.text}"""')
        stops = list(template.stops)
    lines.append(f"PARAMETER temperature {defaults.temperature:g}")
    if defaults.top_k is not None:
        lines.append(f"PARAMETER top_k {defaults.top_k}")
    lines.append(f"PARAMETER num_ctx {ckpt.shape.block_size}")
    lines.extend(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops)
    return "\n".join(lines) + "\n"


def export_ollama(ckpt: LoadedCheckpoint, out: Path, *, dtype: str = "f32",
                  overwrite: bool = False) -> Path:
    _check_dtype(dtype)
    check_out_folder(out, "ollama", overwrite)
    check_architecture(ckpt)
    vocab = gguf_vocab(ckpt.tokenizer, ckpt.shape.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    replace_atomically(out / "model.gguf", lambda tmp: write_gguf(ckpt, tmp, vocab, dtype))
    text = modelfile(ckpt, vocab)
    replace_atomically(out / "Modelfile", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out


def export_notes(ckpt: LoadedCheckpoint, fmt: str = "gguf") -> list[str]:
    """What a user should know about running this checkpoint in llama.cpp and Ollama."""
    notes = []
    if ckpt.shape.activation == "gelu":
        notes.append("llama.cpp's gpt2 architecture computes the tanh GELU; this model was "
                     "trained with the exact (erf) GELU, so its logits there differ slightly "
                     "from ours")
    if fmt == "ollama" and ckpt.chat is not None:
        from llm_trainer.inference.ollama_template import ollama_template

        note = ollama_template(ckpt.chat).note
        if note:
            notes.append(f"Ollama: {note}")
    return notes
