"""LoRA adapters and layer freezing for fine-tuning, through the ``peft`` package.

peft wraps our module tree directly (``inject_adapter_in_model`` works on any ``nn.Module``:
our ``c_attn`` / ``c_proj`` / ``c_fc`` are plain ``nn.Linear``), so no adapter layer of our
own is needed. A LoRA checkpoint stores only the adapters (``adapter.safetensors``, the
names peft's ``get_peft_model_state_dict`` gives) and points at the frozen base weights;
``merge`` folds the adapters into the base weights for generation and export.

Tokens a chat template added to the tokenizer (``settings["tokens"]``, their ids) train as
peft's Trainable Tokens (``LoraConfig(trainable_token_indices=...)``): only those rows of the
embedding (and of an untied head) change, and they are saved with the adapters. The frozen
embedding would otherwise keep every added row at the same mean vector, so the model could
never tell ``<|im_start|>`` from ``<|im_end|>``.

rsLoRA (``use_rslora``: updates scaled by alpha / sqrt(r)) and DoRA (``use_dora``: a trained
magnitude per output row, the row norms of W + scale * B @ A) are peft's own layers, so they
compute, save and merge as peft defines them; ``inference.peft_export`` writes the adapters in
the names of the Hugging Face model our ``--format hf`` export gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from llm_trainer.config import FinetuneConfig

ADAPTER_FILE = "adapter.safetensors"
EMBEDDING = "transformer.wte"  # the module whose added rows train (peft's Trainable Tokens)
VARIANTS = ("use_rslora", "use_dora")  # LoraConfig's flags, under peft's names


def lora_settings(ft: FinetuneConfig, tokens: Sequence[int] = ()) -> dict[str, Any]:
    """What defines the adapters (stored in each LoRA checkpoint's config.json). ``tokens``:
    the ids the tokenizer gained for this run (a chat template's markers), whose embedding
    rows train with the adapters; recorded only when there are some, so older checkpoints
    read the same (as rsLoRA and DoRA, recorded only when on)."""
    settings: dict[str, Any] = {"r": ft.lora_r, "alpha": ft.lora_alpha,
                                "dropout": ft.lora_dropout, "targets": list(ft.lora_targets)}
    for key in VARIANTS:
        if getattr(ft, f"lora_{key}"):
            settings[key] = True
    if tokens:
        settings["tokens"] = [int(i) for i in tokens]
    return settings


def settings_of(model: torch.nn.Module) -> dict[str, Any]:
    """The settings the model's adapters were built with (what a checkpoint must record)."""
    cfg = model.peft_config["default"]
    settings = {"r": cfg.r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                "targets": sorted(cfg.target_modules)}
    for key in VARIANTS:
        if getattr(cfg, key):
            settings[key] = True
    if cfg.trainable_token_indices:
        settings["tokens"] = list(cfg.trainable_token_indices[EMBEDDING])
    return settings


def apply_lora(model: torch.nn.Module, settings: dict[str, Any]) -> torch.nn.Module:
    """Freeze ``model`` and add trainable rank-r adapters to the target linear layers, and
    trainable rows for ``settings["tokens"]`` in the embedding and the output head."""
    from peft import LoraConfig, inject_adapter_in_model

    tokens = [int(i) for i in settings.get("tokens") or ()]
    rows = None
    if tokens:
        # an untied head has rows of its own to train; a tied one follows the embedding's
        rows = {EMBEDDING: tokens} if model.shape.tie_embeddings else \
            {EMBEDDING: tokens, "lm_head": tokens}
    config = LoraConfig(r=int(settings["r"]), lora_alpha=float(settings["alpha"]),
                        lora_dropout=float(settings["dropout"]),
                        target_modules=list(settings["targets"]), bias="none",
                        trainable_token_indices=rows,
                        **{key: bool(settings.get(key)) for key in VARIANTS})
    with _tying_shown(model, bool(tokens) and model.shape.tie_embeddings):
        return inject_adapter_in_model(config, model)


@contextlib.contextmanager
def _tying_shown(model: torch.nn.Module, tied: bool) -> Iterator[None]:
    """Tell peft, for the time it injects, that ``lm_head`` shares the embedding's weight, in
    the terms it reads from a transformers model (``config.tie_word_embeddings``,
    ``get_input_embeddings()``, ``_tied_weights_keys``). Without them peft sees no tying and
    wraps only the embedding: the head would keep scoring every added token with the same
    frozen mean row. With them it wraps the head too, sharing the embedding's trainable rows."""
    if not tied:
        yield
        return
    model.config = {"model_type": "custom", "tie_word_embeddings": True}
    model.get_input_embeddings = lambda: model.transformer.wte
    model._tied_weights_keys = ["lm_head.weight"]
    try:
        yield
    finally:
        for name in ("config", "get_input_embeddings", "_tied_weights_keys"):
            delattr(model, name)


def is_lora(model: torch.nn.Module) -> bool:
    return any("lora_A" in name for name, _ in model.named_parameters())


def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def load_adapters(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put saved adapter weights into a model that already has (fresh) adapters."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    # a tied head's token rows are the embedding's own (peft saves them once)
    tied = tuple(f"{name}." for name, module in model.named_modules()
                 if getattr(getattr(module, "token_adapter", None), "tied_adapter", None))
    wrong = [k for k in (*getattr(result, "unexpected_keys", ()),
                         *getattr(result, "missing_keys", ()))
             if ("lora_" in k or "trainable_tokens" in k) and not k.startswith(tied)]
    if wrong:
        raise ValueError(f"adapter weights do not fit the model: {wrong[:3]}")


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every adapter into its base layer and put the plain ``nn.Linear`` (and
    ``nn.Embedding``) back, so the model has our usual parameter names again (W + scale *
    B @ A, and the trained token rows written over theirs, computed by peft). A tied head's
    weight is the embedding's own tensor, so it gets the trained rows with it."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import TrainableTokensWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            base = module.get_base_layer()
        elif isinstance(module, TrainableTokensWrapper):
            module.token_adapter.merge(safe_merge=True)
            base = module.original_module
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, base)
    return model


def freeze_layers(model: torch.nn.Module, n: int) -> None:
    """Keep the token and position embeddings (and so the tied head) and the first ``n``
    blocks fixed: they stop receiving gradients and optimizer state. A LoRA model's rows for
    added tokens keep training: frozen, every added marker would stay the same mean row."""
    if n <= 0:
        return
    positions = getattr(model.transformer, "wpe", None)  # none with rotary positions
    frozen = [model.transformer.wte, *([positions] if positions is not None else []),
              *model.transformer.h[:n]]
    for module in frozen:
        for name, p in module.named_parameters():
            if "trainable_tokens_delta" not in name:
                p.requires_grad_(False)


def trainable(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters), the tied head counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
