"""Export a checkpoint for other tools.

``hf``: a Hugging Face transformers GPT-2 folder (config.json, model.safetensors, tokenizer
files, generation_config.json) that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load. Our names already match GPT2LMHeadModel's; HF's Conv1D
layers store weights transposed, and a model trained without biases gets zero biases.
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
from llm_trainer.training.checkpoint import LoadedCheckpoint, load_model

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
FORMATS = ("hf", "safetensors", "gguf", "ollama")
GGUF_FORMATS = ("gguf", "ollama")  # the formats --dtype applies to


def state_dict_with_biases(ckpt: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    """The weights by GPT-2 name as our nn.Linear stores them (out, in), without the tied
    ``lm_head.weight``; a model trained without biases gets zero biases (GPT-2 and llama.cpp's
    gpt2 always have them: zeros are the same function)."""
    model = load_model(ckpt, "cpu")
    shape = ckpt.shape
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
          if k != "lm_head.weight"}  # tied to transformer.wte.weight
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


def _special_ids(ckpt: LoadedCheckpoint) -> tuple[int | None, str | None]:
    tok = ckpt.tokenizer.tok
    eot = tok.token_to_id(EOT)
    return (eot, EOT) if eot is not None else (None, None)


def export_hf(ckpt: LoadedCheckpoint, out: Path) -> Path:
    from safetensors.torch import save_file

    shape = ckpt.shape
    eos_id, eos_token = _special_ids(ckpt)
    defaults = GenerationSettings()  # what `llm-trainer generate` samples with
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": shape.vocab_size, "n_positions": shape.block_size,
        "n_ctx": shape.block_size, "n_embd": shape.n_embd, "n_layer": shape.n_layer,
        "n_head": shape.n_head, "n_inner": None,
        "activation_function": "gelu_new" if shape.activation == "gelu_tanh" else "gelu",
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "scale_attn_weights": True,
        "use_cache": True, "tie_word_embeddings": True, "torch_dtype": "float32",
        "bos_token_id": eos_id, "eos_token_id": eos_id,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(hf_state_dict(ckpt), str(out / "model.safetensors"), metadata={"format": "pt"})
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
