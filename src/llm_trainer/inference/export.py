"""Export a checkpoint for other tools.

``hf``: a Hugging Face transformers folder (config.json, model.safetensors, tokenizer files,
generation_config.json, and a model card README.md: ``model_card``) that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load, in the one
architecture that represents the model:

  model options                                          transformers class
  pos learned, norm layernorm, activation gelu|gelu_tanh GPT2LMHeadModel
  pos rope, norm rmsnorm, activation swiglu              LlamaForCausalLM
  the same with qk_norm true (and bias false)            Qwen3ForCausalLM

(``tie_embeddings: false`` maps to ``tie_word_embeddings: false`` in each; every other
combination is refused before anything is written.) The names, classes and weight layout are
the family's state-dict adapter's (``model.families``), which ``train --init-from`` reads
such a folder back with: GPT-2's Conv1D layers store weights transposed, and a model trained
without biases gets zero biases; Llama / Qwen3 split ``c_attn`` into q/k/v_proj and the
swiglu ``c_fc`` into gate_proj (its first half) and up_proj.
``safetensors``: our own weights, config and tokenizer, unchanged.
``gguf`` / ``ollama``: one GGUF file for llama.cpp, or a folder with it and an Ollama
Modelfile (``gguf_export``).
``peft``: a LoRA model's adapters as a peft adapter folder for the ``hf`` export's model
(``peft_export``).

A chat model's template goes with it in every format (``chat_settings`` here for ``hf``; the
GGUF keys and the Modelfile TEMPLATE in ``gguf_export``); ``safetensors`` copies the
checkpoint's config.json, which holds it.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from llm_trainer.checkpoint_io import LoadedCheckpoint, load_model
from llm_trainer.data.chat import stop_ids
from llm_trainer.errors import UsageError
from llm_trainer.inference.outputs import check_out_folder, staged_folder
from llm_trainer.inference.settings import GenerationSettings
from llm_trainer.model.families import family_for

FORMATS = ("hf", "safetensors", "gguf", "ollama", "peft")
GGUF_FORMATS = ("gguf", "ollama")  # the formats --dtype applies to


def _special_ids(ckpt: LoadedCheckpoint) -> tuple[int | None, str | None]:
    """The document separator (``<|endoftext|>``, or an imported tokenizer's ``</s>``...)."""
    eot = ckpt.tokenizer.eot_id
    return (eot, ckpt.tokenizer.tok.id_to_token(eot)) if eot is not None else (None, None)


def chat_settings(ckpt: LoadedCheckpoint) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a chat model's ``tokenizer_config.json`` and ``generation_config.json`` add, so
    that transformers writes a conversation as we do and stops where we stop:

    - ``chat_template``, the jinja source, and the tokens it is rendered with: a template
      from a Hugging Face folder gets that folder's ``bos_token`` / ``eos_token`` (it may
      use them); ChatML keeps ``<|endoftext|>`` as BOS and ends a reply with
      ``<|im_end|>`` as EOS (as Qwen's chat models), the separator becoming the pad token;
    - the template's markers as ``additional_special_tokens`` (they are already single
      special tokens in tokenizer.json);
    - ``eos_token_id``: the end-of-turn id first, then our other stop ids (``stop_ids``).
    Both dicts are empty for a model without a template."""
    chat = ckpt.chat
    if chat is None:
        return {}, {}
    tok = ckpt.tokenizer
    eot_id, eot_token = _special_ids(ckpt)
    if chat.kind == "hf":
        bos, eos = chat.bos_token, chat.eos_token
    else:  # a marker missing from the vocabulary would be added by transformers: not as EOS
        bos = eot_token
        eos = chat.end_of_turn if tok.tok.token_to_id(chat.end_of_turn) is not None \
            else eot_token
    pad = eot_token if eot_token and eot_token != eos else None
    named = {"bos_token": bos, "eos_token": eos, "pad_token": pad}
    markers = [t for t in dict.fromkeys((*chat.special_tokens, chat.end_of_turn))
               if tok.tok.token_to_id(t) is not None and t not in named.values()]
    tok_config: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
    if markers:
        tok_config["additional_special_tokens"] = markers
    tok_config["chat_template"] = chat.source
    end = tok.tok.token_to_id(chat.end_of_turn)
    stops = list(dict.fromkeys([i for i in (end, *stop_ids(tok, chat)) if i is not None]))
    gen: dict[str, Any] = {"eos_token_id": stops}
    if bos is not None and tok.tok.token_to_id(bos) is not None:
        gen["bos_token_id"] = tok.tok.token_to_id(bos)
    if pad is not None:
        gen["pad_token_id"] = eot_id
    return tok_config, gen


def export_hf(ckpt: LoadedCheckpoint, out: Path, card: str | None = None) -> Path:
    """``card``: the model card (README.md, ``model_card``), when the model's record is
    known."""
    from safetensors.torch import save_file

    shape = ckpt.shape
    adapter = family_for(shape)(shape)  # refuses before anything is written
    eos_id, eos_token = _special_ids(ckpt)
    chat_tok, chat_gen = chat_settings(ckpt)
    defaults = GenerationSettings()  # what `llm-trainer generate` samples with
    weights = adapter.to_hf(load_model(ckpt, "cpu").state_dict())
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(adapter.hf_config(eos_id), indent=2))
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": eos_id, "eos_token_id": eos_id, "max_length": shape.block_size,
        "do_sample": True, "temperature": defaults.temperature, "top_k": defaults.top_k,
        **chat_gen}, indent=2))
    ckpt.tokenizer.save(out / "tokenizer.json")
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast",
                  "model_max_length": shape.block_size, "clean_up_tokenization_spaces": False}
    if eos_token:
        tok_config.update({"eos_token": eos_token, "bos_token": eos_token})
    if ckpt.tokenizer.tok.token_to_id("[UNK]") is not None:
        tok_config["unk_token"] = "[UNK]"
    if chat_tok:
        tok_config = {k: v for k, v in tok_config.items()
                      if k not in ("bos_token", "eos_token")} | chat_tok
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: v for k, v in tok_config.items()
         if k.endswith("_token") or k == "additional_special_tokens"}, indent=2))
    if card is not None:
        (out / "README.md").write_text(card, encoding="utf-8")
    return out


def export_safetensors(ckpt: LoadedCheckpoint, out: Path) -> Path:
    """Our own files; a LoRA checkpoint's adapters are merged into full weights first."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ckpt.path / "tokenizer.json", out / "tokenizer.json")
    if ckpt.lora is None:
        for name in ("model.safetensors", "config.json"):
            shutil.copy2(ckpt.path / name, out / name)
        return out
    from safetensors.torch import save_model

    save_model(load_model(ckpt, "cpu"), str(out / "model.safetensors"),
               metadata={"format": "pt", "merged_lora": json.dumps(ckpt.lora)})
    config = json.loads((ckpt.path / "config.json").read_text())
    config.pop("base", None)
    config["merged_lora"] = config.pop("lora", None)  # full weights now: no base to find
    config["config"]["finetune"]["lora_r"] = 0
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def export(ckpt: LoadedCheckpoint, out: Path, fmt: str, *, overwrite: bool = False,
           dtype: str | None = None, card: str | None = None) -> Path:
    """``card``: README.md of an ``hf`` folder (``model_card``)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}",
                         hint="use --format " + ", ".join(FORMATS[:-1]) + f" or {FORMATS[-1]}")
    if dtype is not None and fmt not in GGUF_FORMATS:
        raise UsageError(f"--dtype is for --format gguf or ollama, not {fmt}",
                         hint=f"leave --dtype out: {fmt} keeps the checkpoint's float32 weights")
    out = Path(out).expanduser()
    if fmt in GGUF_FORMATS:
        from llm_trainer.extras import require

        require("gguf", option=f"--format {fmt}")
        from llm_trainer.inference import gguf_export

        if fmt == "gguf":
            return gguf_export.export_gguf(ckpt, out, dtype=dtype or "f32", overwrite=overwrite)
        return gguf_export.export_ollama(ckpt, out, dtype=dtype or "f32", overwrite=overwrite)
    if fmt == "hf":
        family_for(ckpt.shape)
    check_out_folder(out, fmt, overwrite)
    if fmt == "peft":
        from llm_trainer.inference.peft_export import export_peft

        write = export_peft
    elif fmt == "hf":
        write = partial(export_hf, card=card)
    else:
        write = export_safetensors
    with staged_folder(out) as staging:
        write(ckpt, staging)
    return out
