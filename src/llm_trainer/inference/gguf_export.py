"""GGUF export for llama.cpp, and an Ollama folder around it.

The file holds the llama.cpp architecture named like the Hugging Face family that represents
the model (``model.families.family_for``, the one ``--format hf`` writes), laid out as
llama.cpp's ``convert_hf_to_gguf.py`` writes that family's folder:

- ``gpt2`` (GPT2LMHeadModel): ``token_embd``, ``position_embd``, ``blk.N.{attn_norm,
  attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down}``, ``output_norm`` and ``output`` (a
  copy of the tied embedding, or the head's own weight for ``tie_embeddings: false``), every
  one with its bias (zeros for a model trained without biases: llama.cpp requires them).
- ``llama`` (LlamaForCausalLM) and ``qwen3`` (Qwen3ForCausalLM, with ``attn_q_norm`` /
  ``attn_k_norm``): ``token_embd``, ``blk.N.{attn_norm, attn_q, attn_k, attn_v,
  attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}`` (biases where the model has them),
  ``output_norm``, and ``output`` only for an untied head (llama.cpp reuses ``token_embd``).
  Grouped-query attention is ``head_count_kv``; the head width ``key_length`` /
  ``value_length`` and ``rope.dimension_count``; RoPE's theta ``rope.freq_base`` (no
  scaling); the RMSNorm eps ``layer_norm_rms_epsilon``. Our rotary embedding is HF Llama's
  (``rotate_half``: the two halves of a head), which is llama.cpp's NEOX rope, what its
  ``qwen3`` graph computes; its ``llama`` graph rotates adjacent pairs (the original Meta
  layout), so ``attn_q`` / ``attn_k`` rows are permuted within each head as the converter's
  ``LlamaModel.permute`` does (``_to_pairs``).

Our ``nn.Linear`` weights are (out, in), which is already ggml's {in, out}: no transpose.
``--dtype`` (``DTYPES``) picks the 2-D weights' type; the converter's rules keep 1-D tensors,
norms, biases and ``position_embd`` in f32 (``tensor_type``). ``q8_0`` and the 4/5-bit types
are quantized with gguf-py's own ``gguf.quants`` (32-value blocks); a weight whose rows are
not whole blocks is written f16, as the converter falls back; with a 4/5-bit type the output
head (``output``, or ``token_embd`` where it serves as the head) is q8_0, where
``llama-quantize`` would write q6_K, which gguf-py cannot.

The tokenizer goes in as llama.cpp's ``gpt2`` BPE: tokens in id order, their types, merges,
and ``tokenizer.ggml.pre``, the name of the pre-tokenizer llama.cpp applies (``pre_tokenizer``).
That name is found as llama.cpp's converter finds it, by hashing the tokenizer's ids for a
fixed text (``gguf_pre``): an imported tokenizer llama.cpp knows (GPT-2, Llama 3, Qwen2/3,
SmolLM...) gets the converter's name (``qwen2``, ``llama-bpe``, ``smollm``), whatever its
pre-tokenizer's JSON looks like. Our own tokenizers are new to it; their byte-level split is
GPT-2's regex, which is what llama.cpp's ``gpt-2`` splits with. Anything else (a char
tokenizer, an unknown Split regex, a normalizer, a prefix space) is refused.

A chat model's file also holds its jinja template (``tokenizer.chat_template``) and its
end-of-turn id (``tokenizer.ggml.eot_token_id``); its Modelfile gets the template rewritten in
Ollama's Go syntax (``ollama_template``) and a stop at the end-of-turn marker.

Both carry ``generate``'s sampling defaults (``GenerationSettings()``): the Modelfile as
``PARAMETER``s, every one written out (``sampling_parameters``), the file as the
``general.sampling.*`` keys llama.cpp starts from (``llama_cpp_sampling``).

``{arch}.context_length`` is the model's context: llama.cpp's default context (``llama-cli
-c 0``, llama-cpp-python ``n_ctx=0``) is then the model's own.

Files are written to a temporary name in the destination folder and renamed at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm_trainer.checkpoint_io import LoadedCheckpoint, load_model
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import UsageError
from llm_trainer.inference.outputs import check_out_folder, replace_atomically, staged_folder
from llm_trainer.inference.settings import GenerationSettings
from llm_trainer.model.families import FAMILIES, HF_EXPORTS, GPT2Adapter, nearest_family

# --dtype: what the 2-D weights are written as (gguf.GGMLQuantizationType names, lower case)
DTYPES = ("f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
# the Hugging Face family (model.families) -> the llama.cpp architecture that runs it
ARCHITECTURES = {"GPT-2": "gpt2", "Llama": "llama", "Qwen3": "qwen3"}
PRE_TOKENIZER = "gpt-2"  # ours: GPT-2's byte-level split (GPT2_SHAPE)
EXPORTABLE = ("bpe or byte (byte-level BPE), a GPT-2 style tokenizer.json, or one llama.cpp "
              "knows (GPT-2, Llama 3, Qwen2/3, SmolLM...)")
# llama.cpp token types (gguf.TokenType), spelled out so this module imports without gguf
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]  # by id
    types: list[int]
    merges: list[str]  # "left right", in rank order
    eot_id: int | None  # the document separator: bos and eos
    pre: str = PRE_TOKENIZER  # tokenizer.ggml.pre


def _bpe_problem(model: dict, merges: list[str]) -> str | None:
    """What no llama.cpp ``gpt2`` vocabulary can hold, whatever its pre-tokenizer."""
    if model.get("type") != "BPE":
        return f"a {model.get('type') or 'non-BPE'} model"
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "subword prefixes or suffixes"
    if any(len(m.split(" ")) != 2 for m in merges):
        return "merges with spaces in their tokens"
    return None


def _gpt2_shape_problem(spec: dict, merges: list[str]) -> str | None:
    """Why the tokenizer is not GPT-2's split (what ``tokenizer.ggml.pre = "gpt-2"`` makes
    llama.cpp apply), or None: a ByteLevel pre-tokenizer with its regex, no prefix space, no
    normalizer, merges applied as ranked."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel":
        return f"a {pre.get('type') or 'missing'} pre-tokenizer instead of ByteLevel"
    if pre.get("add_prefix_space"):
        return "a ByteLevel pre-tokenizer that adds a prefix space"
    if not pre.get("use_regex", True) and merges:
        return "merges applied across word boundaries (ByteLevel without its regex)"
    if spec.get("normalizer"):
        return "a normalizer"
    if (spec.get("model") or {}).get("ignore_merges"):
        return "whole words looked up before merges (ignore_merges)"
    return None


