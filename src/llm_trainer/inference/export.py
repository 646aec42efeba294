"""Export a checkpoint for other tools.

``hf``: a Hugging Face transformers folder (config.json, model.safetensors, tokenizer files,
generation_config.json) that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load, in the one architecture that represents the model:

  model options                                          transformers class
  pos learned, norm layernorm, activation gelu|gelu_tanh GPT2LMHeadModel
  pos rope, norm rmsnorm, activation swiglu              LlamaForCausalLM
  the same with qk_norm true (and bias false)            Qwen3ForCausalLM

(``tie_embeddings: false`` maps to ``tie_word_embeddings: false`` in each; every other
combination is refused before anything is written.) GPT-2: our names already match
GPT2LMHeadModel's; HF's Conv1D layers store weights transposed, and a model trained without
biases gets zero biases. Llama / Qwen3: ``c_attn`` splits into q/k/v_proj, the swiglu
``c_fc`` into gate_proj (its first half) and up_proj; the rotary embedding already follows
Llama's convention, so no permutation is needed.
``safetensors``: our own weights, config and tokenizer, unchanged.
``gguf`` / ``ollama``: one GGUF file for llama.cpp, or a folder with it and an Ollama
Modelfile (``gguf_export``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from llm_trainer.data.tokenizer import EOT
from llm_trainer.errors import UsageError
from llm_trainer.inference.generate import GenerationSettings
from llm_trainer.model.gpt import RMS_EPS, GPTShape
from llm_trainer.training.checkpoint import LoadedCheckpoint, load_model

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
FORMATS = ("hf", "safetensors", "gguf", "ollama")
GGUF_FORMATS = ("gguf", "ollama")  # the formats --dtype applies to
# Hugging Face architectures --format hf writes: the model options each one requires
HF_FAMILIES: dict[str, dict[str, tuple]] = {
    "GPT-2": {"pos": ("learned",), "norm": ("layernorm",), "activation": ("gelu", "gelu_tanh"),
              "qk_norm": (False,)},
    "Llama": {"pos": ("rope",), "norm": ("rmsnorm",), "activation": ("swiglu",),
              "qk_norm": (False,)},
    "Qwen3": {"pos": ("rope",), "norm": ("rmsnorm",), "activation": ("swiglu",),
              "qk_norm": (True,), "bias": (False,)},
}
HF_EXPORTS = ("GPT-2 (pos learned, norm layernorm, activation gelu or gelu_tanh), Llama (pos "
              "rope, norm rmsnorm, activation swiglu) and Qwen3 (Llama's with qk_norm, no bias)")


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def hf_family(shape: GPTShape) -> str:
    """The Hugging Face architecture that represents ``shape`` (a key of HF_FAMILIES), or a
    one-line UsageError naming what the nearest one cannot represent."""
    misfits = {family: [f"{k} {_show(getattr(shape, k))}" for k, allowed in need.items()
                        if getattr(shape, k) not in allowed]
               for family, need in HF_FAMILIES.items()}
    for family, odd in misfits.items():
        if not odd:
            return family
    # the nearest: fewest misfits; on a tie, one that has the model's qk_norm (Qwen3 for a
    # Llama block with qk_norm and biases: "bias true" says more than "qk_norm true")
    nearest = min(misfits, key=lambda f: (len(misfits[f]),
                                          any(o.startswith("qk_norm") for o in misfits[f])))
    raise UsageError(f"--format hf cannot represent this model: {', '.join(misfits[nearest])} "
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
            sd[p + "attn.c_attn.bias"] = torch.zeros(3 * shape.n_embd)
            sd[p + "attn.c_proj.bias"] = torch.zeros(shape.n_embd)
            sd[p + "mlp.c_fc.bias"] = torch.zeros(4 * shape.n_embd)
            sd[p + "mlp.c_proj.bias"] = torch.zeros(shape.n_embd)
        sd["transformer.ln_f.bias"] = torch.zeros(shape.n_embd)
    return sd


def hf_state_dict(ckpt: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    sd = state_dict_with_biases(ckpt)
    for name in list(sd):
        if name.endswith(CONV1D):  # HF's Conv1D stores (in, out)
            sd[name] = sd[name].t().contiguous()
    return sd


def llama_state_dict(ckpt: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    """Our weights by Llama / Qwen3 name: c_attn (3C, C) -> q/k/v_proj (its row thirds, heads
    in the same order), swiglu c_fc (2H, C) -> gate_proj (first half), up_proj (second)."""
    shape = ckpt.shape
    ours = {k: v.detach().contiguous() for k, v in load_model(ckpt, "cpu").state_dict().items()}
    sd = {"model.embed_tokens.weight": ours["transformer.wte.weight"],
          "model.norm.weight": ours["transformer.ln_f.weight"]}
    if not shape.tie_embeddings:
        sd["lm_head.weight"] = ours["lm_head.weight"]
    parts = ["weight", "bias"] if shape.bias else ["weight"]
    for i in range(shape.n_layer):
        p, h = f"transformer.h.{i}.", f"model.layers.{i}."
        sd[h + "input_layernorm.weight"] = ours[p + "ln_1.weight"]
        sd[h + "post_attention_layernorm.weight"] = ours[p + "ln_2.weight"]
        if shape.qk_norm:
            sd[h + "self_attn.q_norm.weight"] = ours[p + "attn.q_norm.weight"]
            sd[h + "self_attn.k_norm.weight"] = ours[p + "attn.k_norm.weight"]
        for part in parts:
            q, k, v = ours[f"{p}attn.c_attn.{part}"].chunk(3, dim=0)
            gate, up = ours[f"{p}mlp.c_fc.{part}"].chunk(2, dim=0)
            for name, t in (("self_attn.q_proj", q), ("self_attn.k_proj", k),
                            ("self_attn.v_proj", v), ("self_attn.o_proj",
                                                       ours[f"{p}attn.c_proj.{part}"]),
                            ("mlp.gate_proj", gate), ("mlp.up_proj", up),
                            ("mlp.down_proj", ours[f"{p}mlp.c_proj.{part}"])):
                sd[f"{h}{name}.{part}"] = t.clone().contiguous()
    return sd


def hf_config(shape: GPTShape, family: str, eos_id: int | None) -> dict:
    """config.json for ``family`` (see HF_FAMILIES)."""
    common = {"vocab_size": shape.vocab_size, "tie_word_embeddings": shape.tie_embeddings,
              "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float32",
              "bos_token_id": eos_id, "eos_token_id": eos_id}
    if family == "GPT-2":
        return {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "n_positions": shape.block_size, "n_ctx": shape.block_size,
            "n_embd": shape.n_embd, "n_layer": shape.n_layer, "n_head": shape.n_head,
            "n_inner": None,
            "activation_function": "gelu_new" if shape.activation == "gelu_tanh" else "gelu",
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "layer_norm_epsilon": 1e-5, "scale_attn_weights": True, **common}
    arch, model_type = (("Qwen3ForCausalLM", "qwen3") if family == "Qwen3"
                        else ("LlamaForCausalLM", "llama"))
    config = {
        "architectures": [arch], "model_type": model_type, "hidden_size": shape.n_embd,
        "intermediate_size": shape.mlp_hidden, "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head, "num_key_value_heads": shape.n_head,
        "head_dim": shape.head_dim, "hidden_act": "silu",
        "max_position_embeddings": shape.block_size, "rms_norm_eps": RMS_EPS,
        # rope_theta: transformers 4.x; rope_parameters: 5.x
        "rope_theta": shape.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": shape.rope_theta},
        "attention_bias": shape.bias, "attention_dropout": 0.0, **common}
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
