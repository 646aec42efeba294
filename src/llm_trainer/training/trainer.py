"""The training loop: ``train(job, callbacks)`` is the only place that trains.

``build_parts(job)`` (``training.parts``) sets everything up; ``Trainer(parts,
callbacks).fit()`` then repeats ``parts.train_step`` -> anomaly check -> progress ->
evaluation -> checkpoint until the plan, a stop request or a callback ends it. Everything
that must survive a resume is in ``TrainState`` (``trainer.json``). Side jobs are callbacks
(``training.callbacks``), told what happens through the events of ``training.events``.

The step is kept lean (it is most of the wall time on a CPU): batches come from a
memory-mapped token array with one fancy-index, the loss stays on the device except at log
intervals (every step on a CPU, where reading it is free and catches NaN at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.errors import DiskFullError, TrainingError
from llm_trainer.progress import EtaClock
from llm_trainer.store.checkpoints import prune_checkpoints, step_dir_name
from llm_trainer.training.callbacks import (
    AnomalyGuard,
    Callback,
    CallbackList,
    EarlyStopping,
    InjectedAnomaly,
    StepStats,
)
from llm_trainer.training.events import (
    CheckpointSaved,
    DatasetInfo,
    EvalDone,
    Progress,
    StartInfo,
)
from llm_trainer.training.optim import clear_state, load_optimizer
from llm_trainer.training.parts import TrainingJob, TrainingParts, build_parts


@dataclass
class TrainingResult:
    status: str  # "completed" | "paused"
    step: int
    total_steps: int
    epoch: float
    val_loss: float | None
    best_val_loss: float | None
    checkpoint: Path | None
    reason: str


@dataclass
class Control:
    """Requests callbacks make of the loop; the trainer acts on them at step boundaries."""

    finish_reason: str | None = None  # end the run as completed (early stop, target reached)
    anomaly: str | None = None  # what went wrong in this step

    def finish(self, reason: str) -> None:
        self.finish_reason = self.finish_reason or reason


@dataclass(frozen=True)
class GoodCheckpoint:
    """Where a rollback returns to."""

    path: Path
    step: int
    with_optimizer: bool


def train(job: TrainingJob, callbacks: list[Callback] | tuple = ()) -> TrainingResult:
    """Build the parts of ``job`` and train them to the end of the plan (or a stop)."""
    cbs = CallbackList(list(callbacks))
    parts = None
    try:
        parts = build_parts(job, log=cbs.on_log)  # set-up lines reach the run's log
        return Trainer(parts, cbs).fit()
    except BaseException:
        if parts is None:  # the trainer never ran: the callbacks still hear the end
            with contextlib.suppress(Exception):
                cbs.on_end(None, None)
        raise
    finally:
        if parts is not None:
            parts.dist.shutdown()


class Trainer:
    """The loop, evaluation, checkpoints and anomaly handling over built ``TrainingParts``."""

    def __init__(self, parts: TrainingParts,
                 callbacks: CallbackList | list[Callback] | tuple = ()) -> None:
        self.parts = parts
        self.job = parts.job
        self.cfg = parts.config
        t = self.cfg.train
        self.control = Control()
        self.guard = AnomalyGuard(t, warmup_steps=parts.state.schedule.origin + t.warmup_steps,
                                  gradients_may_overflow=parts.scaler is not None)
        built: list[Callback] = [self.guard]
        if t.early_stop_patience:
            built.append(EarlyStopping(t.early_stop_patience, t.early_stop_min_delta))
        extra = list(callbacks) if parts.dist.is_main else []  # rank 0 reports
        self.callbacks = CallbackList(built + extra)
        self.callbacks.load_state_dict(parts.state.callbacks)
        start = parts.start
        self.last_good: GoodCheckpoint | None = GoodCheckpoint(
            start.path, parts.state.step, with_optimizer=self.job.resumes) if start else None
        self.last_saved: Path | None = None
        self.last_saved_step = -1
        self.eta = EtaClock()
        self.train_time = 0.0
        self.inject = InjectedAnomaly.from_env()
        self.injected = 0

    # ================================================================ public
    def fit(self) -> TrainingResult:
        result = None
        try:
            self.announce()
            self.seed()
            result = self.loop()
            return result
        finally:
            with contextlib.suppress(Exception):
                self.callbacks.on_end(self, result)

    def log(self, message: str) -> None:
        self.callbacks.on_log(message)

    @property
    def total_steps(self) -> int:
        return self.parts.total_steps

    # ================================================================ the loop
    def loop(self) -> TrainingResult:
        p, s, t = self.parts, self.parts.state, self.cfg.train
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        self.window_tokens = 0
        while s.step < p.total_steps:
            t0 = time.perf_counter()
            stats = p.train_step(read=p.on_cpu or (s.step + 1) % t.log_interval == 0,
                                 loss_factor=self.injected_factor(s.step + 1))
            step_s = time.perf_counter() - t0
            self.eta.add_step(step_s)
            self.train_time += step_s
            window_loss = window_loss + (stats.loss if stats.loss is not None else p.last_loss)
            window_steps += 1
            self.window_tokens += stats.tokens
            self.control.anomaly = self.guard.check(stats)
            done = s.step >= p.total_steps
            if s.step % t.log_interval == 0 or done:
                self.report_progress(stats, window_loss, window_steps, window_start)
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
                self.window_tokens = 0
            # decisions that end or rewind the loop are taken by every rank together
            stop, anomaly = p.dist.any([self.stop_requested(),
                                        self.control.anomaly is not None], p.device.device)
            if anomaly:
                self.handle_anomaly(self.control.anomaly or "an anomaly on another rank")
                continue
            pause_start = time.perf_counter()
            self.callbacks.on_step_end(self, stats)  # samples
            evaluated = False
            if t.eval_interval and s.step % t.eval_interval == 0 and not done:
                self.run_eval()
                evaluated = True
                s.finished = self.control.finish_reason  # saved with the checkpoint below
            saved = False
            if self.checkpoint_due(evaluated) and not done:
                self.save()
                saved = True
            pause_s = time.perf_counter() - pause_start
            if evaluated or saved or pause_s > 0.005:
                self.eta.add_pause(pause_s)
                window_start += pause_s
            if stop:
                return self.finish("paused", "stop requested")
            if self.control.finish_reason:
                return self.finish("completed", self.control.finish_reason)
        return self.finish("completed", "reached the planned steps")

    def injected_factor(self, step: int) -> float | None:
        """The test hook's loss factor for this step (``InjectedAnomaly``), or None."""
        inject = self.inject
        if inject is None:
            return None
        if step == inject.step and self.injected < inject.count:
            self.injected += 1
            return inject.factor()
        return 1.0

    # ================================================================ events
    def announce(self) -> None:
        p, cfg, s, shape, plan = self.parts, self.cfg, self.parts.state, self.parts.shape, \
            self.parts.plan
        n_params = p.model.num_params(non_embedding=False)
        data = p.data
        self.callbacks.on_start(self, StartInfo(
            device=p.device.to_json(), precision=p.precision.name, parameters=n_params,
            architecture=shape.to_json(),
            tokenizer={"kind": data.tokenizer.kind, "vocab_size": data.tokenizer.vocab_size},
            dataset=DatasetInfo(spec=data.source.spec, fingerprint=data.source.fingerprint,
                                train_tokens=len(data.train), val_tokens=len(data.val),
                                hold_out=data.hold_out, separator=data.tokenizer.eot_id,
                                cache=str(data.cache_dir), shards=data.train.shards),
            steps_per_epoch=plan.steps_per_epoch, tokens_per_step=plan.tokens_per_step,
            global_batch=plan.seqs_per_step, world_size=p.dist.world_size,
            start_step=s.step, total_steps=p.total_steps, optimizer=p.optimizer_kind,
            compiled=p.compiled, config=cfg.to_dict(), startup_s=time.time() - p.started_at))
        self.log(
            f"model: {n_params / 1e6:.2f}M parameters ({shape.n_layer} layers, {shape.n_head} "
            f"heads, {shape.n_embd} dims, context {shape.block_size}); {plan.steps_per_epoch:,} "
            f"steps per epoch of {plan.tokens_per_step:,} tokens; training steps {s.step:,} -> "
            f"{p.total_steps:,}")
        ft = cfg.finetune
        if ft.lora_r or ft.freeze_layers:
            from llm_trainer.model.lora import trainable

            n_train, n_all = trainable(p.model)
            how = (f"LoRA r={ft.lora_r} alpha={ft.lora_alpha:g} on {', '.join(ft.lora_targets)}"
                   if ft.lora_r else f"embeddings and the first {ft.freeze_layers} blocks "
                                     f"frozen")
            self.log(f"fine-tuning: {n_train:,} of {n_all:,} parameters trainable "
                     f"({n_train / n_all:.2%}); {how}")
        if p.dist.enabled:
            backend = "nccl" if p.device.type == "cuda" else "gloo"
            self.log(f"data parallel: {p.dist.world_size} processes ({backend}); global batch "
                     f"{plan.seqs_per_step} sequences = micro-batch {plan.batch_size} x "
                     f"accumulation {plan.grad_accum} x {p.dist.world_size} processes")
        if s.finished:
            self.log(f"note: this checkpoint's plan already ended ({s.finished})")

    def seed(self) -> None:
        """A resume continues the checkpoint's random streams; a multi-process run gives each
        rank its own dropout (the weights are the same everywhere: DDP broadcasts them)."""
        p = self.parts
        if p.start is not None and self.job.resumes:
            from llm_trainer.checkpoint_io import load_rng_state, restore_rng

            restore_rng(load_rng_state(p.start), rank=p.dist.rank,
                        world_size=p.dist.world_size)
        elif p.dist.enabled:
            p.torch.manual_seed(self.cfg.train.seed + 1000 * p.dist.rank)

    def report_progress(self, stats: StepStats, window_loss, window_steps: int,
                        window_start: float) -> None:
        p, s, t = self.parts, self.parts.state, self.cfg.train
        mean_loss = p.dist.mean(float(window_loss) / window_steps, p.device.device)
        now = time.perf_counter()
        remaining = p.total_steps - s.step
        pauses = (remaining // t.eval_interval if t.eval_interval else 0) + 1 + (
            remaining // t.sample_interval if t.sample_interval else 0)
        est = self.eta.estimate(remaining_steps=remaining, remaining_pauses=pauses)
        self.callbacks.on_progress(self, Progress(
            step=s.step, total_steps=p.total_steps, epoch=p.epoch, loss=mean_loss,
            lr=stats.lr, grad_norm=stats.grad_norm,
            tokens_per_s=self.trained_tokens(window_steps) / max(1e-9, now - window_start),
            train_time_s=self.train_time, elapsed_s=est.elapsed_s,
            eta_seconds=est.remaining_s, finish_at=est.finish_at, step_time_s=est.step_time_s))

    def trained_tokens(self, steps: int) -> int:
        """Target tokens of the last ``steps`` steps, all processes: every window position
        of text, only the trained ones of chat data (each step's, every process's, counted
        from the mask: ``Batches.step_targets``)."""
        p = self.parts
        if p.data.chat is None:
            return steps * p.plan.tokens_per_step
        return self.window_tokens

    def run_eval(self, final: bool = False) -> float:
        p, s = self.parts, self.parts.state
        t0 = time.perf_counter()
        val = p.evaluate()
        if not math.isfinite(val):  # the same on every rank: the weights are the same
            if final:
                raise self.diverged(f"the val loss became {val}")
            self.handle_anomaly(f"the val loss became {val}")
            return val
        s.record_eval(val)
        self.callbacks.on_eval(self, EvalDone(
            step=s.step, epoch=p.epoch, val_loss=val, perplexity=math.exp(min(val, 50.0)),
            best_val_loss=s.best_val_loss, seconds=time.perf_counter() - t0))
        target = self.cfg.train.target_val_loss
        if target is not None and val <= target:
            self.control.finish(f"reached the target val loss {target:g}")
        if self.control.finish_reason is not None or p.dist.enabled:
            finish, = p.dist.any([self.control.finish_reason is not None], p.device.device)
            if finish:
                self.control.finish(self.control.finish_reason or "another rank finished")
        return val

    def checkpoint_due(self, evaluated: bool) -> bool:
        every = self.cfg.train.checkpoint_interval
        return bool(every and self.parts.state.step % every == 0) or (not every and evaluated)

    def finish(self, status: str, reason: str) -> TrainingResult:
        p, s = self.parts, self.parts.state
        if status == "completed":
            if s.step < p.total_steps:
                s.finished = reason
            if s.last_eval_step != s.step:
                self.run_eval(final=True)
        current_val = s.val_loss if s.last_eval_step == s.step else None  # of these weights
        if self.last_saved_step != s.step:
            self.save()
        return TrainingResult(status=status, step=s.step, total_steps=p.total_steps,
                              epoch=p.epoch, val_loss=current_val,
                              best_val_loss=s.best_val_loss, checkpoint=self.last_saved,
                              reason=reason)

    def stop_requested(self) -> bool:
        return self.job.stop is not None and self.job.stop.is_set()

    # ================================================================ anomalies
    def handle_anomaly(self, reason: str) -> None:
        """Record the anomaly, then roll back or end the run as the guard decides."""
        s = self.parts.state
        self.control.anomaly = None
        event = self.guard.decide(s.step, reason, can_rollback=self.last_good is not None)
        self.callbacks.on_anomaly(self, event)
        if event.action == "rollback":
            self.rollback()
            return
        if event.action == "exhausted":
            raise TrainingError(
                f"training failed at step {s.step}: {reason}, after {self.guard.rollbacks} "
                f"rollbacks (train.max_rollbacks); {self._where()}",
                hint="lower --lr, raise train.warmup_steps, or check the data near this step")
        raise self.diverged(reason)

    def _where(self) -> str:
        return (f"the last good checkpoint ({self.last_good.path.name}) is intact"
                if self.last_good else "no checkpoint was written in this run")

    def diverged(self, reason: str) -> TrainingError:
        return TrainingError(f"training diverged: {reason} at step {self.parts.state.step}; "
                             f"{self._where()}",
                             hint="lower --lr, raise train.warmup_steps, or use --precision fp32")

    def rollback(self) -> None:
        """Back to the last good checkpoint's weights and optimizer with a lower peak LR; the
        data position stays where it is, so the batches that caused the anomaly are skipped."""
        from llm_trainer.checkpoint_io import load_optimizer_state, load_weights, read_checkpoint

        p, s, good = self.parts, self.parts.state, self.last_good
        load_weights(p.model, good.path, p.device.device)
        if good.with_optimizer:
            load_optimizer(p.optimizer, load_optimizer_state(read_checkpoint(
                good.path, verify=False), p.device.device), where=good.path.name)
        else:
            clear_state(p.optimizer)
        p.optimizer.zero_grad(set_to_none=True)
        factor = self.cfg.train.rollback_lr_factor
        s.schedule = dataclasses.replace(s.schedule, max_lr=s.schedule.max_lr * factor,
                                         min_lr=s.schedule.min_lr * factor)
        skipped = s.step - good.step
        s.step = good.step
        self.log(f"rolled back to {good.path.name} (step {good.step}); peak lr now "
                 f"{s.schedule.max_lr:.2e}; continuing past the {skipped} batches since it")

    # ================================================================ checkpoints
    def trainer_json(self) -> dict[str, Any]:
        p = self.parts
        p.state.callbacks = self.callbacks.state_dict()
        plan = p.plan
        return {
            **p.state.state_dict(), "epoch": p.epoch,
            "scaler": p.scaler.state_dict() if p.scaler is not None else None,
            "plan": {"n_tokens": plan.n_tokens, "seq_len": plan.seq_len,
                     "batch_size": plan.batch_size, "grad_accum": plan.grad_accum,
                     "world_size": plan.world_size, "seed": plan.seed,
                     "steps_per_epoch": plan.steps_per_epoch},
            "dataset": {"spec": p.data.source.spec, "fingerprint": p.data.source.fingerprint},
            "run_id": self.job.run_id, "optimizer": p.optimizer_kind,
            "device": p.device.to_json(), "precision": p.precision.name,
            "world_size": p.dist.world_size, **self.job.extra_state,
        }

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint; every rank takes part (its RNG state is gathered)."""
        from llm_trainer.checkpoint_io import capture_rng, save_checkpoint

        p, s = self.parts, self.parts.state
        t0 = time.perf_counter()
        val = s.val_loss if s.last_eval_step == s.step else None
        rng_states = p.dist.gather(capture_rng())
        self.last_saved_step = s.step
        path = self.job.model_dir / step_dir_name(s.step)
        previous, self.last_good = self.last_good, GoodCheckpoint(path, s.step,
                                                                  with_optimizer=True)
        if not p.dist.is_main:
            return None
        try:
            path = save_checkpoint(self.job.model_dir, model=p.model, optimizer=p.optimizer,
                                   trainer_state=self.trainer_json(), config=self.cfg,
                                   shape=p.shape, tokenizer=p.tokenizer, step=s.step,
                                   epoch=p.epoch, val_loss=val, rng=rng_states, chat=p.chat)
        except DiskFullError as exc:
            kept = (f"the previous checkpoint step {previous.step} is intact" if previous
                    else "no earlier checkpoint was saved")
            raise DiskFullError(f"{exc}; {kept}", hint="free some disk space, then continue "
                                f"with `llm-trainer resume {self.job.model_dir.name}`"
                                if previous else exc.hint) from exc
        prune_checkpoints(self.job.model_dir, keep_last=self.cfg.train.keep_last,
                          keep_every=self.cfg.train.keep_every)
        self.last_saved = path
        self.callbacks.on_checkpoint(self, CheckpointSaved(
            path=str(path), step=s.step, epoch=p.epoch, val_loss=val,
            best_val_loss=s.best_val_loss, seconds=time.perf_counter() - t0))
        return path