def pre_tokenizer(tokenizer: TextTokenizer, spec: dict, merges: list[str]) -> str:
    """``tokenizer.ggml.pre``: the name llama.cpp's converter gives this tokenizer (``gguf_pre``:
    by the hash of its ids for a fixed text, e.g. ``qwen2``, ``smollm``, ``llama-bpe``); else
    ``gpt-2`` for a tokenizer of GPT-2's shape (ours: its hash is new, its split is GPT-2's).
    Anything else is refused in one line, as the converter refuses it."""
    from llm_trainer.inference.gguf_pre import KNOWN, check_hash

    digest = check_hash(tokenizer.tok)
    if digest in KNOWN:
        return KNOWN[digest]
    problem = _gpt2_shape_problem(spec, merges)
    if problem is None:
        return PRE_TOKENIZER
    raise UsageError(f"llama.cpp cannot use this model's {tokenizer.kind} tokenizer ({problem}, "
                     f"and not one llama.cpp's converter recognises: chkhsh {digest[:16]}); "
                     "GGUF export needs byte-level BPE it can reproduce",
                     hint=f"models trained with data.tokenizer {EXPORTABLE} export")


def gguf_vocab(tokenizer: TextTokenizer, vocab_size: int | None = None) -> GGUFVocab:
    """The tokenizer as llama.cpp's ``gpt2`` BPE, padded to ``vocab_size`` rows with unused
    tokens; a UsageError naming what exports when llama.cpp could not reproduce it."""
    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    problem = _bpe_problem(model, merges)
    if problem:
        raise UsageError(f"llama.cpp cannot use this model's {tokenizer.kind} tokenizer "
                         f"({problem}); GGUF export needs byte-level BPE",
                         hint=f"models trained with data.tokenizer {EXPORTABLE} export")
    pre = pre_tokenizer(tokenizer, spec, merges)
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
    return GGUFVocab(tokens, types, merges, tokenizer.eot_id, pre)


def _writer(path: Path, arch: str):
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

    return _Writer(str(path), arch)


class _EmptyStrings(list):
    """Marks the one empty array the writer above packs itself."""


