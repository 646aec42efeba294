"""The optimizer (``train.optimizer``): AdamW for every weight, or Muon for the hidden matrices
of the transformer blocks with AdamW for the rest, as one object.

The loop, the grad scaler and the checkpoints see one optimizer either way: ``param_groups``
(the scaler unscales through them), ``step``, ``zero_grad``, ``state_dict`` /
``load_state_dict``. Each group follows the LR schedule (built from ``train.lr``) scaled to its
own peak: a group's ``lr_scale`` is its peak / ``train.lr``. AdamW-only groups carry no
``lr_scale`` (1), so that path's state dict and numbers are what they always were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UsageError

ADAMW, MUON = "adamw", "muon"


@dataclass
class ParamSplit:
    """Which optimizer trains which trainable parameter (each exactly once, tied ones too)."""

    muon: list = field(default_factory=list)  # 2-D weights inside the blocks
    head_decay: list = field(default_factory=list)  # an untied output head
    embed: list = field(default_factory=list)  # token embedding (and the tied head)
    decay: list = field(default_factory=list)  # other >= 2-D weights
    no_decay: list = field(default_factory=list)  # norms, biases, position table


def _weight(module) -> Any:
    return getattr(module, "weight", None) if module is not None else None


def split_params(model) -> ParamSplit:
    """Muon takes the matrices under ``transformer.h.``; the token embedding and the output
    head are told apart by identity (a tied head is the embedding's own tensor), never by
    position in the name list."""
    wte = _weight(model.transformer.wte)
    head = _weight(getattr(model, "lm_head", None))
    position = _weight(getattr(model.transformer, "wpe", None))
    embed_ids = {id(wte)} | ({id(head)} if head is not None and head is not wte else set())
    out = ParamSplit()
    for name, p in model.named_parameters():  # tied tensors come once
        if not p.requires_grad:
            continue
        if id(p) in embed_ids:
            (out.embed if p is wte else out.head_decay).append(p)
        elif name.startswith("transformer.h.") and p.dim() == 2:
            out.muon.append(p)
        elif p.dim() >= 2 and p is not position:
            out.decay.append(p)
        else:
            out.no_decay.append(p)
    return out


def _adamw(groups: list[dict], cfg: RunConfig, device_type: str):
    """AdamW, fused where the build supports it (else foreach)."""
    import torch

    kwargs = dict(lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), eps=1e-8)
    if device_type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs), "fused"
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs), "foreach"


def build_optimizer(model, cfg: RunConfig, device_type: str, precision: str = "fp32"):
    """The optimizer ``train.optimizer`` asks for, and a one-line description of it.

    adamw: no weight decay on norms, biases and embeddings (including the tied lm_head).
    muon: Muon (``train.muon_lr``, ``train.muon_momentum``, ``train.weight_decay``) for the
    blocks' matrices; AdamW at ``train.embed_lr`` (default ``train.lr``) for the token
    embedding and the head, at ``train.lr`` for norms, biases and the position table.
    Muon's Newton-Schulz iteration runs in bf16 when the run's ``precision`` is bf16 (the
    device has fast bf16), else in fp32 (``training/muon.py``)."""
    t = cfg.train
    if t.optimizer == MUON:
        return _build_muon(model, cfg, device_type, precision)
    wte = model.transformer.wte.weight
    position = _weight(getattr(model.transformer, "wpe", None))
    embeddings = {id(wte)} | ({id(position)} if position is not None else set())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        embedding = id(p) in embeddings or "trainable_tokens_delta" in name  # LoRA's token rows
        (decay if p.dim() >= 2 and not embedding else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt, how = _adamw(groups, cfg, device_type)
    return opt, f"adamw ({how})"


def _build_muon(model, cfg: RunConfig, device_type: str, precision: str):
    import torch

    from llm_trainer.model.lora import is_lora
    from llm_trainer.training.muon import BatchedMuon

    t = cfg.train
    if is_lora(model):
        raise UsageError(lora_refusal())
    split = split_params(model)
    if not split.muon:
        raise UsageError("train.optimizer muon: no trainable matrix inside the blocks",
                         hint="use train.optimizer adamw (or unfreeze some blocks)")
    embed_scale = (t.embed_lr or t.lr) / t.lr
    ns_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    muon = BatchedMuon([{"params": split.muon, "lr_scale": t.muon_lr / t.lr}],
                       lr=t.muon_lr, weight_decay=t.weight_decay, momentum=t.muon_momentum,
                       ns_steps=t.muon_ns_steps, ns_dtype=ns_dtype)
    groups = [{"params": split.head_decay, "weight_decay": t.weight_decay,
               "lr_scale": embed_scale},
              {"params": split.embed, "weight_decay": 0.0, "lr_scale": embed_scale},
              {"params": split.decay, "weight_decay": t.weight_decay, "lr_scale": 1.0},
              {"params": split.no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    adamw, how = _adamw([g for g in groups if g["params"]], cfg, device_type)
    n_muon = sum(p.numel() for p in split.muon)
    n_adamw = sum(p.numel() for g in adamw.param_groups for p in g["params"])
    return MuonWithAdamW(muon, adamw), (
        f"muon ({len(split.muon)} block matrices, {n_muon:,} weights, peak lr {t.muon_lr:g}, "
        f"Newton-Schulz in {'bf16' if ns_dtype == torch.bfloat16 else 'fp32'}) "
        f"+ adamw ({how}; {n_adamw:,} weights, embeddings/head peak lr {t.embed_lr or t.lr:g})")


def lora_refusal() -> str:
    return ("train.optimizer muon does not train LoRA adapters: use train.optimizer adamw "
            "with --lora")


class MuonWithAdamW:
    """Muon and AdamW stepped together. Only ``param_groups`` is touched by the grad scaler
    (it unscales every group, then calls ``step``), so fp16 works as with a plain optimizer."""

    kind = MUON

    def __init__(self, muon, adamw) -> None:
        self.muon, self.adamw = muon, adamw
        self.optimizers = (muon, adamw)

    @property
    def param_groups(self) -> list[dict]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    @property
    def state(self) -> dict:
        """Both optimizers' per-parameter state (a merged view: read it, do not edit it)."""
        return {**self.muon.state, **self.adamw.state}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            import torch

            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"kind": MUON, "muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def kind_of(optimizer) -> str:
    return getattr(optimizer, "kind", ADAMW)


def saved_kind(state: dict[str, Any]) -> str:
    """The kind of optimizer a saved state dict belongs to (old checkpoints: AdamW's own)."""
    return state.get("kind", MUON) if "muon" in state else ADAMW


def load_optimizer(optimizer, state: dict[str, Any], where: str) -> None:
    """Restore ``state`` into ``optimizer``; a state of the other kind is refused in one line
    (a resume keeps the optimizer; continuing with a fresh one may change it)."""
    have, saved = kind_of(optimizer), saved_kind(state)
    if have != saved:
        raise UsageError(resume_refusal(where, saved, have),
                         hint="drop train.optimizer to resume, or continue the model with a "
                              "fresh optimizer: llm-trainer train --model NAME")
    optimizer.load_state_dict(state)


def resume_refusal(where: str, saved: str, requested: str) -> str:
    return (f"{where} was trained with train.optimizer {saved}: a resume cannot change it "
            f"to {requested}")


def clear_state(optimizer) -> None:
    """Forget every moment / momentum buffer (a rollback to weights saved without them)."""
    for opt in getattr(optimizer, "optimizers", (optimizer,)):
        opt.state.clear()


def muon_param_count(optimizer) -> int:
    """Weights Muon trains (one fp32 momentum buffer each, against AdamW's two)."""
    muon = getattr(optimizer, "muon", None)
    if muon is None:
        return 0
    return sum(p.numel() for g in muon.param_groups for p in g["params"])
