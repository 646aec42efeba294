"""Named models: ``checkpoints/<name>/model.json`` plus checkpoint folders.

The folder name is the model's name (so a rename is one atomic ``os.rename``); the stable
``id`` in model.json (a uuid) never changes, and runs refer to models by id: a name is a
label, and a new model that gets a deleted model's name is another model. No torch here.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.errors import NotFoundError, RecordError, UsageError
from llm_trainer.store.atomic import atomic_write_json, read_json, read_record, record_present
from llm_trainer.store.checkpoints import STEP_DIR, list_checkpoints
from llm_trainer.store.schema import check_types, upgrade

MODEL_FILE = "model.json"
MODEL_SCHEMA = 1  # model.json; a newer file is refused, an older one migrated
ACTIVE_FILE = ".active.json"
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # whole name: fullmatch
MAX_NAME = 64
# ids of records from before ids (see ModelStore._give_id); any fixed uuid would do
LEGACY_ID_NAMESPACE = uuid.UUID("6f1f3b52-2d2e-4f53-9d3e-6c6c6d2d6964")


def new_model_id() -> str:
    """A model's id: a random uuid, never reused (the models before uuids have ``m-`` and 12
    hex digits, and keep them)."""
    return str(uuid.uuid4())


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe model name, else raise UsageError saying why."""
    allowed = "letters, digits, '-', '_' and '.'; at most 64 characters; not starting with '.'"
    if name is None or not str(name).strip():
        raise UsageError("a model name cannot be empty", hint=f"use {allowed}")
    name = str(name)
    if len(name) > MAX_NAME:
        raise UsageError(f"model name is {len(name)} characters long; the limit is {MAX_NAME}",
                         hint=f"use {allowed}")
    if "/" in name or "\\" in name or os.sep in name:
        raise UsageError(f"model name {name!r} contains a path separator", hint=f"use {allowed}")
    if ".." in name:
        raise UsageError(f"model name {name!r} contains '..'", hint=f"use {allowed}")
    if name.startswith("."):
        raise UsageError(f"model name {name!r} starts with a dot", hint=f"use {allowed}")
    if not NAME_RE.fullmatch(name):  # ($ would let a final newline through)
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "-_."))})
        raise UsageError(f"model name {name!r} contains characters that are not allowed: "
                         f"{' '.join(repr(c) for c in bad)}", hint=f"use {allowed}")
    return name


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def slug(text: str, limit: int = 40) -> str:
    """A name-safe slug of free text (dataset specs, presets)."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return (s[:limit].strip("-") or "model")


@dataclass
class ModelRecord:
    """model.json, plus what is derived from the folder (name, path)."""

    id: str
    name: str
    path: Path
    created_at: float
    last_trained_at: float | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    epochs_completed: float = 0.0
    steps_completed: int = 0
    best_val_loss: float | None = None
    latest_val_loss: float | None = None
    archived: bool = False
    runs: list[str] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)  # one entry per run
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "created_at": self.created_at,
            "last_trained_at": self.last_trained_at, "architecture": self.architecture,
            "tokenizer": self.tokenizer, "datasets": self.datasets,
            "epochs_completed": self.epochs_completed, "steps_completed": self.steps_completed,
            "best_val_loss": self.best_val_loss, "latest_val_loss": self.latest_val_loss,
            "archived": self.archived, "runs": self.runs, "lineage": self.lineage,
            "config": self.config,
        }

    @classmethod
    def from_json(cls, path: Path, data: dict[str, Any]) -> ModelRecord:
        """model.json of the model in ``path``, migrated to ``MODEL_SCHEMA`` (SchemaError for
        a file from a newer llm-trainer). The name is the folder's; a record without an id
        reads with ``id`` None (``ModelStore`` gives it one)."""
        source = str(path / MODEL_FILE)
        data = upgrade(data, current=MODEL_SCHEMA, migrations={}, source=source)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in
                 ("path", "name", "created_at")}
        created_at = data.get("created_at") or 0.0
        checked = {**known, "created_at": created_at}
        if checked.get("id") is None:  # a record from before ids: ModelStore gives it one
            checked.pop("id", None)
        check_types(cls, checked, source)
        return cls(path=path, name=path.name, created_at=created_at, **known)

    def disk_bytes(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.path):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, f))
        return total


@dataclass(frozen=True)
class UnreadableModel:
    """A model folder whose model.json is there but cannot be read or used, and why."""

    name: str
    path: Path
    reason: str


class ModelStore:
    """All models under ``<home>/checkpoints``."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "checkpoints"

    # ------------------------------------------------------------------ lookup
    def names(self, *, include_archived: bool = True) -> list[str]:
        return [m.name for m in self.list(include_archived=include_archived)]

    def list(self, *, include_archived: bool = True) -> list[ModelRecord]:
        """The models whose model.json reads (``scan`` also says which do not, and why)."""
        return self.scan(include_archived=include_archived)[0]

    def scan(self, *, include_archived: bool = True
             ) -> tuple[list[ModelRecord], list[UnreadableModel]]:
        """Every model folder: the records that read, and the folders whose model.json is
        there but cannot be used (one damaged or forbidden model hides no other)."""
        if not self.root.is_dir():
            return [], []
        out, unreadable = [], []
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            try:
                rec = self._read(d)
            except RecordError as exc:
                unreadable.append(UnreadableModel(d.name, d, str(exc)))
                continue
            if rec is not None and (include_archived or not rec.archived):
                out.append(rec)
        return out, unreadable

    def _read(self, d: Path) -> ModelRecord | None:
        """The model in folder ``d``; None when it has no model.json, a ``RecordError`` when
        its model.json cannot be read or used."""
        data = read_record(d / MODEL_FILE)
        if data is None:
            return None
        rec = ModelRecord.from_json(d, {"id": None, **data})
        if not rec.id:
            rec = self._give_id(rec)
        return rec

    def _give_id(self, rec: ModelRecord) -> ModelRecord:
        """A record from before ids gets one, written back once. It is derived from what
        does not change (the creation time) and the name it has now, so two readers that
        migrate it at once write the same id; after that, the file holds it and a rename
        cannot change it. A home we cannot write to reads the same id each time."""
        rec.id = str(uuid.uuid5(LEGACY_ID_NAMESPACE, f"{rec.name}\n{rec.created_at!r}"))
        with contextlib.suppress(OSError):
            self.save(rec)
        return rec

    def exists(self, name: str) -> bool:
        """Its model.json is there, readable or not (``get`` then says why it is not)."""
        return record_present(self.root / name / MODEL_FILE)

    def get(self, name: str) -> ModelRecord:
        rec = self._read(self.root / name) if name and "/" not in name else None
        if rec is None:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = (f"did you mean: {', '.join(close)}?" if close else
                    "see `llm-trainer models list` for the models you have")
            raise NotFoundError(f"no model named {name!r}", hint=hint)
        return rec

    def find_by_id(self, model_id: str) -> ModelRecord | None:
        for rec in self.list():
            if rec.id == model_id:
                return rec
        return None

    def owner_of_legacy_run(self, run_id: str, name: str | None,
                            created_at: float | None) -> str:
        """The model id for a run recorded before runs named their model's id: the model
        that lists the run, else the model of the run's name that existed when it started,
        else an id of no model (its model was deleted: a model that takes the name later is
        another model; derived from the run id, so a home we cannot write to gives the same
        answer each time). The caller writes the answer into the run, so this is asked
        once."""
        models = self.list()
        for rec in models:
            if run_id in rec.runs:
                return rec.id
        for rec in models:
            if rec.name == name and (created_at is None or rec.created_at <= created_at):
                return rec.id
        return str(uuid.uuid5(LEGACY_ID_NAMESPACE, f"run:{run_id}"))

    # ------------------------------------------------------------------ writes
    def save(self, rec: ModelRecord) -> None:
        atomic_write_json(rec.path / MODEL_FILE, rec.to_json(), schema_version=MODEL_SCHEMA)

    def default_name(self, base: str) -> str:
        base = slug(base)
        taken = {p.name for p in self.root.glob("*") if not _empty_dir(p)} \
            if self.root.is_dir() else set()
        n = 1
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    def create(self, name: str | None, *, default_base: str, **fields: Any) -> ModelRecord:
        """A new model folder with its model.json. An existing name is refused; an empty
        folder (what a full disk or a crash left of an earlier attempt) is not a model and
        does not keep the name. The folder is made whole (model.json included) in a hidden
        one and renamed into place: a failure leaves no folder under the name."""
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            chosen = validate_name(name) if name is not None else self.default_name(default_base)
            path = self.root / chosen
            rec = ModelRecord(id=new_model_id(), name=chosen, path=path,
                              created_at=time.time(), **fields)
            staging = self.root / f".creating-{rec.id}"
            try:
                staging.mkdir()
                atomic_write_json(staging / MODEL_FILE, rec.to_json(),
                                  schema_version=MODEL_SCHEMA)
                os.rename(staging, path)  # replaces an empty folder, never a model
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                if name is not None:
                    raise UsageError(
                        f"a model named {chosen!r} already exists",
                        hint=f"continue it with `llm-trainer resume {chosen}` or "
                             f"`llm-trainer train --model {chosen}`, or pick another --name",
                    ) from None
                continue
            return rec
        raise UsageError("could not find a free model name")  # pragma: no cover

    def rename(self, old: str, new: str) -> ModelRecord:
        rec = self.get(old)
        validate_name(new)
        if new == old:
            return rec
        target = self.root / new
        if target.exists() and not _empty_dir(target):  # an empty one is replaced
            raise UsageError(f"a model named {new!r} already exists",
                             hint=f"pick another name, or rename that one first "
                                  f"(`llm-trainer models rename {new} NEW`)")
        os.rename(rec.path, target)  # atomic: the folder has the old name or the new one
        return self.get(new)

    def set_archived(self, name: str, archived: bool) -> ModelRecord:
        rec = self.get(name)
        rec.archived = archived
        self.save(rec)
        return rec

    def delete(self, name: str) -> Path:
        rec = self.get(name)
        path = rec.path.resolve()
        if path.parent != self.root.resolve():
            raise UsageError(f"refusing to delete {path}: it is not inside {self.root}")
        # move aside first so a crash mid-delete never leaves a half model under its name
        trash = self.root / f".deleting-{rec.id}-{os.getpid()}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        active = self.active_id()
        if active == rec.id:
            (self.root / ACTIVE_FILE).unlink(missing_ok=True)
        return path

    # ------------------------------------------------------------------ active model
    def active_id(self) -> str | None:
        data = read_json(self.root / ACTIVE_FILE)
        return data.get("id") if data else None

    def set_active(self, name: str) -> ModelRecord:
        rec = self.get(name)
        atomic_write_json(self.root / ACTIVE_FILE, {"id": rec.id})
        return rec

    def active(self) -> ModelRecord | None:
        mid = self.active_id()
        return self.find_by_id(mid) if mid else None

    def latest_trained(self) -> ModelRecord | None:
        trained = [m for m in self.list(include_archived=False) if m.last_trained_at]
        return max(trained, key=lambda m: m.last_trained_at) if trained else None

    # ------------------------------------------------------------------ checkpoints
    def has_checkpoints(self, rec: ModelRecord) -> bool:
        return any(STEP_DIR.match(p.name) for p in rec.path.iterdir()) if rec.path.is_dir() \
            else False

    def checkpoints(self, rec: ModelRecord, *, verify: bool = False):
        return list_checkpoints(rec.path, verify=verify)
