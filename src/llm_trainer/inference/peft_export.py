"""Export a LoRA model's adapters as a peft adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``), for ``PeftModel.from_pretrained(base, folder)`` on the
Hugging Face model that ``--format hf`` writes for the same architecture (GPT2LMHeadModel,
LlamaForCausalLM, Qwen3ForCausalLM).

Our adapters are peft's own layers (``model.lora``) on our module names; the export renames
them to the transformers model's, with the family's state-dict adapter (``model.families``)
as the one map of names:

- GPT-2's names are ours, and its ``Conv1D`` layers store weights transposed: the factors
  keep their shapes (peft's LoRA on a Conv1D has the same A (r, in) and B (out, r)), and the
  config says ``fan_in_fan_out: true``, which peft needs to merge and to take DoRA's norms.
- Llama / Qwen3 split our fused layers: ``c_attn`` into q/k/v_proj, the swiglu ``c_fc`` into
  gate/up_proj. W + s B A split by output rows is, for each part, W_i + s B_i A: every part
  gets the same A and its rows of B, exactly. DoRA's magnitude is one number per output row
  (the row norms of W + s B A), so it splits by the same rows; rsLoRA is a scale.
- The embedding rows a chat template added (``lora.tokens``, peft's Trainable Tokens) keep
  their values under the transformers model's embedding (and untied head) name.

A fused layer adapts all its parts, so an adapter on ``c_attn`` lists q_proj, k_proj and
v_proj whatever name the user typed (``config.LORA_ALIASES``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_trainer.errors import UsageError
from llm_trainer.hub import PREFIX, HubModel, parse_model_spec
from llm_trainer.model.families import GPT2Adapter, family_for

if TYPE_CHECKING:
    import torch

    from llm_trainer.checkpoint_io import LoadedCheckpoint
    from llm_trainer.model.shape import ModelShape

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MODEL_PREFIX = "base_model.model."  # what peft's saved keys start with (PeftModel's wrapping)
TOKENS = ".token_adapter."  # a Trainable Tokens key: MODULE.token_adapter.trainable_tokens_delta


def export_peft(ckpt: LoadedCheckpoint, out: Path) -> Path:
    """Write the checkpoint's adapters into ``out`` (checked by the caller)."""
    if ckpt.lora is None:
        raise UsageError(f"--format peft is for a model trained with --lora; "
                         f"{ckpt.path.parent.name} has full weights",
                         hint="--format hf exports them as a transformers folder")
    from safetensors.torch import save_file

    from llm_trainer.checkpoint_io import load_model

    try:  # a model --format hf cannot write has no transformers base for the adapter
        family_for(ckpt.shape)
    except UsageError as exc:
        raise UsageError(f"--format peft needs a base that --format hf can write: {exc}",
                         hint="--format safetensors exports the model, adapters merged, in "
                              "our own layout") from None
    model = load_model(ckpt, "cpu", merged=False)
    config, tensors = peft_adapter(model, ckpt.shape, ckpt.lora,
                                   base=base_model_path(ckpt))
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    return out


def base_model_path(ckpt: LoadedCheckpoint) -> str | None:
    """The transformers folder the LoRA model was imported from (``--init-from hf:FOLDER``),
    when it is still there: what ``AutoPeftModelForCausalLM`` loads as the base. None for a
    model whose base was one of ours: the user passes its ``--format hf`` export."""
    source = ckpt.config.finetune.init_from or ""
    if not source.startswith(PREFIX):
        return None
    where = parse_model_spec(source)  # the one reading of hf:X (a Hub id is not a folder)
    if isinstance(where, HubModel):
        return None
    return str(where) if (where / "config.json").is_file() else None