def gguf_tensors(ckpt: LoadedCheckpoint) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 array in numpy (row-major) order; GGUF's ne is the reverse
    (token_embd (vocab, n_embd) has ne {n_embd, vocab})."""
    arch = gguf_architecture(ckpt.shape)
    model_sd = load_model(ckpt, "cpu").state_dict()
    return _gpt2_tensors(ckpt, model_sd) if arch == "gpt2" else \
        _llama_tensors(ckpt, model_sd, arch)


def _gpt2_tensors(ckpt: LoadedCheckpoint, model_sd: dict) -> dict[str, np.ndarray]:
    import gguf

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


def _llama_tensors(ckpt: LoadedCheckpoint, model_sd: dict, arch: str
                   ) -> dict[str, np.ndarray]:
    """The family's Hugging Face tensors (``to_hf``, what ``--format hf`` writes) under
    llama.cpp's names (gguf-py's own map, as the converter looks them up); ``llama``: q and
    k rows in pairs (``_to_pairs``). A tied head has no ``output`` tensor."""
    import gguf

    shape = ckpt.shape
    family = next(f for f, a in ARCHITECTURES.items() if a == arch)
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items()
                                          if v == arch), shape.n_layer)
    out = {}
    for hf_name, tensor in FAMILIES[family](shape).to_hf(model_sd).items():
        array = tensor.float().numpy()
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            array = _to_pairs(array, shape.n_head)
        elif arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            array = _to_pairs(array, shape.kv_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:  # every tensor to_hf writes has a llama.cpp name
            raise AssertionError(f"no {arch} GGUF name for {hf_name}")
        out[name] = array
    return out


def _to_pairs(rows: np.ndarray, heads: int) -> np.ndarray:
    """q or k projection rows (weight or bias) from rotate_half's layout (a head's first
    half, then its second) to llama.cpp's ``llama`` rope, which rotates adjacent pairs: row
    j of a head's first half and row j of its second become rows 2j and 2j+1. (The
    inverse of transformers' ``convert_llama_weights_to_hf`` permute; the converter's
    ``LlamaModel.permute``.)"""
    per_head = rows.shape[0] // heads
    return (rows.reshape(heads, 2, per_head // 2, *rows.shape[1:]).swapaxes(1, 2)
            .reshape(rows.shape))


def gguf_architecture(shape) -> str:
    """llama.cpp's architecture for this model: ``gpt2``, ``llama`` or ``qwen3``, the
    Hugging Face family's; a one-line UsageError naming the options no family represents."""
    nearest, misfits = nearest_family(shape)
    if not misfits:
        return ARCHITECTURES[nearest]
    raise UsageError(f"llama.cpp cannot run this model: {', '.join(misfits)} does not fit "
                     f"{nearest}, the nearest; GGUF export writes llama.cpp's gpt2, llama and "
                     f"qwen3 architectures: {HF_EXPORTS}",
                     hint="--format safetensors exports any model in our own layout")


def check_architecture(ckpt: LoadedCheckpoint) -> None:
    """Refuse, in one line before anything is written, a model llama.cpp cannot run."""
    gguf_architecture(ckpt.shape)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}",
                         hint=f"use --dtype {', '.join(DTYPES[:-1])} or {DTYPES[-1]}")


