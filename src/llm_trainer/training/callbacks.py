"""Callbacks: what the training loop does besides training.

One small protocol (``Callback``): the ``Trainer`` calls ``on_start``, ``on_step_end`` (a
step that stands), ``on_progress`` (log intervals), ``on_eval``, ``on_checkpoint``,
``on_sample``, ``on_anomaly``, ``on_end`` and ``on_log`` (a line for the run's log), each
with a frozen event of ``training.events``. A
callback with state names itself (``name``) and implements ``state_dict`` /
``load_state_dict``; the trainer stores that state in ``TrainState.callbacks`` and so in every
checkpoint.

Callbacks that take decisions (``EarlyStopping``, ``AnomalyGuard``) run on every rank of a
multi-process run, and the trainer combines their decisions across ranks; the others (run
reporter, sampler, experiment loggers) run on rank 0 only. The sampler writes text with the
generator, which sits above training: it lives in ``inference.samples``; the experiment
loggers (TensorBoard, CSV, W&B, MLflow) in ``training.loggers``.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_trainer.errors import UsageError
from llm_trainer.training.events import (
    Anomaly,
    CheckpointSaved,
    EvalDone,
    Progress,
    Sample,
    StartInfo,
)

if TYPE_CHECKING:
    from llm_trainer.config import TrainConfig
    from llm_trainer.training.trainer import Trainer, TrainingResult


@dataclass(frozen=True)
class StepStats:
    """What one optimizer step produced. ``loss`` / ``grad_norm`` are read every step on a
    CPU (free there) and only at log steps on an accelerator (reading them costs a sync)."""

    step: int
    lr: float
    loss: float | None
    grad_norm: float | None
    tokens: int = 0  # the step's targets: this process's (text), all trained ones (chat)


class Callback:
    """No-op base: override what you need."""

    name = ""  # key of this callback's state in trainer.json ("" = no state)

    def on_log(self, message: str) -> None: ...
    def on_start(self, trainer: Trainer, info: StartInfo) -> None: ...
    def on_step_end(self, trainer: Trainer, stats: StepStats) -> None: ...
    def on_progress(self, trainer: Trainer, progress: Progress) -> None: ...
    def on_eval(self, trainer: Trainer, result: EvalDone) -> None: ...
    def on_checkpoint(self, trainer: Trainer, result: CheckpointSaved) -> None: ...
    def on_sample(self, trainer: Trainer, sample: Sample) -> None: ...
    def on_anomaly(self, trainer: Trainer, event: Anomaly) -> None: ...
    def on_end(self, trainer: Trainer | None, result: TrainingResult | None) -> None:
        """Always called; ``result`` is None when training raised (and ``trainer`` too
        when it failed before the loop was set up)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _to_each(event: str):
    def call(self, *args: Any) -> None:
        for cb in self.items:
            getattr(cb, event)(*args)

    call.__name__ = event
    call.__doc__ = f"``{event}`` of each callback, in order."
    return call


class CallbackList:
    """Calls each callback in order."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.items = list(callbacks)

    def __iter__(self):
        return iter(self.items)

    on_log = _to_each("on_log")
    on_start = _to_each("on_start")
    on_step_end = _to_each("on_step_end")
    on_progress = _to_each("on_progress")
    on_eval = _to_each("on_eval")
    on_checkpoint = _to_each("on_checkpoint")
    on_sample = _to_each("on_sample")
    on_anomaly = _to_each("on_anomaly")
    on_end = _to_each("on_end")

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {cb.name: cb.state_dict() for cb in self.items if cb.name}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        for cb in self.items:
            if cb.name and cb.name in states:
                cb.load_state_dict(states[cb.name])


# ============================================================================ early stopping


class EarlyStopping(Callback):
    """Ends the run (``completed``) after ``patience`` evaluations in a row that did not beat
    the best val loss by at least ``min_delta``."""

    name = "early_stop"

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def on_eval(self, trainer, result) -> None:
        val = result.val_loss
        if self.best is None or val < self.best - self.min_delta:
            self.best, self.best_step, self.bad_evals = val, result.step, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            trainer.control.finish(
                f"early stop: val loss did not improve for {self.bad_evals} evaluations "
                f"(best {self.best:.4f} at step {self.best_step})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.bad_evals = int(state.get("bad_evals", 0))


# ============================================================================ anomalies


SPIKE_MIN_RISE = 1.0  # nats: a small loss (a learned task, a few trained tokens) doubling is
# noise; a divergence climbs by nats


class AnomalyGuard(Callback):
    """Detects a non-finite loss or gradient norm, and a loss spike (above ``spike_factor`` x
    the median of the last ``spike_window`` good steps and at least ``SPIKE_MIN_RISE`` nats
    above it, once warm-up is over), and decides
    what to do: roll back (at most ``max_rollbacks`` times) or stop. The trainer carries the
    decision out; every rank decides, and any rank's anomaly counts for all."""

    name = "anomaly"

    def __init__(self, cfg: TrainConfig, *, warmup_steps: int, gradients_may_overflow: bool
                 ) -> None:
        self.mode = cfg.on_anomaly
        self.spike_factor = cfg.spike_factor
        self.window: deque[float] = deque(maxlen=cfg.spike_window)
        self.max_rollbacks = cfg.max_rollbacks
        self.warmup_steps = warmup_steps
        self.gradients_may_overflow = gradients_may_overflow  # fp16: the scaler skips those
        self.rollbacks = 0
        self.history: list[dict[str, Any]] = []

    def check(self, stats: StepStats) -> str | None:
        """The anomaly this step shows, in words, or None (and the loss joins the window)."""
        loss, norm = stats.loss, stats.grad_norm
        if loss is None:
            return None
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        if norm is not None and not math.isfinite(norm) and not self.gradients_may_overflow:
            return f"the gradient norm became {norm}"
        if (self.spike_factor > 0 and stats.step > self.warmup_steps
                and len(self.window) >= min(self.window.maxlen or 2, 5)):
            median = statistics.median(self.window)
            if loss > self.spike_factor * median and loss - median > SPIKE_MIN_RISE:
                return (f"loss spike: {loss:.4f} is more than {self.spike_factor:g}x the "
                        f"median {median:.4f} of the last {len(self.window)} steps")
        self.window.append(loss)
        return None

    def decide(self, step: int, reason: str, *, can_rollback: bool) -> Anomaly:
        """The event to record, with ``action``: rollback | stop | exhausted (stop when there
        is no checkpoint to go back to yet)."""
        if self.mode == "stop" or not can_rollback:
            action = "stop"
        elif self.rollbacks >= self.max_rollbacks:
            action = "exhausted"
        else:
            action = "rollback"
            self.rollbacks += 1
        event = Anomaly(step=step, reason=reason, action=action, rollbacks=self.rollbacks,
                        max_rollbacks=self.max_rollbacks)
        self.history = [*self.history, event.to_json()][-20:]
        return event

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "history": self.history,
                "window": list(self.window)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollbacks = int(state.get("rollbacks", 0))
        self.history = list(state.get("history") or [])
        self.window.clear()
        self.window.extend(float(x) for x in state.get("window") or [])


