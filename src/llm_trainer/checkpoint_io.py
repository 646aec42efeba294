"""Checkpoint files (torch side), below both training and inference (as nanochat's checkpoint
manager sits): both read and write checkpoints through this module, neither through the other.
Folder layout and manifests live in ``store.checkpoints``.

    model.safetensors   weights of the unwrapped model (tied lm_head stored once)
    adapter.safetensors instead of model.safetensors for a LoRA model: the adapters only;
                        config.json's "base" names the folder with the frozen base weights
                        (``../base``, written once when the model was imported)
    optimizer.pt        optimizer state dict (tensors + numbers; loaded with weights_only=True)
    rng.pt              torch / CUDA / numpy / python RNG states (weights_only=True)
    trainer.json        step, epoch, data position, LR schedule, grad scaler, best val loss
    config.json         the RunConfig and the resolved architecture
    tokenizer.json      the tokenizer (Hugging Face tokenizers format)
                        (config.json's "chat": the chat template, for a model that has one)
    manifest.json       sha256 of each file above; written last
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_trainer.config import RunConfig
from llm_trainer.data.chat import ChatTemplate
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DiskFullError, NotFoundError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from llm_trainer.store.atomic import disk_full
from llm_trainer.store.checkpoints import (
    BASE_DIR,
    CHECKPOINT_CONFIG_SCHEMA,
    CONFIG,
    CheckpointInfo,
    checked_config,
    commit_checkpoint,
    inspect_checkpoint,
    new_staging_dir,
    step_dir_name,
)


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }


def restore_rng(state: dict[str, Any], *, rank: int = 0, world_size: int = 1) -> None:
    """Restore this process's RNG streams. A data-parallel checkpoint holds one state per rank:
    with the same world size each rank gets its own; otherwise every rank takes rank 0's."""
    ranks = state.get("ranks")
    if ranks:
        state = ranks[rank] if len(ranks) == world_size else ranks[0]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))


@dataclass
class LoadedCheckpoint:
    info: CheckpointInfo
    config: RunConfig
    shape: ModelShape
    trainer: dict[str, Any]
    tokenizer: TextTokenizer
    lora: dict[str, Any] | None = None  # the adapters' settings, for a LoRA checkpoint
    base: str | None = None  # its base weights' folder, relative to the checkpoint
    chat: ChatTemplate | None = None  # how a conversation is written for it, if it has one

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def base_path(self) -> Path | None:
        return (self.path / self.base).resolve() if self.base else None


def save_checkpoint(model_dir: Path, *, model: torch.nn.Module, optimizer, trainer_state: dict,
                    config: RunConfig, shape: ModelShape, tokenizer: TextTokenizer, step: int,
                    epoch: float, val_loss: float | None,
                    rng: list[dict[str, Any]] | None = None,
                    chat: ChatTemplate | None = None) -> Path:
    """``rng``: the RNG states of every rank of a data-parallel run (default: this process);
    ``chat``: the model's chat template (stored in config.json)."""
    from safetensors.torch import save_file, save_model

    from llm_trainer.model.lora import ADAPTER_FILE, adapter_state_dict, is_lora, settings_of

    staging = new_staging_dir(model_dir, step)
    with cleaned_on_failure(staging, f"step {step}", model_dir / step_dir_name(step)):
        extra: dict[str, Any] = {}
        if is_lora(model):
            save_file(adapter_state_dict(model), str(staging / ADAPTER_FILE),
                      metadata={"format": "pt", "step": str(step)})
            extra = {"lora": settings_of(model), "base": f"../{BASE_DIR}"}
        else:
            save_model(model, str(staging / "model.safetensors"),
                       metadata={"format": "pt", "step": str(step)})
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        states = rng or [capture_rng()]
        torch.save({**states[0], "ranks": states if len(states) > 1 else []},
                   staging / "rng.pt")
        if chat is not None:
            extra["chat"] = chat.to_json()
        (staging / "trainer.json").write_text(json.dumps(trainer_state, indent=2))
        (staging / CONFIG).write_text(json.dumps(
            {"schema_version": CHECKPOINT_CONFIG_SCHEMA, "config": config.to_dict(),
             "architecture": shape.to_json(), **extra}, indent=2))
        tokenizer.save(staging / "tokenizer.json")
        return commit_checkpoint(staging, step=step, epoch=epoch, val_loss=val_loss)


@contextlib.contextmanager
def cleaned_on_failure(staging: Path, what: str, final: Path) -> Iterator[None]:
    """A save that fails removes its staging folder at once (on a full disk it is what fills
    it), and a full disk is said as such: ``DiskFullError`` naming what and where, instead of
    the library's own words (torch.save's is "[enforce fail at inline_container.cc:672]")."""
    try:
        yield
    except BaseException as exc:
        full = isinstance(exc, Exception) and disk_full(exc, staging.parent)
        shutil.rmtree(staging, ignore_errors=True)
        if full:
            raise DiskFullError(f"disk full while saving {what} at {final}") from exc
        raise