def tensor_type(name: str, array: np.ndarray, dtype: str, head: str):
    """The GGML type tensor ``name`` is written as for ``--dtype``: convert_hf_to_gguf.py's
    rules (1-D tensors, norms, biases and ``position_embd`` f32; a weight whose rows are not
    whole quantization blocks f16), and llama-quantize's output head kept at 8 bits for
    4/5-bit types (``head``: the tensor llama.cpp multiplies the last hidden state by)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if (dtype == "f32" or array.ndim <= 1 or name.endswith("_norm.weight")
            or not name.endswith(".weight") or name == "position_embd.weight"):
        return Q.F32
    if dtype == "f16":
        return Q.F16
    qtype = Q.Q8_0 if name == head else Q[dtype.upper()]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if array.shape[-1] % block == 0 else Q.F16


def file_type(dtype: str):
    """``general.file_type``: what most of the weights are."""
    import gguf

    if dtype == "f32":
        return gguf.LlamaFileType.ALL_F32
    return gguf.LlamaFileType[f"MOSTLY_{dtype.upper()}"]


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
    arch = gguf_architecture(shape)
    w = _writer(path, arch)
    w.add_name(model_name(ckpt))
    w.add_context_length(shape.block_size)
    w.add_embedding_length(shape.n_embd)
    w.add_feed_forward_length(shape.mlp_hidden)
    w.add_block_count(shape.n_layer)
    w.add_head_count(shape.n_head)
    if arch == "gpt2":
        w.add_layer_norm_eps(shape.norm_eps)
    else:
        w.add_vocab_size(shape.vocab_size)
        w.add_head_count_kv(shape.kv_heads)
        w.add_key_length(shape.head_dim)
        w.add_value_length(shape.head_dim)
        w.add_rope_dimension_count(shape.head_dim)
        w.add_rope_freq_base(shape.rope_theta)
        w.add_layer_norm_rms_eps(shape.norm_eps)
    w.add_file_type(file_type(dtype))
    for key, value in llama_cpp_sampling(GenerationSettings()).items():
        (w.add_float32 if isinstance(value, float) else w.add_int32)(key, value)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
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
    tensors = gguf_tensors(ckpt)
    head = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    for name, array in tensors.items():
        qtype = tensor_type(name, array, dtype, head)
        data = gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)
        w.add_tensor(name, data, raw_dtype=qtype)
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


def sampling_parameters(settings: GenerationSettings, context: int) -> dict[str, float | int]:
    """Ollama's ``PARAMETER``s for sampling as ``settings`` does (``generate``'s defaults,
    ``GenerationSettings()``), every one written out, since Ollama's own defaults differ
    (top_k 40, top_p 0.9, repeat_penalty 1.1 over the last 64 tokens, num_predict without
    end). "None" is top_k 0 and top_p 1 there; with top_p 1 (our default) the order in which
    a sampler applies top k and the temperature does not change the result. Our repetition
    penalty is CTRL's, as Ollama's, over every token seen: ``repeat_last_n`` -1, the context
    (all a model sees). ``num_predict`` is ``--max-new-tokens``."""
    return {
        "temperature": settings.temperature,
        "top_k": settings.top_k or 0,
        "top_p": 1.0 if settings.top_p is None else settings.top_p,
        "min_p": 0.0,
        "repeat_penalty": settings.repetition_penalty,
        "repeat_last_n": -1,
        "num_ctx": context,
        "num_predict": settings.max_new_tokens,
        **({"seed": settings.seed} if settings.seed is not None else {}),
    }


def llama_cpp_sampling(settings: GenerationSettings) -> dict[str, float | int]:
    """The ``general.sampling.*`` keys llama.cpp reads as its defaults for this file, so
    ``llama-cli`` samples as ``settings`` does too (its own defaults: top_k 40, top_p 0.95,
    min_p 0.05). Its chain applies top_p before the temperature, ours after: the same when
    top_p is 1, our default."""
    import gguf

    ollama = sampling_parameters(settings, 0)
    S = gguf.Keys.General
    return {S.SAMPLING_TEMP: float(ollama["temperature"]),
            S.SAMPLING_TOP_K: int(ollama["top_k"]), S.SAMPLING_TOP_P: float(ollama["top_p"]),
            S.SAMPLING_MIN_P: float(ollama["min_p"]),
            S.SAMPLING_PENALTY_REPEAT: float(ollama["repeat_penalty"]),
            S.SAMPLING_PENALTY_LAST_N: int(ollama["repeat_last_n"])}


def modelfile(ckpt: LoadedCheckpoint, vocab: GGUFVocab) -> str:
    """An Ollama Modelfile for ./model.gguf. A base model takes the prompt raw; a chat model
    gets its template as a Go ``TEMPLATE`` (``ollama_template``) and stops at its
    end-of-turn marker as well as at the document separator. The sampling parameters are
    ``generate``'s defaults (``sampling_parameters``), the context the model's."""
    from llm_trainer.inference.ollama_template import ollama_template

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
    parameters = sampling_parameters(GenerationSettings(), ckpt.shape.block_size)
    lines.extend(f"PARAMETER {name} {value!r}" for name, value in parameters.items())
    lines.extend(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops)
    return "\n".join(lines) + "\n"


def export_ollama(ckpt: LoadedCheckpoint, out: Path, *, dtype: str = "f32",
                  overwrite: bool = False) -> Path:
    _check_dtype(dtype)
    check_out_folder(out, "ollama", overwrite)
    check_architecture(ckpt)
    vocab = gguf_vocab(ckpt.tokenizer, ckpt.shape.vocab_size)
    text = modelfile(ckpt, vocab)
    with staged_folder(out) as staging:
        write_gguf(ckpt, staging / "model.gguf", vocab, dtype)
        (staging / "Modelfile").write_text(text, encoding="utf-8")
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