def adapter_base(folder: Path) -> tuple[str | None, int | None]:
    """An exported adapter's ``base_model_name_or_path`` (None when unknown), and the
    embedding rows that base must be resized to first (``resize_token_embeddings``) when a
    chat template added tokens it lacks, else None. The added rows' values in the base do
    not matter: peft's Trainable Tokens write the trained rows over them."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    base = config.get("base_model_name_or_path")
    rows = config.get("trainable_token_indices") or {}
    lists = rows.values() if isinstance(rows, dict) else [rows]  # peft's list: the embedding
    need = 1 + max((int(i) for ids in lists for i in ids), default=-1)
    try:
        has = json.loads((Path(base) / "config.json").read_text())["vocab_size"] if base else 0
    except (OSError, ValueError, KeyError):
        has = 0
    return base, need if base and need > int(has) else None


def peft_adapter(model: torch.nn.Module, shape: ModelShape, settings: dict[str, Any], *,
                 base: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter_config.json, adapter_model.safetensors' tensors) for ``model``, our GPT with
    adapters (``model.lora.apply_lora`` with ``settings``), in the names of the transformers
    model ``--format hf`` writes for ``shape``."""
    from peft import LoraConfig

    from llm_trainer.model.lora import EMBEDDING, VARIANTS, adapter_state_dict

    adapter = family_for(shape)(shape)
    parts, every = _parts(adapter)
    tensors: dict[str, torch.Tensor] = {}
    adapted: set[str] = set()  # the transformers modules that get LoRA layers
    for key, tensor in adapter_state_dict(model).items():
        module, sep, leaf = key.partition(TOKENS) if TOKENS in key else key.partition(".lora_")
        theirs = parts.get(module, ((module, tensor.shape[0]),))
        if sep == ".lora_" and leaf != "A.weight":  # B, magnitude: one block of rows per part
            blocks = tensor.split([rows for _, rows in theirs], dim=0)
        else:  # A: every part's own copy; a token row keeps its values
            blocks = tuple(tensor for _ in theirs)
        for (name, _), block in zip(theirs, blocks, strict=True):
            tensors[f"{MODEL_PREFIX}{name}{sep}{leaf}"] = block.clone().contiguous()
            if sep == ".lora_":
                adapted.add(name)
    tokens = [int(i) for i in settings.get("tokens") or ()]
    rows = None
    if tokens:  # a tied head shares the embedding's rows, as in training
        embedding = parts.get(EMBEDDING, ((EMBEDDING, 0),))[0][0]
        rows = {embedding.rpartition(".")[2]: tokens}
        if not shape.tie_embeddings:
            rows["lm_head"] = tokens
    config = LoraConfig(
        r=int(settings["r"]), lora_alpha=float(settings["alpha"]),
        lora_dropout=float(settings["dropout"]), bias="none", task_type="CAUSAL_LM",
        target_modules=_suffixes(adapted, every),
        fan_in_fan_out=isinstance(adapter, GPT2Adapter), trainable_token_indices=rows,
        base_model_name_or_path=base, inference_mode=True,
        **{key: bool(settings.get(key)) for key in VARIANTS})
    out = config.to_dict()
    out["target_modules"] = sorted(out["target_modules"])
    return json.loads(json.dumps(out, default=list)), tensors  # sets -> lists, as peft saves


def _parts(adapter: Any) -> tuple[dict[str, tuple[tuple[str, int], ...]], set[str]]:
    """(our module -> the transformers modules it is made of with their output rows, for
    every module whose name or layout differs; every weighted module of the transformers
    model, to name targets by the shortest suffix that picks no others). From the family's
    ``to_hf`` on a model without storage (the meta device): its one map of names."""
    import torch

    from llm_trainer.model.gpt import GPT

    with torch.device("meta"):
        ours = GPT(adapter.shape).state_dict()
    rows = {name: t.shape[0] for name, t in adapter.to_hf(ours).items()}
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    for name, theirs in adapter.hf_names().items():
        if name.endswith(".weight"):
            out[name.removesuffix(".weight")] = tuple(
                (hf.removesuffix(".weight"), rows[hf]) for hf in theirs)
    return out, {name.removesuffix(".weight") for name in rows if name.endswith(".weight")}


def _suffixes(adapted: set[str], every: set[str]) -> list[str]:
    """The shortest dotted suffixes that pick exactly the ``adapted`` modules among ``every``
    module (peft matches ``target_modules`` by name suffix): ``q_proj``, or GPT-2's
    ``attn.c_proj`` where ``c_proj`` alone would also pick the MLP's."""
    out: set[str] = set()
    for name in adapted:
        parts = name.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if all(m in adapted for m in every if m == suffix or m.endswith("." + suffix)):
                out.add(suffix)
                break
    return sorted(out)
