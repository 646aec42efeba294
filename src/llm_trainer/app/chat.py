"""Opening a model to talk to (``chat``, ``generate --chat``, the dashboard's chat mode): the
checkpoint picked as ``generate`` picks it, refused in one line when the model has no chat
template, and, for ``--compare-base``, the model it was fine-tuned from beside it.

Where a model's base is recorded (``find_base``), first match wins:

1. a LoRA checkpoint's config.json ``base``: the frozen weights its adapters were trained on
   (``<model>/base``, written once at import), which never change;
2. a model started with ``--init-from`` (its config's ``finetune.init_from``): the import
   run's ``meta.json`` ``init.checkpoint`` (a checkpoint folder of ours or a Hugging Face
   folder), else the same path in model.json's lineage (the first run's
   ``from_checkpoint``).

No torch at import time; ``open_chat`` loads the models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_trainer.errors import NotFoundError, UsageError
from llm_trainer.store.checkpoints import MANIFEST, CheckpointInfo, read_checkpoint_config
from llm_trainer.store.records import InitMode

if TYPE_CHECKING:
    from llm_trainer.app.admin import ModelAdmin
    from llm_trainer.inference.chat import ChatSession
    from llm_trainer.inference.settings import GenerationSettings
    from llm_trainer.store.models import ModelRecord

NO_TEMPLATE_HINT = ("train it on chat data (a JSONL of conversations: messages, "
                    "conversations, instruction/output or prompt/completion), or pass a model "
                    "that has one")


@dataclass(frozen=True)
class BaseRef:
    """Where a model's base is and what it is: ``lora`` (a LoRA model's base folder),
    ``checkpoint`` (a checkpoint folder of ours) or ``hf`` (a Hugging Face folder)."""

    kind: str
    path: Path
    label: str  # how the user named it (--init-from's value), for the output's heading


def init_from_of(config: dict[str, Any]) -> str | None:
    """What a model's (or checkpoint's) config records as ``--init-from``, if anything."""
    finetune = config.get("finetune") if isinstance(config, dict) else None
    value = finetune.get("init_from") if isinstance(finetune, dict) else None
    return value if isinstance(value, str) and value else None


def find_base(info: CheckpointInfo, rec: ModelRecord | None, runs) -> BaseRef | None:
    """The base of the model whose checkpoint is ``info`` (see the module's doc), None for a
    model trained from scratch. ``rec``: the model (None for a loose checkpoint folder);
    ``runs``: the RunStore its runs are in. A base that was recorded but is gone since is
    refused in one line."""
    meta = read_checkpoint_config(info.path) or {}
    config = meta.get("config") or {}
    source = init_from_of(config)
    base = meta.get("base")
    if isinstance(base, str) and base:
        path = (info.path / base).resolve()
        recorded = (read_checkpoint_config(path) or {}).get("source")
        label = source or (recorded if isinstance(recorded, str) else None) or str(path)
        return BaseRef("lora", path, label)
    if source is None:
        return None
    path = _import_source(rec, runs)
    if path is None:
        raise NotFoundError(f"the model was started from {source}, but where that model is "
                            "was not recorded", hint="compare with the base by hand: "
                                                     "`llm-trainer generate --chat` on each")
    if (path / MANIFEST).is_file():
        return BaseRef("checkpoint", path, source)
    if path.is_dir():
        return BaseRef("hf", path, source)
    raise NotFoundError(f"the base model {source} is gone: {path} no longer exists",
                        hint="a base checkpoint pruned or deleted since cannot be compared "
                             "with; keep it with train.keep_every, or compare with another "
                             "model by hand")


def _import_source(rec: ModelRecord | None, runs) -> Path | None:
    if rec is None:
        return None
    for run_id in rec.runs:
        try:
            init = runs.read_meta(run_id).init
        except Exception:  # a deleted or unreadable run: the lineage below still says
            continue
        if init is not None and init.mode == InitMode.IMPORT:
            return Path(init.checkpoint)
    for entry in rec.lineage:
        start = entry.get("from_checkpoint")
        if start and entry.get("kind", "train") == "train" and \
                Path(rec.path).resolve() not in Path(start).resolve().parents:
            return Path(start)
    return None


# --------------------------------------------------------------------------- conversations


@dataclass
class ChatSide:
    """One model in a conversation: its heading and its session."""

    label: str
    session: ChatSession
    is_base: bool = False


@dataclass
class Chat:
    """An open conversation: the model's side and, with ``compare_base``, its base's (each
    with its own history: the base answers its own earlier answers). ``notes``: what loading
    said (a device fallback, a skipped broken checkpoint)."""

    model: str
    checkpoint: CheckpointInfo
    sides: list[ChatSide]
    settings: GenerationSettings
    notes: list[str] = field(default_factory=list)

    @property
    def session(self) -> ChatSession:
        return self.sides[0].session

    @property
    def base(self) -> ChatSide | None:
        return next((s for s in self.sides if s.is_base), None)

    def reset(self) -> None:
        for side in self.sides:
            side.session.reset()

    def set_system(self, text: str | None) -> None:
        for side in self.sides:
            side.session.set_system(text)

    def save(self, path: str | Path) -> Path:
        """The model's conversation (not the base's) as a one-line JSONL of messages."""
        return self.session.save(path)

    def answers(self, user_text: str, settings: GenerationSettings | None = None, *,
                on_note: Callable[[str], None] | None = None
                ) -> Iterator[tuple[ChatSide, Iterator[str]]]:
        """Each side and the stream of its reply, one after the other (read each stream to
        its end, or stop it, before taking the next side)."""
        if not user_text.strip():
            raise UsageError("an empty message", hint="write something for the model to "
                                                      "answer")
        for side in self.sides:
            yield side, side.session.reply(user_text, settings or self.settings,
                                           on_note=on_note)


def open_chat(admin: ModelAdmin, runs, settings: GenerationSettings, *,
              model: str | None = None, checkpoint: str | None = None, device: str = "auto",
              compare_base: bool = False, system: str | None = None) -> Chat:
    """A model's checkpoint (latest, best, a step or a folder, as ``generate`` takes it)
    loaded for a conversation, and its base beside it with ``compare_base`` (imports
    torch). Refused in one line: a model without a chat template, ``compare_base`` for a
    model without a base."""
    from llm_trainer.app.admin import is_path
    from llm_trainer.checkpoint_io import read_checkpoint
    from llm_trainer.inference.chat import ChatSession
    from llm_trainer.training.device import probe_devices, select_device

    settings.check()
    notes: list[str] = []
    if checkpoint and not model and is_path(checkpoint):
        info = admin.checkpoint_at(checkpoint)
        rec = _model_of_folder(admin, info.path)
    else:
        rec = admin.resolve_model(model)
        info = admin.checkpoint_of(rec, checkpoint or "latest", notes)
        if not model:
            notes.insert(0, admin.picked_note(rec, info))
    name = rec.name if rec is not None else str(info.path)
    ckpt = read_checkpoint(info.path)
    if ckpt.chat is None:
        raise UsageError(f"model {name} has no chat template: it was not trained on "
                         "conversations, so it cannot hold one", hint=NO_TEMPLATE_HINT)
    base = find_base(info, rec, runs) if compare_base else None
    if compare_base and base is None:
        raise UsageError(f"model {name} was trained from scratch: it has no base model to "
                         "compare with", hint="--compare-base is for a model started with "
                                              "--init-from MODEL or --init-from hf:FOLDER")
    choice = select_device(device, probe_devices())
    if choice.warning:
        notes.append(f"warning: {choice.warning}")
    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.generate import TextGenerator

    generator = TextGenerator(load_model(ckpt, choice.device), ckpt.tokenizer, choice.device)
    sides = [ChatSide(f"{name} ({info.path.name})", ChatSession(generator, ckpt.chat,
                                                                system=system))]
    if base is not None:
        base_gen, own_template = base_generator(base, ckpt.shape.block_size, choice.device)
        sides.append(ChatSide(f"base: {base.label}", ChatSession(
            base_gen, own_template or ckpt.chat, system=system), is_base=True))
    return Chat(name, info, sides, settings, notes)


def _model_of_folder(admin: ModelAdmin, path: Path) -> ModelRecord | None:
    """The model a checkpoint folder belongs to, when it is one of this home's."""
    folder = path.resolve().parent
    if folder.parent == admin.models.root.resolve() and admin.models.exists(folder.name):
        return admin.models.get(folder.name)
    return None


