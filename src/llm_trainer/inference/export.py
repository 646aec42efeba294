"""Export a checkpoint for other tools.

``hf``: a Hugging Face transformers folder (config.json, model.safetensors, tokenizer files,
generation_config.json) that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load, in the one architecture that represents the model:

  model options                                          transformers class
  pos learned, norm layernorm, activation gelu|gelu_tanh GPT2LMHeadModel
  pos rope, norm rmsnorm, activation swiglu              LlamaForCausalLM
  the same with qk_norm true (and bias false)            Qwen3ForCausalLM

(``tie_embeddings: false`` maps to ``tie_word_embeddings: false`` in each; every other
combination is refused before anything is written.) The names, classes and weight layout
are ``model.hf_layout``'s, which ``train --init-from`` reads such a folder back with: GPT-2's
Conv1D layers store weights transposed, and a model trained without biases gets zero biases;
Llama / Qwen3 split ``c_attn`` into q/k/v_proj and the swiglu ``c_fc`` into gate_proj (its
first half) and up_proj.
``safetensors``: our own weights, config and tokenizer, unchanged.
``gguf`` / ``ollama``: one GGUF file for llama.cpp, or a folder with it and an Ollama
Modelfile (``gguf_export``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from llm_trainer.checkpoint_io import LoadedCheckpoint, load_model
from llm_trainer.data.tokenizer import EOT
from llm_trainer.errors import UsageError
from llm_trainer.inference.generate import GenerationSettings
from llm_trainer.model.hf_layout import (
    GPT2_ACTIVATIONS,
    GPT2_CONV1D,
    HF_FAMILIES,
    llama_rows,
    llama_weight_names,
    misfits,
)
from llm_trainer.model.shape import ModelShape

FORMATS = ("hf", "safetensors", "gguf", "ollama")
GGUF_FORMATS = ("gguf", "ollama")  # the formats --dtype applies to
HF_EXPORTS = ("GPT-2 (pos learned, norm layernorm, activation gelu or gelu_tanh), Llama (pos "
              "rope, norm rmsnorm, activation swiglu) and Qwen3 (Llama's with qk_norm, no bias)")


def hf_family(shape: ModelShape) -> str:
    """The Hugging Face architecture that represents ``shape`` (a key of HF_FAMILIES), or a
    one-line UsageError naming what the nearest one cannot represent."""
    odd = {family: misfits(shape, family) for family in HF_FAMILIES}
    for family, names in odd.items():
        if not names:
            return family
    # the nearest: fewest misfits; on a tie, one that has the model's qk_norm (Qwen3 for a
    # Llama block with qk_norm and biases: "bias true" says more than "qk_norm true")
    nearest = min(odd, key=lambda f: (len(odd[f]), any(o.startswith("qk_norm") for o in odd[f])))
    raise UsageError(f"--format hf cannot represent this model: {', '.join(odd[nearest])} "
                     f"does not fit {nearest}, the nearest; it exports {HF_EXPORTS}",
                     hint="--format safetensors exports any model in our own layout")


def state_dict_with_biases(ckpt: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    """The weights by GPT-2 name as our nn.Linear stores them (out, in), without a tied
    ``lm_head.weight``; a model trained without biases gets zero biases (GPT-2 and llama.cpp's
    gpt2 always have them: zeros are the same function). GPT-2's block only (see hf_family)."""
    model = load_model(ckpt, "cpu")
    shape = ckpt.shape
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
          if k != "lm_head.weight" or not shape.tie_embeddings}  # tied: transformer.wte
    if not shape.bias:
        for i in range(shape.n_layer):
            p = f"transformer.h.{i}."
            sd[p + "ln_1.bias"] = torch.zeros(shape.n_embd)
            sd[p + "ln_2.bias"] = torch.zeros(shape.n_embd)
            sd[p + "attn.c_attn.bias"] = torch.zeros(shape.q_dim + 2 * shape.kv_dim)
            sd[p + "attn.c_proj.bias"] = torch.zeros(shape.n_embd)
            sd[p + "mlp.c_fc.bias"] = torch.zeros(shape.mlp_hidden)
            sd[p + "mlp.c_proj.bias"] = torch.zeros(shape.n_embd)
        sd["transformer.ln_f.bias"] = torch.zeros(shape.n_embd)
    return sd