@dataclass(frozen=True)
class InjectedAnomaly:
    """Test hook: ``LLM_TRAINER_TEST_ANOMALY=KIND@STEP[xCOUNT]`` (KIND spike or nan) scales the
    loss of step STEP (1-based) by 1000, or makes it NaN, before the backward pass, the first
    COUNT times (default 1) the loop reaches that step. Real gradients and weights follow."""

    kind: str
    step: int
    count: int

    ENV = "LLM_TRAINER_TEST_ANOMALY"

    @classmethod
    def from_env(cls) -> InjectedAnomaly | None:
        raw = os.environ.get(cls.ENV, "").strip()
        if not raw:
            return None
        try:
            kind, rest = raw.split("@", 1)
            step, _, count = rest.partition("x")
            out = cls(kind, int(step), int(count or 1))
        except ValueError:
            out = None
        if out is None or out.kind not in ("spike", "nan") or out.step < 1 or out.count < 1:
            raise UsageError(f"{cls.ENV}={raw!r} is not KIND@STEP[xCOUNT]",
                             hint="for example spike@30 or nan@25x5")
        return out

    def factor(self) -> float:
        return 1000.0 if self.kind == "spike" else math.nan


# ============================================================================ CPU share


class CpuShare(Callback):
    """On a CPU, trains with an even share of the cores that other programs leave free among
    the runs of this home that train at the same time (``llm_trainer.cpu_share``),
    re-checked every ``every_s`` seconds. Only for runs that do not set
    ``runtime.num_threads`` themselves; those still register, so that the others make room
    for them."""

    def __init__(self, home: Path, run_id: str, *, fixed_threads: int | None,
                 every_s: float = 5.0) -> None:
        self.home, self.run_id, self.fixed = Path(home), run_id, fixed_threads
        self.every_s = every_s
        self.active = False
        self.threads: int | None = None
        self.next_check = 0.0
        self.load = None  # cpu_share.LoadSampler, from the start on a CPU

    def on_start(self, trainer, info) -> None:
        import time

        import psutil

        from llm_trainer import cpu_share

        if trainer.parts.device.type != "cpu":
            return
        self.active = True
        me = psutil.Process()
        cpu_share.register(self.home, self.run_id, pid=me.pid, create_time=me.create_time(),
                           processes=trainer.parts.dist.local_world_size)
        self.load = cpu_share.LoadSampler(self.home)
        self.next_check = time.monotonic()
        self.rebalance(trainer, first=True)

    def rebalance(self, trainer, first: bool = False) -> None:
        import time

        import torch

        from llm_trainer import cpu_share

        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + self.every_s
        if self.fixed or trainer.parts.dist.enabled:  # set by the user / shared by torchrun already
            if first:
                trainer.log(f"CPU threads: {torch.get_num_threads()} "
                            f"({'runtime.num_threads' if self.fixed else 'per process'})")
            return
        runs = cpu_share.active_processes(self.home)
        busy = self.load.others_busy()
        threads = cpu_share.threads_per_process(runs, others_busy=busy)
        if threads != self.threads:
            torch.set_num_threads(threads)
            others = runs - 1
            why = ([f"{others} other training process{'es' if others > 1 else ''} in this "
                    "home"] if others > 0 else []) + \
                  ([f"{busy:.1f} cores busy with other programs"] if busy >= 0.05 else [])
            trainer.log(f"CPU threads: {threads} of {os.cpu_count()} cores"
                        + (f" ({'; '.join(why)})" if why else ""))
            self.threads = threads

    def on_progress(self, trainer, progress) -> None:
        if self.active:
            self.rebalance(trainer)

    def on_end(self, trainer, result) -> None:
        if self.active:
            from llm_trainer import cpu_share

            cpu_share.unregister(self.home, self.run_id)