def save_base(model_dir: Path, *, model: torch.nn.Module, config: RunConfig, shape: ModelShape,
              tokenizer: TextTokenizer, source: str) -> Path:
    """The frozen weights a LoRA model's checkpoints refer to (``<model dir>/base``), written
    once, atomically and with a manifest, before the adapters train."""
    from safetensors.torch import save_model

    staging = new_staging_dir(model_dir, 0)
    with cleaned_on_failure(staging, "the base weights", model_dir / BASE_DIR):
        save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / CONFIG).write_text(json.dumps(
            {"schema_version": CHECKPOINT_CONFIG_SCHEMA, "config": config.to_dict(),
             "architecture": shape.to_json(), "source": source}, indent=2))
        tokenizer.save(staging / "tokenizer.json")
        return commit_checkpoint(staging, step=0, epoch=0.0, val_loss=None, name=BASE_DIR)


def read_checkpoint(path: Path, *, verify: bool = True) -> LoadedCheckpoint:
    """Metadata of a checkpoint (no tensors). Refuses one that fails its manifest."""
    info, meta = checked_config(path, verify=verify, error=lambda what: NotFoundError(
        what, hint="use another checkpoint: --checkpoint latest|best|STEP"))
    trainer = json.loads((path / "trainer.json").read_text())
    tokenizer = TextTokenizer.from_file(path / "tokenizer.json",
                                        kind=meta["config"]["data"]["tokenizer"])
    return LoadedCheckpoint(info, RunConfig.from_dict(meta["config"], source=str(path)),
                            ModelShape.from_stored(meta["architecture"]), trainer, tokenizer,
                            meta.get("lora"), meta.get("base"),
                            ChatTemplate.from_json(meta["chat"]) if meta.get("chat") else None)


def load_model(ckpt: LoadedCheckpoint, device: str | torch.device = "cpu", *,
               merged: bool = True) -> GPT:
    """The checkpoint's model on ``device``. A LoRA checkpoint: its base weights with the
    adapters, folded in (``merged``, for generation and export) or kept apart (training)."""
    from safetensors.torch import load_model as st_load

    model = GPT(ckpt.shape)
    if ckpt.lora is None:
        st_load(model, str(ckpt.path / "model.safetensors"), strict=True, device=str(device))
        return model.to(device)
    from llm_trainer.model.lora import apply_lora, merge

    base = ckpt.base_path
    info = inspect_checkpoint(base, verify=False)
    if not info.valid:
        raise NotFoundError(f"LoRA checkpoint {ckpt.path.name}: its base weights are not "
                            f"usable ({info.problem})",
                            hint="train a new model from the original folder with "
                                 "--init-from hf:FOLDER --lora ...")
    st_load(model, str(base / "model.safetensors"), strict=True, device=str(device))
    model = apply_lora(model.to(device), ckpt.lora)
    load_weights(model, ckpt.path, device)
    return merge(model) if merged else model


def load_base(path: Path, device: str | torch.device = "cpu") -> tuple[GPT, TextTokenizer]:
    """A LoRA model's frozen base folder (``save_base``) as a model of its own, with its
    tokenizer: what the model answered before its adapters trained (chat --compare-base)."""
    from safetensors.torch import load_model as st_load

    _, meta = checked_config(path, verify=True, error=lambda what: NotFoundError(
        f"the base weights are not usable: {what}",
        hint="train a new model from the original folder with --init-from hf:FOLDER --lora"))
    model = GPT(ModelShape.from_stored(meta["architecture"]))
    st_load(model, str(path / "model.safetensors"), strict=True, device=str(device))
    tokenizer = TextTokenizer.from_file(path / "tokenizer.json",
                                        kind=meta["config"]["data"]["tokenizer"])
    return model.to(device), tokenizer


def load_weights(model: torch.nn.Module, path: Path, device) -> None:
    """Load a checkpoint folder's trainable weights into a model of its shape: all of them, or
    for a LoRA checkpoint the adapters (the base weights never change)."""
    from safetensors.torch import load_file
    from safetensors.torch import load_model as st_load

    from llm_trainer.model.lora import ADAPTER_FILE, load_adapters

    if (path / ADAPTER_FILE).is_file():
        load_adapters(model, load_file(str(path / ADAPTER_FILE), device=str(device)))
    else:
        st_load(model, str(path / "model.safetensors"), strict=True, device=str(device))


def load_optimizer_state(ckpt: LoadedCheckpoint, device) -> dict:
    return torch.load(ckpt.path / "optimizer.pt", map_location=device, weights_only=True)


def load_rng_state(ckpt: LoadedCheckpoint) -> dict:
    return torch.load(ckpt.path / "rng.pt", map_location="cpu", weights_only=True)


def weights_for_import(path: Path, block_size: int) -> dict[str, torch.Tensor]:
    """A checkpoint's whole model (a LoRA checkpoint's adapters folded in) as the weights a
    new model starts from (``--init-from MODEL``), the position table cut to ``block_size``."""
    model = load_model(read_checkpoint(path), "cpu")
    sd = {name: t.detach().clone() for name, t in model.state_dict().items()}
    if "transformer.wpe.weight" in sd:
        sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:block_size].contiguous()
    return sd