def hf_state_dict(ckpt: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    sd = state_dict_with_biases(ckpt)
    for name in list(sd):
        if name.endswith(GPT2_CONV1D):  # HF's Conv1D stores (in, out)
            sd[name] = sd[name].t().contiguous()
    return sd


def llama_state_dict(ckpt: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    """Our weights by Llama / Qwen3 name (``hf_layout.llama_weight_names``): c_attn
    (q_dim + 2 kv_dim, C) -> q/k/v_proj, swiglu c_fc (2H, C) -> gate_proj, up_proj (its
    halves)."""
    shape = ckpt.shape
    ours = load_model(ckpt, "cpu").state_dict()
    sd = {}
    for name, theirs in llama_weight_names(shape.n_layer, qk_norm=shape.qk_norm,
                                           bias=shape.bias,
                                           tie_embeddings=shape.tie_embeddings):
        weight = ours[name].detach()
        sizes = llama_rows(name, len(theirs), q_dim=shape.q_dim, kv_dim=shape.kv_dim,
                           rows=weight.shape[0])
        for hf_name, rows in zip(theirs, weight.split(sizes, dim=0), strict=True):
            sd[hf_name] = rows.clone().contiguous()
    return sd


def hf_config(shape: ModelShape, family: str, eos_id: int | None) -> dict:
    """config.json for ``family`` (see HF_FAMILIES)."""
    cls = HF_FAMILIES[family]
    common = {"architectures": [cls.architecture], "model_type": cls.model_type,
              "vocab_size": shape.vocab_size, "tie_word_embeddings": shape.tie_embeddings,
              "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float32",
              "bos_token_id": eos_id, "eos_token_id": eos_id}
    if family == "GPT-2":
        activation = next(hf for hf, ours in GPT2_ACTIVATIONS.items()
                          if ours == shape.activation)
        return {
            **common, "n_positions": shape.block_size, "n_ctx": shape.block_size,
            "n_embd": shape.n_embd, "n_layer": shape.n_layer, "n_head": shape.n_head,
            "n_inner": shape.mlp_width, "activation_function": activation,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "layer_norm_epsilon": shape.norm_eps, "scale_attn_weights": True}
    config = {
        **common, "hidden_size": shape.n_embd,
        "intermediate_size": shape.mlp_hidden, "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head, "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim, "hidden_act": "silu",
        "max_position_embeddings": shape.block_size, "rms_norm_eps": shape.norm_eps,
        # rope_theta: transformers 4.x; rope_parameters: 5.x
        "rope_theta": shape.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": shape.rope_theta},
        "attention_bias": shape.bias, "attention_dropout": 0.0}
    if family == "Llama":
        config.update(mlp_bias=shape.bias, pretraining_tp=1)
    else:
        config.update(use_sliding_window=False, sliding_window=None,
                      max_window_layers=shape.n_layer)
    return config


def _special_ids(ckpt: LoadedCheckpoint) -> tuple[int | None, str | None]:
    tok = ckpt.tokenizer.tok
    eot = tok.token_to_id(EOT)
    return (eot, EOT) if eot is not None else (None, None)


def export_hf(ckpt: LoadedCheckpoint, out: Path) -> Path:
    from safetensors.torch import save_file

    shape = ckpt.shape
    family = hf_family(shape)  # refuses before anything is written
    eos_id, eos_token = _special_ids(ckpt)
    defaults = GenerationSettings()  # what `llm-trainer generate` samples with
    weights = hf_state_dict(ckpt) if family == "GPT-2" else llama_state_dict(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(shape, family, eos_id), indent=2))
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": eos_id, "eos_token_id": eos_id, "max_length": shape.block_size,
        "do_sample": True, "temperature": defaults.temperature, "top_k": defaults.top_k},
        indent=2))
    ckpt.tokenizer.save(out / "tokenizer.json")
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast",
                  "model_max_length": shape.block_size, "clean_up_tokenization_spaces": False}
    if eos_token:
        tok_config.update({"eos_token": eos_token, "bos_token": eos_token})
    if ckpt.tokenizer.tok.token_to_id("[UNK]") is not None:
        tok_config["unk_token"] = "[UNK]"
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: v for k, v in tok_config.items() if k.endswith("_token")}, indent=2))
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
           dtype: str | None = None) -> Path:
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
        hf_family(ckpt.shape)
    check_out_folder(out, fmt, overwrite)
    return export_hf(ckpt, out) if fmt == "hf" else export_safetensors(ckpt, out)


def check_out_folder(out: Path, fmt: str, overwrite: bool) -> None:
    """A format that writes a folder refuses a file, and a non-empty folder without --force."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; --format {fmt} writes a folder",
                         hint="pick a folder for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty",
                         hint="pick a new --out folder, or pass --force to overwrite")
