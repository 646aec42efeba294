"""Typed run records: ``RunMeta`` (meta.json: what was asked) and ``RunState`` (state.json:
what is happening now), with their status enum and schema migrations. No torch here.

Schema history (``RUN_SCHEMA``):
  1  the first release.
  2  state.json: gradient norm, anomaly counts and the latest sample (filled with defaults
     when a v1 file is read); meta.json: ``distributed`` always present.

A field added with a default needs no new version: an older file reads with the default
(the ``phase*`` fields of state.json came so), and an older release keeps a newer file's
extra keys in ``extra``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from llm_trainer.store.schema import SchemaError, check_types, upgrade

RUN_SCHEMA = 2


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    STOPPED = "stopped"

    @property
    def active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)

# ``RunState.phase``: what a running run does before its first step (render.py words it)
PREPARING_DATA = "preparing_data"
PHASE_FIELDS = ("phase", "phase_stage", "phase_progress", "phase_mb_per_s", "phase_eta_s")


class RunKind(StrEnum):
    """What a launch does with the model: a new one, an existing one on (new) data, or the
    exact continuation of a checkpoint."""

    TRAIN = "train"
    CONTINUE = "continue"
    RESUME = "resume"


class InitMode(StrEnum):
    """How a run starts from a checkpoint (``InitFrom.mode``)."""

    RESUME = "resume"  # restore everything: optimizer, schedule, RNG, data position, callbacks
    CONTINUE = "continue"  # weights and tokenizer only: new data, fresh optimizer and schedule
    IMPORT = "import"  # weights from a Hugging Face folder or our checkpoint (--init-from)


@dataclass(frozen=True)
class InitFrom:
    """The checkpoint (or Hugging Face folder) a run starts from, and how. Decided by the
    launch planner, stored in meta.json (``RunMeta.init``), read by the trainer."""

    checkpoint: Path
    mode: InitMode = InitMode.RESUME
    more_epochs: int | None = None  # resume: train this many epochs past the checkpoint
    restart_schedule: bool = False  # with more_epochs: a fresh warm-up + decay
    data_from: str | None = None  # continue: the model whose dataset it trains on

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        try:
            object.__setattr__(self, "mode", InitMode(self.mode))
        except ValueError:
            raise SchemaError(f"unknown init mode {self.mode!r} (known: "
                              f"{', '.join(InitMode)})") from None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> InitFrom | None:
        if not data:
            return None
        return cls(checkpoint=Path(data["checkpoint"]), mode=data.get("mode", "resume"),
                   more_epochs=data.get("more_epochs"),
                   restart_schedule=bool(data.get("restart_schedule")),
                   data_from=data.get("data_from"))

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "mode": str(self.mode),
                "more_epochs": self.more_epochs, "restart_schedule": self.restart_schedule,
                "data_from": self.data_from}


def _state_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"grad_norm": None, "anomalies": 0, "rollbacks": 0, "last_anomaly": None,
            "last_sample": None, **data}


def _meta_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"distributed": None, **data}


def _plain(value: Any) -> Any:
    """A field as JSON: typed parts of a record (``InitFrom``) by their own ``to_json``."""
    return value.to_json() if hasattr(value, "to_json") else value


class _Record:
    """from_json / to_json for a dataclass with an ``extra`` dict that keeps unknown keys (a
    newer minor writer's additions survive a rewrite)."""

    @classmethod
    def _from(cls, data: dict[str, Any], source: str):
        names = {f.name for f in fields(cls)} - {"extra"}  # type: ignore[arg-type]
        known = {k: v for k, v in data.items() if k in names}
        check_types(cls, known, source)
        extra = {k: v for k, v in data.items() if k not in names and k != "schema_version"}
        return cls(**known, extra=extra)  # type: ignore[call-arg]

    def to_json(self) -> dict[str, Any]:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
               if f.name != "extra"}
        return {**self.extra, **out}  # type: ignore[attr-defined]

    def updated(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass
class RunMeta(_Record):
    """What was asked: written by the launcher, completed by the worker when it starts."""

    run_id: str
    created_at: float | None = None
    kind: str = RunKind.TRAIN  # a RunKind
    command: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # {"id", "name"} at launch
    config: dict[str, Any] = field(default_factory=dict)
    requested_device: str | None = None
    init: InitFrom | None = None  # the checkpoint it starts from, and how
    dataset_explicit: bool = True
    created_model: bool = False
    foreground: bool = False
    home: str | None = None
    distributed: dict[str, Any] | None = None
    # filled in by the worker once training starts
    selected_device: dict[str, Any] | None = None
    precision: str | None = None
    parameters: int | None = None
    architecture: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    global_batch: int | None = None
    world_size: int | None = None
    tokens_per_step: int | None = None
    steps_per_epoch: int | None = None
    versions: dict[str, str] | None = None
    # --batch-size auto: the micro-batch and accumulation chosen before the run started
    batch_choice: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.init, dict):
            try:
                self.init = InitFrom.from_json(self.init)
            except (KeyError, TypeError) as exc:
                raise SchemaError(f"meta.json of run {self.run_id} has an invalid init "
                                  f"({exc!r})") from None

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "meta.json") -> RunMeta:
        return cls._from(upgrade(data, current=RUN_SCHEMA, migrations={1: _meta_v1_to_v2},
                                 source=source), source)


@dataclass
class RunState(_Record):
    """What is happening now. The worker is its only writer once it runs (the launcher
    writes the first, queued one)."""

    run_id: str
    status: RunStatus = RunStatus.QUEUED
    model_id: str | None = None
    model_name: str | None = None
    created_at: float | None = None
    requested_device: str | None = None
    # the process
    pid: int | None = None
    create_time: float | None = None
    agent_pid: int | None = None  # torchrun's agent, for multi-process runs
    agent_create_time: float | None = None
    world_size: int | None = None
    started_at: float | None = None
    updated_at: float | None = None
    ended_at: float | None = None
    # progress
    device: str | None = None
    start_step: int | None = None
    step: int = 0
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    epoch: float | None = None
    loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_seconds: float | None = None
    finish_at: float | None = None
    step_time_s: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    perplexity: float | None = None
    checkpoint: str | None = None
    telemetry: dict[str, Any] | None = None
    # a phase before the first step (PREPARING_DATA), while the worker is in it; cleared
    # when training starts. The stage is the phase's own part ("vocabulary", "tokenizing").
    phase: str | None = None
    phase_stage: str | None = None
    phase_progress: float | None = None  # 0..1
    phase_mb_per_s: float | None = None
    phase_eta_s: float | None = None
    # events
    anomalies: int = 0
    rollbacks: int = 0
    last_anomaly: str | None = None
    last_sample: dict[str, Any] | None = None
    # the time estimate made from the run's first steps, and at the end how far off it was
    # (actual mean step time / estimated - 1); see training.estimate.EstimateCheck
    estimate: dict[str, Any] | None = None
    estimate_error: float | None = None
    actual_step_time_s: float | None = None
    # the end
    reason: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.status = RunStatus(self.status)
        except ValueError:
            raise SchemaError(f"state.json of run {self.run_id} has an unknown status "
                              f"{self.status!r}") from None

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "state.json") -> RunState:
        return cls._from(upgrade(data, current=RUN_SCHEMA, migrations={1: _state_v1_to_v2},
                                 source=source), source)
