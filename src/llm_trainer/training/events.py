"""What the training loop tells its callbacks: one frozen event type per kind of news.

The ``Trainer`` creates them; callbacks (the run reporter, TensorBoard, early stopping...)
read their fields. They are plain data (numbers, strings, JSON-ready dicts): a callback may
store ``to_json()`` of one as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class _Event:
    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class DatasetInfo(_Event):
    spec: str
    fingerprint: str
    train_tokens: int
    val_tokens: int
    hold_out: str = ""  # how validation was chosen (TextSource.hold_out_rule), and any cap
    separator: int | None = None  # the id that ends each document; None: plain text
    cache: str = ""  # the token cache folder
    shards: int = 0  # training shards


@dataclass(frozen=True)
class StartInfo(_Event):
    """Set-up is done and the first step is next (``on_start``)."""

    device: dict[str, Any]  # DeviceChoice.to_json()
    precision: str
    parameters: int
    architecture: dict[str, Any]  # the model's shape as stored with checkpoints
    tokenizer: dict[str, Any]  # {"kind", "vocab_size"}
    dataset: DatasetInfo
    steps_per_epoch: int
    tokens_per_step: int
    global_batch: int  # sequences per optimizer step, all processes together
    world_size: int
    start_step: int
    total_steps: int
    optimizer: str
    compiled: bool
    config: dict[str, Any]  # the RunConfig as trained (after fallbacks)
    startup_s: float


@dataclass(frozen=True)
class Progress(_Event):
    """A log interval ended (``on_progress``): the mean loss over it and the ETA."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    grad_norm: float | None
    tokens_per_s: float
    train_time_s: float
    elapsed_s: float
    eta_seconds: float | None
    finish_at: float | None
    step_time_s: float | None


@dataclass(frozen=True)
class EvalDone(_Event):
    """A validation pass ended (``on_eval``)."""

    step: int
    epoch: float
    val_loss: float
    perplexity: float
    best_val_loss: float | None
    seconds: float


@dataclass(frozen=True)
class CheckpointSaved(_Event):
    """A checkpoint is committed (``on_checkpoint``)."""

    path: str
    step: int
    epoch: float
    val_loss: float | None  # of these weights, when evaluated at this step
    best_val_loss: float | None
    seconds: float


@dataclass(frozen=True)
class Anomaly(_Event):
    """A NaN/Inf or a loss spike, and what the guard decided (``on_anomaly``)."""

    step: int
    reason: str
    action: str  # rollback | stop | exhausted
    rollbacks: int
    max_rollbacks: int


@dataclass(frozen=True)
class Sample(_Event):
    """Text the model wrote during training (``on_sample``)."""

    step: int
    prompt: str
    text: str
    final: bool = False  # the end-of-run sample a --foreground command prints
