"""Checkpoint folders: staging, manifests with sha256, verification, retention.

A checkpoint is ``<model dir>/step-<N>/`` holding its files and a ``manifest.json`` with the
sha256 of each. It is built in a hidden staging folder, fsynced, and renamed into place; a
folder without a valid manifest does not exist as far as loading is concerned (torchtitan's
rule: a step counts only once its metadata exists). Discovery is here too: which folder an
``--init-from`` names and what a checkpoint of ours gives a new model (``inspect_source``,
``inspect_own_checkpoint``). No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_trainer.errors import UsageError
from llm_trainer.store.atomic import (
    atomic_write_json,
    file_mode,
    fsync_dir,
    read_json,
    remove_dead_temp_files,
    writer_alive,
    writer_tag,
)
from llm_trainer.store.schema import SchemaError, upgrade

if TYPE_CHECKING:
    from llm_trainer.model.hf_import import HFSource

MANIFEST = "manifest.json"
CONFIG = "config.json"  # the run config and the model's shape (and a LoRA model's adapters)
# schema_version of manifest.json and of a checkpoint's config.json; a newer file is refused
# (the checkpoint counts as unusable), an older one migrated. History: 1, the first release
# (config.json without schema_version reads as 1)
MANIFEST_SCHEMA = 1
CHECKPOINT_CONFIG_SCHEMA = 1
STEP_DIR = re.compile(r"^step-(\d+)$")
STAGING_PREFIX = ".staging-"
BASE_DIR = "base"  # a LoRA model's frozen base weights, beside its step-N checkpoints


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    epoch: float
    val_loss: float | None
    created_at: float
    valid: bool
    problem: str | None = None  # why it is not valid, in plain words

    @property
    def name(self) -> str:
        return self.path.name


OLD_WRITER = re.compile(r"-(\d+)$")  # before the start time was in the name: the pid only


def staging_name(what: str) -> str:
    return f"{STAGING_PREFIX}{what}-{writer_tag()}"


def staging_writer_alive(staging: Path) -> bool | None:
    """Is the process that made this staging folder still running? None: the name does not
    say who made it."""
    from llm_trainer.launcher import process_alive

    alive = writer_alive(staging.name)
    if alive is not None:
        return alive
    m = OLD_WRITER.search(staging.name)
    return process_alive(int(m.group(1)), None) if m else None


def new_staging_dir(model_dir: Path, step: int) -> Path:
    """An empty folder to build step ``step`` in, named after this process; what dead writers
    left in ``model_dir`` is removed first (it may be what filled the disk)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    clean_model_dir(model_dir)
    staging = model_dir / staging_name(step_dir_name(step))
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def commit_checkpoint(staging: Path, *, step: int, epoch: float, val_loss: float | None,
                      extra: dict[str, Any] | None = None, name: str | None = None) -> Path:
    """Hash and fsync every file in ``staging``, write the manifest, rename into place (as
    ``step-<N>``, or ``name``). Files get the umask's mode (safetensors writes 0600)."""
    files = {}
    mode = file_mode()
    for p in sorted(staging.iterdir()):
        if p.is_file() and p.name != MANIFEST:
            with open(p, "rb") as fh:
                os.fchmod(fh.fileno(), mode)
                os.fsync(fh.fileno())
            files[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    atomic_write_json(staging / MANIFEST, {
        "step": step,
        "epoch": epoch,
        "val_loss": val_loss,
        "created_at": time.time(),
        "files": files,
        **(extra or {}),
    }, schema_version=MANIFEST_SCHEMA)
    fsync_dir(staging)
    final = staging.parent / (name or step_dir_name(step))
    if final.exists():  # re-saving the same step (e.g. a resumed run stopped at once)
        trash = staging.parent / staging_name(f"old-{final.name}")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    fsync_dir(staging.parent)
    return final


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint folder so that a kill midway leaves no step folder behind: it is
    renamed to a staging name of this process first (gone at once as a checkpoint; what the
    kill leaves is removed as a dead writer's), then deleted."""
    trash = path.parent / staging_name(f"deleting-{path.name}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def inspect_checkpoint(path: Path, *, verify: bool = True,
                       bases: dict[Path, CheckpointInfo] | None = None) -> CheckpointInfo:
    """Read the manifest and (with ``verify``) check every file's size and sha256; a LoRA
    checkpoint's base too (``bases``: the bases already checked, when listing a model's
    checkpoints, which share one)."""
    m = STEP_DIR.match(path.name)
    step_from_name = int(m.group(1)) if m else -1
    manifest = read_json(path / MANIFEST)
    problem = None
    try:
        if manifest is not None:
            manifest = upgrade(manifest, current=MANIFEST_SCHEMA, migrations={},
                               source=f"{path.name}/{MANIFEST}")
    except SchemaError as exc:
        manifest, problem = None, str(exc)
    if manifest is None:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = 0.0
        return CheckpointInfo(path, step_from_name, 0.0, None, mtime, False,
                              problem or f"{path.name}: manifest.json is missing or unreadable")
    files = manifest.get("files") or {}
    step = int(manifest.get("step", step_from_name))
    info = dict(step=step, epoch=float(manifest.get("epoch") or 0.0),
                val_loss=manifest.get("val_loss"), created_at=float(manifest.get("created_at", 0)))
    if not files:
        return CheckpointInfo(path, **info, valid=False,
                              problem=f"{path.name}: manifest lists no files")
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            return CheckpointInfo(path, **info, valid=False,
                                  problem=f"{path.name}/{name} is missing")
        if f.stat().st_size != meta.get("bytes"):
            return CheckpointInfo(path, **info, valid=False,
                                  problem=f"{path.name}/{name} has the wrong size")
        if verify and sha256_file(f) != meta.get("sha256"):
            return CheckpointInfo(path, **info, valid=False,
                                  problem=f"{path.name}/{name} does not match its sha256")
    base = base_of(path)
    if base is not None:  # a LoRA checkpoint is usable only with the base weights it refers to
        checked = bases.get(base) if bases is not None else None
        if checked is None:
            checked = inspect_checkpoint(base, verify=verify)
            if bases is not None:
                bases[base] = checked
        if not checked.valid:
            return CheckpointInfo(path, **info, valid=False,
                                  problem=f"{path.name} needs its base weights, and "
                                          f"{checked.problem}")
    return CheckpointInfo(path, **info, valid=True)


def read_checkpoint_config(path: Path) -> dict[str, Any] | None:
    """A checkpoint's config.json, migrated to ``CHECKPOINT_CONFIG_SCHEMA`` (None: missing or
    unreadable; ``SchemaError``: written by a newer llm-trainer)."""
    data = read_json(path / CONFIG)
    if data is None:
        return None
    return upgrade(data, current=CHECKPOINT_CONFIG_SCHEMA, migrations={},
                   source=f"{path.name}/{CONFIG}")


def checked_config(path: Path, *, verify: bool,
                   error: Callable[[str], Exception]) -> tuple[CheckpointInfo, dict[str, Any]]:
    """A usable checkpoint's manifest and config.json; ``error(what is wrong)`` is raised for
    one that fails its manifest or has no readable config."""
    info = inspect_checkpoint(path, verify=verify)
    if not info.valid:
        raise error(f"checkpoint {info.problem}")
    meta = read_checkpoint_config(path)
    if meta is None:
        raise error(f"checkpoint {path} has no readable {CONFIG}")
    return info, meta


def base_of(path: Path) -> Path | None:
    """The folder with the frozen base weights a (LoRA) checkpoint's config.json names, or
    None for a checkpoint that holds its whole model."""
    try:
        data = read_checkpoint_config(path)
    except SchemaError:
        return None
    base = data.get("base") if isinstance(data, dict) else None
    return (path / base).resolve() if isinstance(base, str) and base else None


def list_checkpoints(model_dir: Path, *, verify: bool = False) -> list[CheckpointInfo]:
    """Every step folder, oldest first by creation (a run resumed from an older checkpoint
    makes newer ones than a higher step of the abandoned branch). ``verify`` hashes files.
    Step folders without a manifest are left out while the model has a usable checkpoint:
    they are deletions a kill interrupted (``unfinished_deletions``), not checkpoints."""
    if not model_dir.is_dir():
        return []
    bases: dict[Path, CheckpointInfo] = {}  # a LoRA model's base: hashed once, not per step
    found = [inspect_checkpoint(p, verify=verify, bases=bases) for p in model_dir.iterdir()
             if p.is_dir() and STEP_DIR.match(p.name)]
    if any(c.valid for c in found):
        found = [c for c in found if (c.path / MANIFEST).exists()]
    return sorted(found, key=lambda c: (c.created_at, c.step))


def unfinished_deletions(model_dir: Path) -> list[Path]:
    """Step folders without a manifest beside a usable checkpoint. A checkpoint appears
    whole, manifest included, by one rename, so a step folder without one is what a kill
    left of a deletion (pruning before ``remove_checkpoint`` deleted in place, and
    ``rmtree`` may take the manifest first). With no usable checkpoint they stay, for the
    user to see."""
    if not model_dir.is_dir():
        return []
    steps = [p for p in model_dir.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    bare = [p for p in steps if not (p / MANIFEST).exists()]
    if not bare or not any(inspect_checkpoint(p, verify=False).valid
                           for p in steps if p not in bare):
        return []
    return bare


def best_of(checkpoints: list[CheckpointInfo]) -> CheckpointInfo | None:
    scored = [c for c in checkpoints if c.valid and c.val_loss is not None]
    return min(scored, key=lambda c: (c.val_loss, -c.step)) if scored else None


def prune_checkpoints(model_dir: Path, *, keep_last: int, keep_every: int,
                      protect: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """Delete checkpoints that are neither among the newest ``keep_last`` valid ones, the best,
    a multiple of ``keep_every``, nor in ``protect``. Invalid ones are left for inspection.
    Returns what was deleted."""
    ckpts = [c for c in list_checkpoints(model_dir) if c.valid]
    keep = {c.name for c in ckpts[-keep_last:]} | set(protect)
    best = best_of(ckpts)
    if best is not None:
        keep.add(best.name)
    if keep_every:
        keep |= {c.name for c in ckpts if c.step % keep_every == 0}
    removed = []
    for c in ckpts:
        if c.name not in keep:
            remove_checkpoint(c.path)
            removed.append(c.path)
    return removed


def clean_model_dir(model_dir: Path, *, older_than_s: float = 3600.0) -> list[Path]:
    """Remove what interrupted writers left in a model's folder: staging folders whose
    writer has died (a kill or a full disk mid-save; unnamed ones after ``older_than_s``)
    and unfinished deletions. A live writer's staging folder is left alone. Returns what
    was removed. Best effort: a folder it cannot read or change is left as it is (the
    commands that read the model say what is wrong with it)."""
    removed: list[Path] = []
    now = time.time()
    try:
        for p in model_dir.glob(f"{STAGING_PREFIX}*"):
            alive = staging_writer_alive(p)
            with contextlib.suppress(FileNotFoundError):
                if alive is False or (alive is None and
                                      now - p.stat().st_mtime > older_than_s):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        for p in unfinished_deletions(model_dir):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        removed += remove_dead_temp_files(model_dir)  # model.json's, of a killed writer
    except OSError:
        pass
    return removed


def plan_finished(trainer: dict[str, Any]) -> str | None:
    """Why the plan saved in a checkpoint's trainer.json is over, or None while steps remain:
    its last step was reached, or the run ended early (early stop, target val loss)."""
    total = (trainer.get("schedule") or {}).get("total_steps", 0)
    step = trainer.get("step", 0)
    if step >= total:
        return f"finished its planned {total} steps"
    if trainer.get("finished"):
        return f"ended at step {step} ({trainer['finished']})"
    return None


def resolve_checkpoint(model_dir: Path, which: str = "latest",
                       warn=None) -> CheckpointInfo | None:
    """``latest`` | ``best`` | a step number | a folder name -> the newest matching checkpoint
    that passes verification. Broken ones are skipped with ``warn(message)``."""
    ckpts = list_checkpoints(model_dir, verify=False)
    if which == "best":
        order = sorted((c for c in ckpts if c.val_loss is not None),
                       key=lambda c: (c.val_loss, -c.step))
    elif which == "latest":
        order = list(reversed(ckpts))
    else:
        wanted = which.removeprefix("step-")
        if not wanted.isdigit():
            return None
        order = [c for c in ckpts if c.step == int(wanted)]
    for c in order:
        checked = inspect_checkpoint(c.path, verify=True)
        if checked.valid:
            return checked
        if warn is not None:
            warn(f"skipping checkpoint {checked.problem}")
    return None


def inspect_source(path: Path) -> HFSource:
    """The source an import run recorded (its ``init.checkpoint``): a checkpoint folder of
    this trainer (it has a manifest) or a Hugging Face folder."""
    from llm_trainer.model.hf_import import PREFIX, inspect_hf_folder

    if (path / MANIFEST).is_file():
        return inspect_own_checkpoint(path)
    if not path.exists():
        raise UsageError(f"--init-from: {path} no longer exists (pruned or deleted since the "
                         "run was planned)", hint="start it again from another checkpoint")
    return inspect_hf_folder(f"{PREFIX}{path}")


def inspect_own_checkpoint(path: Path, label: str | None = None) -> HFSource:
    """A checkpoint of this trainer as the start of a new model: its stored architecture,
    tokenizer and weights (a LoRA checkpoint's with the adapters folded in: see
    ``checkpoint_io.weights_for_import``). Its manifest (and a LoRA checkpoint's base)
    must be intact."""
    from llm_trainer.model.hf_import import OWN, HFSource
    from llm_trainer.model.shape import ARCH_KEYS, ModelShape

    _, meta = checked_config(path, verify=False, error=lambda what: UsageError(
        f"--init-from: {what}", hint="pick another checkpoint folder, or a model name"))
    shape = ModelShape.from_stored(meta["architecture"])
    arch = {key: getattr(shape, key) for key in ARCH_KEYS}
    weights = path / ("model.safetensors" if meta.get("lora") is None else "adapter.safetensors")
    return HFSource(path, weights, path / "tokenizer.json", int(shape.vocab_size),
                    int(shape.block_size), arch, OWN, label)
