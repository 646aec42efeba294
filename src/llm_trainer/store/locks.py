"""The per-model training lock: ``checkpoints/<name>/.lock.json`` naming the run that trains it.

Created with O_EXCL, so two launches cannot both take it. A lock whose run is no longer alive
(crash, kill -9, reboot) is stale and may be taken over; liveness is decided by the caller
(pid + process start time), passed in as ``is_alive(run_id)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from llm_trainer.errors import BusyError
from llm_trainer.store.atomic import read_json
from llm_trainer.store.models import ModelStore

LOCK_FILE = ".lock.json"


def lock_path(model_dir: Path) -> Path:
    return Path(model_dir) / LOCK_FILE


def lock_holder(model_dir: Path) -> str | None:
    data = read_json(lock_path(model_dir))
    return data.get("run_id") if data else None


def acquire_model_lock(model_dir: Path, run_id: str, model_name: str,
                       is_alive: Callable[[str], bool]) -> None:
    path = lock_path(model_dir)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(model_dir)
            if holder and holder != run_id and is_alive(holder):
                raise BusyError(f"model {model_name} is already training in run {holder}",
                                hint=f"follow it with `llm-trainer status {holder}` or stop it "
                                     f"with `llm-trainer stop {holder}`") from None
            # stale (its run ended without releasing it): take it over
            stale = path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
            try:
                os.replace(path, stale)
                os.unlink(stale)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"schema_version": 1, "run_id": run_id}, fh)
        return
    raise BusyError(f"could not take the training lock of model {model_name}")


def release_model_lock(models: ModelStore, model_id: str, run_id: str) -> None:
    """Remove the lock if ``run_id`` still holds it (the model may have been renamed)."""
    rec = models.find_by_id(model_id)
    if rec is None:
        return
    if lock_holder(rec.path) == run_id:
        lock_path(rec.path).unlink(missing_ok=True)
