"""LoRA adapters and layer freezing for fine-tuning, through the ``peft`` package.

peft wraps our module tree directly (``inject_adapter_in_model`` works on any ``nn.Module``:
our ``c_attn`` / ``c_proj`` / ``c_fc`` are plain ``nn.Linear``), so no adapter layer of our
own is needed. A LoRA checkpoint stores only the adapters (``adapter.safetensors``, the
names peft's ``get_peft_model_state_dict`` gives) and points at the frozen base weights;
``merge`` folds the adapters into the base weights for generation and export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from llm_trainer.config import FinetuneConfig

ADAPTER_FILE = "adapter.safetensors"


def lora_settings(ft: FinetuneConfig) -> dict[str, Any]:
    """What defines the adapters (stored in each LoRA checkpoint's config.json)."""
    return {"r": ft.lora_r, "alpha": ft.lora_alpha, "dropout": ft.lora_dropout,
            "targets": list(ft.lora_targets)}


def settings_of(model: torch.nn.Module) -> dict[str, Any]:
    """The settings the model's adapters were built with (what a checkpoint must record)."""
    cfg = model.peft_config["default"]
    return {"r": cfg.r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "targets": sorted(cfg.target_modules)}


def apply_lora(model: torch.nn.Module, settings: dict[str, Any]) -> torch.nn.Module:
    """Freeze ``model`` and add trainable rank-r adapters to the target linear layers."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=int(settings["r"]), lora_alpha=float(settings["alpha"]),
                        lora_dropout=float(settings["dropout"]),
                        target_modules=list(settings["targets"]), bias="none")
    return inject_adapter_in_model(config, model)


def is_lora(model: torch.nn.Module) -> bool:
    return any("lora_A" in name for name, _ in model.named_parameters())


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def load_adapters(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put saved adapter weights into a model that already has (fresh) adapters."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    wrong = [k for k in (*getattr(result, "unexpected_keys", ()),
                         *getattr(result, "missing_keys", ())) if "lora_" in k]
    if wrong:
        raise ValueError(f"adapter weights do not fit the model: {wrong[:3]}")


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every adapter into its base layer and put the plain ``nn.Linear`` back, so the
    model has our usual parameter names again (W + scale * B @ A, computed by peft)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model


def freeze_layers(model: torch.nn.Module, n: int) -> None:
    """Keep the token and position embeddings (and so the tied head) and the first ``n``
    blocks fixed: they stop receiving gradients and optimizer state."""
    if n <= 0:
        return
    positions = getattr(model.transformer, "wpe", None)  # none with rotary positions
    frozen = [model.transformer.wte, *([positions] if positions is not None else []),
              *model.transformer.h[:n]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)


def trainable(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters), the tied head counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
