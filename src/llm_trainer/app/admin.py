"""Model administration: lookups, checkpoints, typed model views, and the operations that
change a model (rename, archive, delete, activate, export). Changes hold the model's training
lock while they run, so no training can start meanwhile. No torch at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llm_trainer.app.queries import RunQueries, busy_error
from llm_trainer.errors import NotFoundError, UsageError
from llm_trainer.store.checkpoints import (
    BASE_DIR,
    MANIFEST,
    CheckpointInfo,
    clean_model_dir,
    inspect_checkpoint,
    list_checkpoints,
    read_checkpoint_config,
    resolve_checkpoint,
)
from llm_trainer.store.locks import LockHeld, ModelLock
from llm_trainer.store.models import ModelRecord, ModelStore, UnreadableModel
from llm_trainer.views import (
    CheckpointView,
    EvalResult,
    ExportResult,
    ModelDetail,
    ModelView,
    PushResult,
)


def is_path(which: str) -> bool:
    """A checkpoint given as a folder rather than latest / best / a step."""
    return which not in ("latest", "best") and not which.removeprefix("step-").isdigit()


class ModelAdmin:
    def __init__(self, models: ModelStore, queries: RunQueries) -> None:
        self.models, self.queries = models, queries
        self._verified: dict[tuple, CheckpointInfo] = {}

    # ------------------------------------------------------------------ lookups
    def get(self, name: str) -> ModelRecord:
        return self.models.get(name)

    def resolve_model(self, name: str | None) -> ModelRecord:
        """A named model, else the active one, else the latest trained."""
        if name:
            return self.models.get(name)
        rec = self.models.active() or self.models.latest_trained()
        if rec is None:
            raise NotFoundError("no model selected and none trained yet",
                                hint="train one with `llm-trainer train`, or name one with "
                                     "--model NAME")
        return rec

    def picked_note(self, rec: ModelRecord, info: CheckpointInfo) -> str:
        """What a command that was not told which model to use says it used, and why that
        one (a newcomer who got Python documentation for "ROMEO:" could not tell which
        model wrote it, nor what it had read)."""
        why = "the active model" if self.models.active_id() == rec.id else \
            "the latest trained model"
        data = ", ".join(dict.fromkeys(str(d["spec"]) for d in rec.datasets if d.get("spec")))
        return (f"note: using model {rec.name} ({why}; {info.name}"
                f"{f', trained on {data}' if data else ''}); pick another with --model NAME")

    def require_idle(self, rec: ModelRecord, action: str) -> None:
        """Refuse early when the model is training (the lock decides in the end)."""
        run = self.queries.training_run_of(rec)
        if run:
            raise busy_error(rec.name, run, action)

    def checkpoint_of(self, rec: ModelRecord, which: str = "latest",
                      notes: list[str] | None = None) -> CheckpointInfo:
        """The newest checkpoint matching ``which`` that passes its manifest check."""
        if is_path(which):
            return self.checkpoint_at(which)
        skipped: list[str] = []
        info = resolve_checkpoint(rec.path, which, warn=skipped.append)
        if notes is not None:
            notes.extend(skipped)
        if info is None:
            raise self._no_checkpoint(rec, which, skipped)
        return info

    def _no_checkpoint(self, rec: ModelRecord, which: str, skipped: list[str]
                       ) -> NotFoundError:
        """Why ``which`` names no usable checkpoint of ``rec``, and what to do. Deleting the
        model is suggested only when it never saved a checkpoint: one whose checkpoints all
        fail their checks still has them (and a backup may restore them)."""
        checks = list_checkpoints(rec.path, verify=True)
        have = [c.step for c in checks if c.valid]
        saved = [c for c in checks if (c.path / MANIFEST).exists()]  # damaged or not
        run = self.queries.training_run_of(rec) if not saved else None
        if run is not None:
            return NotFoundError(f"model {rec.name} has no checkpoint yet: run {run} is "
                                 "training it", hint="use it once its first checkpoint is "
                                 f"saved (`llm-trainer status {run}`)")
        what = {"latest": "no usable checkpoint", "best": "no checkpoint with a val loss"
                }.get(which, f"no usable checkpoint at step {which}")
        if have:
            return NotFoundError(
                f"model {rec.name} has {what}" + (f" ({'; '.join(skipped)})" if skipped else ""),
                hint=f"available steps: {', '.join(map(str, have))} (pick one with "
                     "--checkpoint STEP)")
        if saved:
            damaged = "; ".join(str(c.problem) for c in saved if not c.valid)
            return NotFoundError(
                f"model {rec.name} has {what}: every checkpoint it saved fails its check "
                f"({damaged}; in {rec.path})",
                hint="nothing was deleted: restore those files (from a backup), or pick "
                     "another checkpoint with --checkpoint (a step, or a checkpoint folder)")
        return NotFoundError(
            f"model {rec.name} has {what}: it never saved a checkpoint",
            hint="its runs ended before saving one: delete it with `llm-trainer models "
                 f"delete {rec.name}` and train it again")

    @staticmethod
    def checkpoint_at(path_text: str) -> CheckpointInfo:
        # absolute: a training process works in the home, not in the caller's folder
        path = Path(path_text).expanduser().resolve()
        if not path.is_dir():
            raise NotFoundError(f"checkpoint {path_text!r} not found",
                                hint="use latest, best, a step number, or a checkpoint folder")
        info = inspect_checkpoint(path)
        if not info.valid:
            raise NotFoundError(f"checkpoint {info.problem}",
                                hint="use another checkpoint: latest, best or a step")
        return info

    @staticmethod
    def checkpoint_config(info: CheckpointInfo) -> dict[str, Any]:
        data = read_checkpoint_config(info.path)
        if not data or "config" not in data:
            raise NotFoundError(f"checkpoint {info.path} has no readable config.json")
        return data["config"]

    # ------------------------------------------------------------------ views
    def model_status(self, rec: ModelRecord, training_run: str | None = None
                     ) -> tuple[str, str | None]:
        """ready | training | corrupted | archived | new, and a reason for corrupted."""
        if training_run:
            return "training", None
        if rec.archived:
            return "archived", None
        ckpts = list_checkpoints(rec.path)
        if not ckpts:
            return "new", None
        newest = ckpts[-1]
        weights = [*newest.path.glob("*.safetensors"), *(rec.path / BASE_DIR).glob("*.safetensors")]
        key = (str(newest.path), newest.created_at, *(_mtime_ns(p) for p in weights))
        checked = self._verified.get(key)
        if checked is None:
            checked = inspect_checkpoint(newest.path, verify=True)
            self._verified[key] = checked
        if not checked.valid:
            return "corrupted", checked.problem
        return "ready", None

    def _flags(self) -> tuple[str | None, str | None]:
        latest = self.models.latest_trained()
        return self.models.active_id(), latest.id if latest else None

    def model_view(self, rec: ModelRecord, flags: tuple[str | None, str | None] | None = None
                   ) -> ModelView:
        active_id, latest_id = flags or self._flags()
        clean_model_dir(rec.path)  # what killed writers left: listed, it would count
        training_run = self.queries.training_run_of(rec)
        status, problem = self.model_status(rec, training_run)
        data = rec.to_json()
        return ModelView(
            **{k: data[k] for k in (
                "id", "name", "created_at", "last_trained_at", "architecture", "tokenizer",
                "datasets", "epochs_completed", "steps_completed", "best_val_loss",
                "latest_val_loss", "archived", "runs", "lineage", "config")},
            status=status, problem=problem, disk_bytes=rec.disk_bytes(), path=str(rec.path),
            training_run=training_run, checkpoint_count=len(list_checkpoints(rec.path)),
            active=rec.id == active_id, latest=rec.id == latest_id)

    def list_models(self, *, include_archived: bool = False) -> list[ModelView]:
        """Every model, by name; one whose model.json cannot be used is listed as unreadable
        with its reason (the others as usual)."""
        flags = self._flags()
        records, unreadable = self.models.scan(include_archived=include_archived)
        views = [self.model_view(m, flags) for m in records]
        views += [unreadable_view(u) for u in unreadable]
        return sorted(views, key=lambda v: v.name)

    def model_detail(self, name: str) -> ModelDetail:
        rec = self.models.get(name)
        view = self.model_view(rec)
        ckpts = [CheckpointView(c.name, c.step, c.epoch, c.val_loss, c.valid, c.problem,
                                c.created_at)
                 for c in list_checkpoints(rec.path, verify=True)]
        return ModelDetail(**{f: getattr(view, f) for f in view.__dataclass_fields__},
                           checkpoints=ckpts)

    # ------------------------------------------------------------------ changes
    def holding_lock(self, rec: ModelRecord, action: str) -> ModelLock:
        """The model's training lock, held while ``action`` changes the model."""
        try:
            return ModelLock.acquire(rec.path, operation=action)
        except LockHeld as held:
            raise busy_error(rec.name, self.queries.lock_holder_run(rec, held.holder),
                             action) from None

    def rename(self, old: str, new: str) -> ModelView:
        rec = self.models.get(old)
        with self.holding_lock(rec, "rename"):
            return self.model_view(self.models.rename(old, new))

    def archive(self, name: str, archived: bool = True) -> ModelView:
        rec = self.models.get(name)
        with self.holding_lock(rec, "archive" if archived else "unarchive"):
            return self.model_view(self.models.set_archived(name, archived))

    def delete(self, name: str) -> Path:
        rec = self.models.get(name)
        with self.holding_lock(rec, "delete"):
            return self.models.delete(name)

    def activate(self, name: str) -> ModelView:
        rec = self.models.get(name)
        if rec.archived:
            raise UsageError(f"model {name} is archived",
                             hint=f"unarchive it first: `llm-trainer models unarchive {name}`")
        return self.model_view(self.models.set_active(name))

    def export(self, name: str | None, out: str, fmt: str, *, checkpoint: str = "latest",
               overwrite: bool = False, dtype: str | None = None
               ) -> ExportResult:
        from llm_trainer.checkpoint_io import read_checkpoint
        from llm_trainer.inference.export import GGUF_FORMATS, export
        from llm_trainer.inference.outputs import check_out_outside

        check_out_outside(Path(out), self.models.root)
        notes: list[str] = []
        rec = self.resolve_model(name)
        info = self.checkpoint_of(rec, checkpoint, notes)
        ckpt = read_checkpoint(info.path)
        card = None
        if fmt == "hf":
            from llm_trainer.inference.model_card import model_card

            card = model_card(self._card_facts(rec, ckpt),
                              str(Path(out).expanduser().resolve()))
        path = export(ckpt, Path(out), fmt, overwrite=overwrite, dtype=dtype, card=card)
        if fmt in GGUF_FORMATS:
            from llm_trainer.inference.gguf_export import export_notes

            notes.extend(export_notes(ckpt, fmt))
        base = resize = None
        if fmt == "peft":
            from llm_trainer.inference.peft_export import adapter_base

            base, resize = adapter_base(path)
        return ExportResult(path=str(path), model=info.path.parent.name,
                            checkpoint=info.path.name, format=fmt, dtype=dtype,
                            context=ckpt.shape.block_size, notes=notes,
                            chat=ckpt.chat is not None, base=base, resize=resize)

    def push(self, name: str | None, repo: str, *, checkpoint: str = "latest",
             private: bool = False, revision: str | None = None, gguf: str | None = None
             ) -> PushResult:
        """Export a model's checkpoint as ``hf`` (with its card, and a GGUF file of dtype
        ``gguf`` when asked) into a temporary folder and upload it to the Hub repository
        ``repo`` (``hub.push_folder``). Refused before anything is exported when the Hub is
        unreachable or there is no token (imports torch)."""
        import tempfile

        from llm_trainer.hub import check_push, push_folder

        check_push(repo)  # before torch is imported: a refusal is at once
        from llm_trainer.checkpoint_io import read_checkpoint
        from llm_trainer.inference.export import export
        from llm_trainer.inference.model_card import model_card

        notes: list[str] = []
        rec = self.resolve_model(name)
        info = self.checkpoint_of(rec, checkpoint, notes)
        ckpt = read_checkpoint(info.path)
        gguf_name = f"{rec.name}-{gguf}.gguf" if gguf else None
        if gguf:
            from llm_trainer.extras import require

            require("gguf", option="--gguf")
        with tempfile.TemporaryDirectory(prefix="llm-trainer-push-") as tmp:
            out = Path(tmp) / rec.name
            card = model_card(self._card_facts(rec, ckpt, gguf=gguf_name), repo, on_hub=True)
            export(ckpt, out, "hf", card=card)
            if gguf_name:
                export(ckpt, out / gguf_name, "gguf", dtype=gguf)
            pushed = push_folder(out, repo, private=private, revision=revision,
                                 message=f"{rec.name} ({info.path.name}) from llm-trainer")
        return PushResult(repo=pushed.repo_id, url=pushed.url, commit=pushed.commit,
                          revision=pushed.revision, model=rec.name, checkpoint=info.path.name,
                          files=pushed.files, notes=notes)

    @staticmethod
    def _card_facts(rec: ModelRecord, ckpt, gguf: str | None = None):
        """What the model card says: the checkpoint's config and numbers, the model's
        record (its datasets, best loss) and where its imported base is (its license)."""
        from llm_trainer.inference.model_card import CardFacts
        from llm_trainer.model.families import family_for

        plan = ckpt.trainer.get("plan") or {}
        per_step = 1
        for key in ("batch_size", "grad_accum", "seq_len", "world_size"):
            per_step *= int(plan.get(key) or 0)
        base = next((Path(e["from_checkpoint"]) for e in rec.lineage
                     if e.get("from_checkpoint") and e.get("kind", "train") == "train"
                     and Path(rec.path).resolve() not in
                     Path(e["from_checkpoint"]).resolve().parents), None)
        return CardFacts(
            name=rec.name, checkpoint=ckpt.path.name, step=ckpt.info.step,
            epoch=ckpt.info.epoch, shape=ckpt.shape.describe(),
            family=family_for(ckpt.shape).name, config=ckpt.config.to_dict(),
            tokens_per_step=per_step or None,
            datasets=tuple(d["spec"] for d in rec.datasets if d.get("spec")),
            best_val_loss=rec.best_val_loss, checkpoint_val_loss=ckpt.info.val_loss,
            base_folder=base, chat=ckpt.chat is not None, gguf=gguf)

    def generator(self, model: str | None = None, checkpoint: str | None = None,
                  device: str = "auto"):
        """A TextGenerator for a model's checkpoint (imports torch), and notes for the user."""
        from llm_trainer.inference.generate import TextGenerator
        from llm_trainer.training.device import probe_devices, select_device

        notes: list[str] = []
        if checkpoint and not model and is_path(checkpoint):
            info = self.checkpoint_at(checkpoint)
        else:
            rec = self.resolve_model(model)
            info = self.checkpoint_of(rec, checkpoint or "latest", notes)
            if not model:
                notes.insert(0, self.picked_note(rec, info))
        choice = select_device(device, probe_devices())
        if choice.warning:
            notes.append(f"warning: {choice.warning}")
        return TextGenerator.from_checkpoint(info.path, choice.device), info, notes

    def evaluate(self, target: str | None = None, *, checkpoint: str | None = None,
                 dataset: str | None = None, split: str = "val", batch_size: int | None = None,
                 device: str = "cpu", data_dir: Path) -> EvalResult:
        """Loss, perplexity and bits per byte over a whole split (imports torch). ``target``:
        a model name (default: the active model) whose ``checkpoint`` (latest, best, a step)
        is loaded, or a checkpoint folder. ``dataset``: default the model's own training data.
        While a run trains the model, its newest complete checkpoint is read; one pruned
        while loading is replaced by the then newest."""
        from llm_trainer.data.spec import check_dataset_spec, check_split

        check_split(split)  # before anything slow
        if dataset is not None:
            check_dataset_spec(dataset)
        notes: list[str] = []
        rec = None
        if target and ("/" in target or os.sep in target or (
                not self.models.exists(target) and Path(target).expanduser().is_dir())):
            if checkpoint:
                raise UsageError("--checkpoint picks a checkpoint of a model name, not of a "
                                 "checkpoint folder", hint="leave out --checkpoint")
            info = self.checkpoint_at(target)
        else:
            rec = self.resolve_model(target)
            info = self.checkpoint_of(rec, checkpoint or "latest", notes)
        from llm_trainer.training.device import probe_devices, select_device
        from llm_trainer.training.evaluate import evaluate_loaded, load_for_eval

        choice = select_device(device, probe_devices())
        if choice.warning:
            notes.append(f"warning: {choice.warning}")
        while True:
            try:
                ckpt, model = load_for_eval(info.path, choice.device)
                break
            except Exception:
                if rec is None:
                    raise
                newer = self.checkpoint_of(rec, checkpoint or "latest")
                if newer.path == info.path:
                    raise
                info = newer  # the training run pruned it meanwhile
        return evaluate_loaded(ckpt, model, dataset=dataset, split=split, batch_size=batch_size,
                               device=choice.device, data_dir=data_dir,
                               model_name=rec.name if rec else None, notes=notes)


def unreadable_view(model: UnreadableModel) -> ModelView:
    """A model folder whose model.json cannot be used, as a list shows it: its name, the
    status ``unreadable`` and why; nothing else is known (its id is a placeholder, unique
    among the models listed, that no command accepts)."""
    return ModelView(id=f"unreadable:{model.name}", name=model.name, status="unreadable",
                     problem=model.reason, created_at=0.0, last_trained_at=None,
                     architecture={}, tokenizer={}, datasets=[], epochs_completed=0.0,
                     steps_completed=0,
                     best_val_loss=None, latest_val_loss=None, archived=False, runs=[],
                     lineage=[], config={}, disk_bytes=0, path=str(model.path),
                     training_run=None, checkpoint_count=0, active=False, latest=False)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0