def base_generator(base: BaseRef, block_size: int, device: str):
    """The base model loaded to generate (its own tokenizer and architecture), and its own
    chat template if it has one (else the fine-tuned model's is used: the same prompt)."""
    from llm_trainer.inference.generate import TextGenerator

    if base.kind == "lora":
        from llm_trainer.checkpoint_io import load_base

        model, tokenizer = load_base(base.path, device)
        return TextGenerator(model, tokenizer, device), None
    if base.kind == "checkpoint":
        from llm_trainer.checkpoint_io import load_model, read_checkpoint

        ckpt = read_checkpoint(base.path)
        return TextGenerator(load_model(ckpt, device), ckpt.tokenizer, device), ckpt.chat
    from llm_trainer.data.chat import ChatTemplate
    from llm_trainer.data.tokenizer import TextTokenizer
    from llm_trainer.model.gpt import GPT
    from llm_trainer.model.hf_import import (
        PREFIX,
        check_complete,
        inspect_hf_folder,
        load_hf_weights,
    )
    from llm_trainer.model.shape import ModelShape

    src = inspect_hf_folder(f"{PREFIX}{base.path}")
    block = min(block_size, src.n_positions) if src.n_positions else block_size
    model = GPT(ModelShape(vocab_size=src.vocab_size, **{**src.arch, "block_size": block}))
    sd = load_hf_weights(src, block)
    check_complete(sd, model.state_dict(), src)
    model.load_state_dict(sd, strict=True)
    tokenizer = TextTokenizer.from_file(src.tokenizer)
    return TextGenerator(model.to(device), tokenizer, device), \
        ChatTemplate.from_hf_folder(base.path)
