"""Runs: ``runs/<run_id>/`` with meta.json, state.json, metrics.jsonl, samples.jsonl, train.log
and (with --tensorboard) tensorboard/.

meta.json is what was asked (written once); state.json is what is happening now (rewritten
atomically by the worker); metrics.jsonl (train / eval / anomaly records) and samples.jsonl
(step, prompt, text) are append-only. No torch here.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.errors import NotFoundError, os_reason
from llm_trainer.store.atomic import (
    JsonLines,
    append_jsonl,
    atomic_write_json,
    read_json,
    read_jsonl,
    read_jsonl_lines,
    read_record,
    record_present,
)
from llm_trainer.store.records import ACTIVE, RUN_SCHEMA, RunMeta, RunState
from llm_trainer.store.schema import upgrade

CONTROL_SCHEMA = 1  # control.json (a front end's requests of a run); history: 1, the first

__all__ = ["ACTIVE", "RunPaths", "RunStore"]
RUN_ID_RE = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class RunPaths:
    dir: Path

    @property
    def meta(self) -> Path:
        return self.dir / "meta.json"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.dir / "train.log"

    @property
    def control(self) -> Path:
        return self.dir / "control.json"

    @property
    def samples(self) -> Path:
        return self.dir / "samples.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"


# metrics.jsonl fields that are numbers (or null) in every record that has them
METRIC_NUMBERS = ("time", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s",
                  "eta_seconds", "val_loss", "perplexity", "seconds")


def metric_ok(record: dict[str, Any]) -> bool:
    """A metrics.jsonl record as the worker writes it: an integer step, a text kind, numbers
    where numbers belong. Readers (plots, compare) may then use it without checks."""
    step = record.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        return False
    if not isinstance(record.get("kind", ""), str):
        return False
    return all(record.get(k) is None or (isinstance(record[k], int | float)
                                         and not isinstance(record[k], bool))
               for k in METRIC_NUMBERS)


class RunStore:
    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "runs"

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths(self.root / run_id)

    def new_run_id(self, label: str, *, now: float | None = None) -> str:
        """``20261123-142501-shakespeare``: sortable by start time, readable, unique."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
        label = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[:40] or "run"
        self.root.mkdir(parents=True, exist_ok=True)
        candidate = f"{stamp}-{label}"
        n = 2
        while True:
            try:
                (self.root / candidate).mkdir()
                return candidate
            except FileExistsError:
                candidate = f"{stamp}-{label}-{n}"
                n += 1

    def discard(self, run_id: str) -> None:
        """Give back an id from ``new_run_id`` that was never used (its folder is empty)."""
        with contextlib.suppress(OSError):
            self.paths(run_id).dir.rmdir()

    def create(self, meta: RunMeta, state: RunState) -> RunPaths:
        p = self.paths(meta.run_id)
        p.dir.mkdir(parents=True, exist_ok=True)
        self.write_meta(meta)
        self.write_state(state)
        p.log.touch()
        return p

    def exists(self, run_id: str) -> bool:
        """Its meta.json is there, readable or not (``read_meta`` then says why it is not):
        a run we may not look into still exists, and is not "no run with id"."""
        return record_present(self.paths(run_id).meta)

    def run_ids(self) -> list[str]:
        """Newest first (ids sort by start time)."""
        if not self.root.is_dir():
            return []
        ids = [e.name for e in os.scandir(self.root) if e.is_dir() and RUN_ID_RE.match(e.name)]
        return sorted(ids, reverse=True)

    def require(self, run_id: str) -> str:
        if self.exists(run_id):
            return run_id
        ids = self.run_ids()
        prefix = [r for r in ids if r.startswith(run_id)] if run_id else []
        if len(prefix) == 1:
            return prefix[0]
        close = prefix[:3] or difflib.get_close_matches(run_id, ids, n=3, cutoff=0.4)
        hint = (f"closest: {', '.join(close)}" if close else
                "see `llm-trainer status` for the runs you have")
        raise NotFoundError(f"no run with id {run_id!r}", hint=hint)

    def read_meta(self, run_id: str) -> RunMeta:
        """meta.json, migrated to the current schema: a ``RecordError`` when it cannot be
        read (``UnreadableRecord``) or is from a newer release (``SchemaError``)."""
        path = self.paths(run_id).meta
        data = read_record(path)
        if data is None:
            raise NotFoundError(f"run {run_id} has no meta.json ({path})")
        return RunMeta.from_json({"run_id": run_id, **data}, source=str(path))

    def read_state(self, run_id: str) -> RunState | None:
        """state.json, migrated to the current schema; None when missing, a ``RecordError``
        when it cannot be read or is from a newer release."""
        path = self.paths(run_id).state
        data = read_record(path)
        if data is None:
            return None
        return RunState.from_json({"run_id": run_id, **data}, source=str(path))

    def write_meta(self, meta: RunMeta) -> None:
        atomic_write_json(self.paths(meta.run_id).meta, meta.to_json(),
                          schema_version=RUN_SCHEMA)

    def write_state(self, state: RunState, *, durable: bool = False) -> None:
        atomic_write_json(self.paths(state.run_id).state, state.to_json(), durable=durable,
                          schema_version=RUN_SCHEMA)

    def write_control(self, run_id: str, **intent: Any) -> None:
        """What a front end asked of a run (e.g. ``stop --now``); views combine it with the
        worker's state, which only the worker writes."""
        atomic_write_json(self.paths(run_id).control, {"run_id": run_id, **intent},
                          schema_version=CONTROL_SCHEMA)

    def read_control(self, run_id: str) -> dict[str, Any]:
        """control.json migrated to ``CONTROL_SCHEMA`` ({} when there is none); a file from
        a newer llm-trainer raises ``SchemaError``."""
        path = self.paths(run_id).control
        data = read_json(path)
        if data is None:
            return {}
        return upgrade(data, current=CONTROL_SCHEMA, migrations={},
                       source=f"{run_id}/{path.name}")

    def append_metrics(self, run_id: str, record: dict[str, Any]) -> None:
        append_jsonl(self.paths(run_id).metrics, record)

    def read_metrics(self, run_id: str, *, tail: int | None = None) -> list[dict[str, Any]]:
        """The good records of metrics.jsonl (``metric_lines`` without the count)."""
        return self.metric_lines(run_id, tail=tail).records

    def metric_lines(self, run_id: str, *, tail: int | None = None) -> JsonLines:
        """metrics.jsonl: its records whose fields have the types the worker writes, and how
        many lines were skipped as bad (an edited or damaged file costs only those lines)."""
        return read_jsonl_lines(self.paths(run_id).metrics, tail=tail, check=metric_ok)

    def append_sample(self, run_id: str, record: dict[str, Any]) -> None:
        append_jsonl(self.paths(run_id).samples, record)

    def read_samples(self, run_id: str, *, tail: int | None = None) -> list[dict[str, Any]]:
        return read_jsonl(self.paths(run_id).samples, tail=tail)

    def log_tail(self, run_id: str, lines: int = 10) -> list[str]:
        path = self.paths(run_id).log
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 16384))
                data = fh.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            return [f"(train.log cannot be read: {os_reason(exc)})"]
        text = data.decode("utf-8", errors="replace").replace("\r", "\n")
        out = [ln for ln in text.split("\n") if ln.strip()]
        return out[-lines:]
