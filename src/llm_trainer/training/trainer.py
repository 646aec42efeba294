"""The training loop: ``Trainer(job, callbacks).fit()`` is the only place that trains.

``fit`` sets up (device, data, model, optimizer, ``TrainState``), then repeats
``train_step`` -> anomaly check -> progress -> evaluation -> checkpoint until the plan, a stop
request or a callback ends it. Everything that must survive a resume is in ``TrainState``
(``trainer.json``). Side jobs are callbacks (``training.callbacks``): the run reporter, early
stopping, samples, TensorBoard and the anomaly guard.

The step is kept lean (it is most of the wall time on a CPU): batches come from a
memory-mapped token array with one fancy-index, the loss stays on the device except at log
intervals (every step on a CPU, where reading it is free and catches NaN at once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.config import ARCH_KEYS, RunConfig
from llm_trainer.errors import TrainingError, UsageError
from llm_trainer.progress import EtaClock
from llm_trainer.store.checkpoints import prune_checkpoints, step_dir_name
from llm_trainer.training.callbacks import (
    AnomalyGuard,
    Callback,
    CallbackList,
    EarlyStopping,
    InjectedAnomaly,
    Sampler,
    StepStats,
)
from llm_trainer.training.optim import build_optimizer, clear_state, load_optimizer
from llm_trainer.training.state import TrainState

RESUME = "resume"  # restore everything: optimizer, schedule, RNG, data position, callbacks
CONTINUE = "continue"  # weights and tokenizer only: new data, fresh optimizer and schedule
IMPORT = "import"  # weights from a Hugging Face folder or our checkpoint (--init-from), step 0


@dataclass
class InitFrom:
    checkpoint: Path
    mode: str = RESUME
    more_epochs: int | None = None
    restart_schedule: bool = False


@dataclass
class TrainingJob:
    config: RunConfig
    home: Path
    model_dir: Path
    run_id: str = "adhoc"
    init: InitFrom | None = None
    dataset_explicit: bool = True
    stop: Any = None  # anything with is_set(); None: never stops early
    extra_state: dict[str, Any] = field(default_factory=dict)  # stored in trainer.json


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


def architecture_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two GPTShape dicts; a key missing (a checkpoint older than the
    option) means GPTShape's default, and rope_theta counts only where rope is used."""
    from dataclasses import MISSING, fields

    from llm_trainer.model.gpt import GPTShape

    defaults = {f.name: f.default for f in fields(GPTShape) if f.default is not MISSING}
    a, b = {**defaults, **a}, {**defaults, **b}
    keys = ["vocab_size", *(k for k in ARCH_KEYS
                            if k != "rope_theta" or "rope" in (a["pos"], b["pos"]))]
    return [f"{k} {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k)]


def want_compile(setting: str, device_type: str) -> bool:
    """auto: only on CUDA, where it pays off; on CPU it costs ~70 s to compile a small model
    and was not faster (measured)."""
    if setting == "true":
        return True
    if setting == "false":
        return False
    return device_type == "cuda"


def _autocast(torch, device_type: str, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def _grad_norm(torch, params) -> Any:
    """Total L2 norm of the gradients (a 0-d tensor), for when nothing clips."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class Trainer:
    def __init__(self, job: TrainingJob, callbacks: list[Callback] | tuple = ()) -> None:
        self.job = job
        self.cfg = job.config
        self.extra_callbacks = list(callbacks)
        self.control = Control()
        self.callbacks = CallbackList([])
        self.dist = None
        self.last_good: GoodCheckpoint | None = None
        self.last_saved: Path | None = None
        self.last_saved_step = -1

    # ================================================================ public
    def fit(self) -> TrainingResult:
        result = None
        try:
            self.setup()
            result = self.loop()
            return result
        finally:
            with contextlib.suppress(Exception):
                self.callbacks.on_end(self, result)
            if self.dist is not None:
                self.dist.shutdown()

    def log(self, message: str) -> None:
        self.callbacks.on_log(message)

    # ================================================================ the loop
    def loop(self) -> TrainingResult:
        s, t = self.state, self.cfg.train
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        while s.step < self.total_steps:
            t0 = time.perf_counter()
            stats = self.train_step(read=self.on_cpu or (s.step + 1) % t.log_interval == 0)
            self.eta.add_step(time.perf_counter() - t0)
            self.train_time += time.perf_counter() - t0
            window_loss = window_loss + (stats.loss if stats.loss is not None else self._loss_t)
            window_steps += 1
            self.control.anomaly = self.guard.check(stats)
            done = s.step >= self.total_steps
            if s.step % t.log_interval == 0 or done:
                self.report_progress(stats, window_loss, window_steps, window_start)
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            # decisions that end or rewind the loop are taken by every rank together
            stop, anomaly = self.dist.any([self.stop_requested(),
                                           self.control.anomaly is not None], self.device.device)
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
            if evaluated or saved or time.perf_counter() - pause_start > 0.005:
                self.eta.add_pause(time.perf_counter() - pause_start)
                window_start += time.perf_counter() - pause_start
            if stop:
                return self.finish("paused", "stop requested")
            if self.control.finish_reason:
                return self.finish("completed", self.control.finish_reason)
        return self.finish("completed", "reached the planned steps")

    def train_step(self, read: bool) -> StepStats:
        """One optimizer step over ``grad_accum`` micro-batches (DDP syncs on the last)."""
        torch, s = self._torch, self.state
        lr = s.schedule(s.step)
        for group in self.optimizer.param_groups:  # each at its own peak (optim.py)
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss = 0.0
        for micro in range(self.accum):
            xb, yb = self.batches.get(s.position, micro)
            sync = self.no_sync() if self.no_sync and micro < self.accum - 1 else \
                contextlib.nullcontext()
            with sync:
                with self.autocast:
                    _, micro_loss = self.train_model(self.to_device(xb), self.to_device(yb))
                if self.inject_factor is not None and micro == 0:
                    micro_loss = micro_loss * self.inject_factor(s.step + 1)
                if self.accum > 1:
                    micro_loss = micro_loss / self.accum
                if self.scaler is not None:
                    self.scaler.scale(micro_loss).backward()
                else:
                    micro_loss.backward()
            loss = loss + micro_loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True) if clip \
            else _grad_norm(torch, self.params)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        s.position.advance(self.plan)
        s.step += 1
        self._loss_t = loss
        return StepStats(step=s.step, lr=lr, loss=float(loss) if read else None,
                         grad_norm=float(norm) if read else None)

    # ================================================================ events
    def report_progress(self, stats: StepStats, window_loss, window_steps: int,
                        window_start: float) -> None:
        s, t = self.state, self.cfg.train
        mean_loss = self.dist.mean(float(window_loss) / window_steps, self.device.device)
        now = time.perf_counter()
        remaining = self.total_steps - s.step
        pauses = (remaining // t.eval_interval if t.eval_interval else 0) + 1 + (
            remaining // t.sample_interval if t.sample_interval else 0)
        est = self.eta.estimate(remaining_steps=remaining, remaining_pauses=pauses)
        self.callbacks.on_progress(self, {
            "step": s.step, "total_steps": self.total_steps, "epoch": self.epoch,
            "loss": mean_loss, "lr": stats.lr, "grad_norm": stats.grad_norm,
            "tokens_per_s": window_steps * self.plan.tokens_per_step / max(1e-9,
                                                                          now - window_start),
            "train_time_s": self.train_time, **est.to_json(),
        })

    def run_eval(self, final: bool = False) -> float:
        s = self.state
        t0 = time.perf_counter()
        val = self.evaluate()
        if not math.isfinite(val):  # the same on every rank: the weights are the same
            if final:
                raise self.diverged(f"the val loss became {val}")
            self.handle_anomaly(f"the val loss became {val}")
            return val
        s.record_eval(val)
        self.callbacks.on_eval(self, {
            "step": s.step, "epoch": self.epoch, "val_loss": val,
            "perplexity": math.exp(min(val, 50.0)), "best_val_loss": s.best_val_loss,
            "seconds": time.perf_counter() - t0})
        target = self.cfg.train.target_val_loss
        if target is not None and val <= target:
            self.control.finish(f"reached the target val loss {target:g}")
        if self.control.finish_reason is not None or self.dist.enabled:
            finish, = self.dist.any([self.control.finish_reason is not None],
                                    self.device.device)
            if finish:
                self.control.finish(self.control.finish_reason or "another rank finished")
        return val

    def evaluate(self) -> float:
        torch = self._torch
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), self.autocast:
            for xb, yb in self.val_batches:
                _, loss = self.model(self.to_device(xb), self.to_device(yb))
                total += float(loss) * len(xb)
                count += len(xb)
        self.model.train()
        return total / max(1, count)

    def checkpoint_due(self, evaluated: bool) -> bool:
        every = self.cfg.train.checkpoint_interval
        return bool(every and self.state.step % every == 0) or (not every and evaluated)

    def finish(self, status: str, reason: str) -> TrainingResult:
        s = self.state
        if status == "completed":
            if s.step < self.total_steps:
                s.finished = reason
            if s.last_eval_step != s.step:
                self.run_eval(final=True)
        current_val = s.val_loss if s.last_eval_step == s.step else None  # of these weights
        if self.last_saved_step != s.step:
            self.save()
        return TrainingResult(status=status, step=s.step, total_steps=self.total_steps,
                              epoch=self.epoch, val_loss=current_val,
                              best_val_loss=s.best_val_loss, checkpoint=self.last_saved,
                              reason=reason)

    # ================================================================ anomalies
    def handle_anomaly(self, reason: str) -> None:
        """Record the anomaly, then roll back or end the run as the guard decides."""
        s = self.state
        self.control.anomaly = None
        event = self.guard.decide(s.step, reason, can_rollback=self.last_good is not None)
        self.callbacks.on_anomaly(self, event)
        if event["action"] == "rollback":
            self.rollback()
            return
        if event["action"] == "exhausted":
            raise TrainingError(
                f"training failed at step {s.step}: {reason}, after {self.guard.rollbacks} "
                f"rollbacks (train.max_rollbacks); {self._where()}",
                hint="lower --lr, raise train.warmup_steps, or check the data near this step")
        raise self.diverged(reason)

    def _where(self) -> str:
        return (f"the last good checkpoint ({self.last_good.path.name}) is intact"
                if self.last_good else "no checkpoint was written in this run")

    def diverged(self, reason: str) -> TrainingError:
        return TrainingError(f"training diverged: {reason} at step {self.state.step}; "
                             f"{self._where()}",
                             hint="lower --lr, raise train.warmup_steps, or use --precision fp32")

    def rollback(self) -> None:
        """Back to the last good checkpoint's weights and optimizer with a lower peak LR; the
        data position stays where it is, so the batches that caused the anomaly are skipped."""
        from llm_trainer.checkpoint_io import load_weights, read_checkpoint

        s, good = self.state, self.last_good
        load_weights(self.model, good.path, self.device.device)
        if good.with_optimizer:
            from llm_trainer.checkpoint_io import load_optimizer_state

            load_optimizer(self.optimizer, load_optimizer_state(read_checkpoint(
                good.path, verify=False), self.device.device), where=good.path.name)
        else:
            clear_state(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        factor = self.cfg.train.rollback_lr_factor
        s.schedule = dataclasses.replace(s.schedule, max_lr=s.schedule.max_lr * factor,
                                         min_lr=s.schedule.min_lr * factor)
        skipped = s.step - good.step
        s.step = good.step
        self.log(f"rolled back to {good.path.name} (step {good.step}); peak lr now "
                 f"{s.schedule.max_lr:.2e}; continuing past the {skipped} batches since it")

    # ================================================================ checkpoints
    def trainer_json(self) -> dict[str, Any]:
        self.state.callbacks = self.callbacks.state_dict()
        plan = self.plan
        return {
            **self.state.state_dict(), "epoch": self.epoch,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "plan": {"n_tokens": plan.n_tokens, "seq_len": plan.seq_len,
                     "batch_size": plan.batch_size, "grad_accum": plan.grad_accum,
                     "world_size": plan.world_size, "seed": plan.seed,
                     "steps_per_epoch": plan.steps_per_epoch},
            "dataset": {"spec": self.data.source.spec,
                        "fingerprint": self.data.source.fingerprint},
            "run_id": self.job.run_id, "optimizer": self.optimizer_kind,
            "device": self.device.to_json(), "precision": self.precision.name,
            "world_size": self.dist.world_size, **self.job.extra_state,
        }

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint; every rank takes part (its RNG state is gathered)."""
        from llm_trainer.checkpoint_io import capture_rng, save_checkpoint

        s = self.state
        t0 = time.perf_counter()
        val = s.val_loss if s.last_eval_step == s.step else None
        rng_states = self.dist.gather(capture_rng())
        self.last_saved_step = s.step
        path = self.job.model_dir / step_dir_name(s.step)
        self.last_good = GoodCheckpoint(path, s.step, with_optimizer=True)
        if not self.dist.is_main:
            return None
        path = save_checkpoint(self.job.model_dir, model=self.model, optimizer=self.optimizer,
                               trainer_state=self.trainer_json(), config=self.cfg,
                               shape=self.shape, tokenizer=self.data.tokenizer, step=s.step,
                               epoch=self.epoch, val_loss=val, rng=rng_states)
        prune_checkpoints(self.job.model_dir, keep_last=self.cfg.train.keep_last,
                          keep_every=self.cfg.train.keep_every)
        self.last_saved = path
        self.callbacks.on_checkpoint(self, {
            "path": str(path), "step": s.step, "epoch": self.epoch, "val_loss": val,
            "best_val_loss": s.best_val_loss, "seconds": time.perf_counter() - t0})
        return path

    # ================================================================ helpers
    @property
    def epoch(self) -> float:
        return self.state.position.epochs_done(self.plan)

    def stop_requested(self) -> bool:
        return self.job.stop is not None and self.job.stop.is_set()

    def to_device(self, a):
        t = self._torch.from_numpy(a)
        if self.non_blocking:
            t = t.pin_memory()
        return t.to(self.device.device, non_blocking=self.non_blocking)

    # ================================================================ setup
    def setup(self) -> None:
        ckpt = self.setup_core()
        torch, cfg = self._torch, self.cfg
        self.setup_callbacks(ckpt)
        self.announce()
        if ckpt is not None and self.job.init.mode == RESUME:
            from llm_trainer.checkpoint_io import load_rng_state, restore_rng

            restore_rng(load_rng_state(ckpt), rank=self.dist.rank,
                        world_size=self.dist.world_size)
        elif self.dist.enabled:  # same weights everywhere (DDP broadcasts them); own dropout
            torch.manual_seed(cfg.train.seed + 1000 * self.dist.rank)
        self.eta = EtaClock()
        inject = InjectedAnomaly.from_env()
        if inject is not None:
            fired = {"n": 0}

            def factor(step: int) -> float:
                if step == inject.step and fired["n"] < inject.count:
                    fired["n"] += 1
                    return inject.factor()
                return 1.0

            self.inject_factor = factor

    def setup_core(self):
        """Device, data, model, optimizer and state: all a training step needs (the dry-run
        estimate stops here). Returns the starting checkpoint (or None)."""
        import torch

        from llm_trainer.training.distributed import DistContext, cpu_threads_per_process

        self._torch = torch
        self.t_start = time.time()
        cfg = self.cfg
        self.dist = DistContext.from_env()
        # callbacks first, so that set-up messages reach the run log
        self.callbacks = CallbackList(self.extra_callbacks if self.dist.is_main else [])
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        elif self.dist.enabled:
            torch.set_num_threads(cpu_threads_per_process(self.dist.local_world_size))
        self.setup_device()
        ckpt = self.setup_data()
        self.setup_model(ckpt)
        self.setup_state(ckpt)
        self.train_time = 0.0
        self._loss_t = 0.0
        self.inject_factor = None
        return ckpt

    def setup_device(self) -> None:
        from llm_trainer.training.device import probe_devices, select_device, select_precision

        cfg, dist = self.cfg, self.dist
        probe = probe_devices()
        device = select_device(cfg.runtime.device, probe, strict=cfg.runtime.strict_device)
        if dist.enabled and device.type == "cuda":  # one GPU per process
            device = dataclasses.replace(device, device=f"cuda:{dist.local_rank}",
                                         name=probe.cuda_names[dist.local_rank %
                                                               probe.cuda_count])
        self.device = device
        self.precision = select_precision(cfg.runtime.precision, device, probe)
        dist.init(device.type, cfg.runtime.dist_timeout)
        for warning in (device.warning, self.precision.warning):
            if warning:
                self.log(f"warning: {warning}")
        self.log(f"device: requested {device.requested}, using {device.device} ({device.name}); "
                 f"precision {self.precision.name}")
        self.on_cpu = device.type == "cpu"
        self.non_blocking = device.type == "cuda"
        self.autocast = _autocast(self._torch, device.type, self.precision.name)

    def setup_data(self):
        """Read the starting checkpoint's metadata, then the data (tokenized with its
        tokenizer when there is one). Returns the checkpoint (or None)."""
        from llm_trainer.checkpoint_io import read_checkpoint
        from llm_trainer.data.batches import Batches, BatchPlan, eval_windows
        from llm_trainer.data.prepare import prepare_data

        cfg, dist, job = self.cfg, self.dist, self.job
        ckpt = None
        if job.init is not None and job.init.mode == IMPORT:
            self.log(f"importing the weights of {job.init.checkpoint}")
        elif job.init is not None:
            ckpt = read_checkpoint(job.init.checkpoint)
            self.log(f"starting from checkpoint {ckpt.path} (step {ckpt.info.step})")
        # rank 0 downloads / tokenizes into the cache first; the others then read the cache
        if not dist.is_main:
            dist.barrier()
        data = prepare_data(
            dataset=cfg.data.dataset, tokenizer_spec=cfg.data.tokenizer,
            vocab_size=cfg.data.vocab_size, val_fraction=cfg.data.val_fraction,
            text_column=cfg.data.text_column, data_dir=job.home / "data",
            explicit=job.dataset_explicit, tokenizer=ckpt.tokenizer if ckpt else None,
            log=self.log)
        if dist.is_main:
            dist.barrier()
        self.log(f"data: {data.summary}")
        if data.source.spec != cfg.data.dataset:  # e.g. the offline fallback: record it
            self.cfg = cfg = cfg.replace(**{"data.dataset": data.source.spec})
        self.data, self.tokenizer = data, data.tokenizer
        self.plan = BatchPlan(n_tokens=len(data.train), seq_len=cfg.model.block_size,
                              batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum,
                              world_size=dist.world_size, seed=cfg.train.seed)
        self.plan.check()
        self.batches = Batches(data.train, self.plan, rank=dist.rank)
        self.val_batches = list(eval_windows(data.val, cfg.model.block_size,
                                             cfg.train.batch_size, cfg.train.eval_batches))
        self.accum = self.plan.grad_accum
        return ckpt

    def setup_model(self, ckpt) -> None:
        torch = self._torch
        from llm_trainer.checkpoint_io import load_model
        from llm_trainer.model.gpt import GPT, GPTShape

        cfg, dist, device = self.cfg, self.dist, self.device
        source = self.import_source()
        # the embedding may have more rows than the tokenizer has tokens (padded imports)
        vocab = ckpt.shape.vocab_size if ckpt is not None else (
            source.vocab_size if source else self.tokenizer.vocab_size)
        shape = GPTShape(vocab_size=vocab, dropout=cfg.model.dropout,
                         **{k: getattr(cfg.model, k) for k in ARCH_KEYS})
        if ckpt is not None:
            diff = architecture_diff(ckpt.shape.__dict__, shape.__dict__)
            if diff:
                raise UsageError(
                    f"checkpoint {ckpt.path.name} has a different architecture: "
                    f"{'; '.join(diff)} (checkpoint vs requested)",
                    hint="resume with the model's own settings (drop the model.* overrides)")
        self.shape = shape
        torch.manual_seed(cfg.train.seed)
        if ckpt is not None:
            self.model = load_model(ckpt, device.device, merged=False)
        else:
            self.model = GPT(shape)
            if source is not None:
                self.import_weights(source)
            self.model.to(device.device)
        self.setup_finetune()
        self.model.train()
        self.optimizer, self.optimizer_kind = build_optimizer(self.model, cfg, device.type,
                                                              self.precision.name)
        self.log(f"optimizer: {self.optimizer_kind}")
        self.scaler = torch.amp.GradScaler(device.type, enabled=True) \
            if self.precision.use_scaler else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.train_model = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
        self.compiled = False
        if want_compile(cfg.train.compile, device.type):
            try:
                self.train_model = torch.compile(self.train_model)
                self.compiled = True
            except Exception as exc:  # no compiler toolchain, unsupported platform
                self.log(f"warning: torch.compile unavailable ({exc}); running eagerly")
        self.no_sync = getattr(self.train_model, "no_sync", None) if dist.enabled else None

    def import_source(self):
        """The checked source of an ``--init-from`` run (None otherwise): a Hugging Face
        folder or a checkpoint of this trainer."""
        from llm_trainer.model.hf_import import inspect_source

        init = self.job.init
        if init is None or init.mode != IMPORT:
            return None
        return inspect_source(Path(init.checkpoint))

    def import_weights(self, source) -> None:
        from llm_trainer.model.hf_import import OWN, check_complete, load_hf_weights

        if source.family == OWN:
            from llm_trainer.checkpoint_io import weights_for_import

            sd = weights_for_import(source.path, self.shape.block_size)
        else:
            sd = load_hf_weights(source, self.shape.block_size)
        check_complete(sd, self.model.state_dict(), source)
        self.model.load_state_dict(sd, strict=True)
        if self.cfg.finetune.lora_r and self.dist.is_main:
            from llm_trainer.checkpoint_io import save_base

            path = save_base(self.job.model_dir, model=self.model, config=self.cfg,
                             shape=self.shape, tokenizer=self.tokenizer,
                             source=self.cfg.finetune.init_from or source.spec)
            self.log(f"base weights for the LoRA adapters: {path}")

    def setup_finetune(self) -> None:
        """LoRA adapters (a fresh LoRA run; a LoRA checkpoint already has them) and frozen
        layers, before the optimizer sees the parameters."""
        from llm_trainer.model.lora import apply_lora, freeze_layers, is_lora, lora_settings

        ft = self.cfg.finetune
        if ft.lora_r and not is_lora(self.model):
            self.model = apply_lora(self.model, lora_settings(ft))
        if ft.freeze_layers:
            if ft.freeze_layers > self.shape.n_layer:
                raise UsageError(f"finetune.freeze_layers {ft.freeze_layers} exceeds the "
                                 f"model's {self.shape.n_layer} blocks")
            freeze_layers(self.model, ft.freeze_layers)
        if not any(p.requires_grad for p in self.model.parameters()):
            raise UsageError("nothing left to train: every weight is frozen",
                             hint="lower --freeze-layers")

    def setup_state(self, ckpt) -> None:
        """A fresh plan, or the checkpoint's state: all of it for resume; the step count,
        losses and a new schedule for continue; a stretched schedule for --more-epochs."""
        from llm_trainer.checkpoint_io import load_optimizer_state
        from llm_trainer.training.schedule import LRSchedule

        t, job, plan = self.cfg.train, self.job, self.plan
        s = TrainState()
        if ckpt is not None:
            saved = TrainState.from_state_dict(ckpt.trainer)
            s.step, s.val_loss = saved.step, saved.val_loss
            s.best_val_loss, s.best_val_step = saved.best_val_loss, saved.best_val_step
        resume = ckpt is not None and job.init.mode == RESUME
        if resume:
            s.last_eval_step = saved.last_eval_step
            load_optimizer(self.optimizer, load_optimizer_state(ckpt, self.device.device),
                           where=f"checkpoint {ckpt.path.name}")
            if self.scaler is not None and ckpt.trainer.get("scaler"):
                self.scaler.load_state_dict(ckpt.trainer["scaler"])
            s.position, s.callbacks, s.finished = saved.position, saved.callbacks, \
                saved.finished
            old = saved.schedule
            if job.init.more_epochs:
                total = s.step + job.init.more_epochs * plan.steps_per_epoch
                s.finished = None
                s.callbacks.pop(EarlyStopping.name, None)  # more epochs asked: patience anew
                if job.init.restart_schedule:
                    old = LRSchedule(total, t.warmup_steps, t.lr, t.lr * t.min_lr_ratio,
                                     t.lr_schedule, origin=s.step)
                # else the same curve, stretched to the new horizon; warm-up not repeated
                s.schedule = dataclasses.replace(old, total_steps=total)
            else:
                s.schedule = old
        else:
            span = t.max_steps or t.epochs * plan.steps_per_epoch
            s.schedule = LRSchedule(s.step + span, t.warmup_steps, t.lr, t.lr * t.min_lr_ratio,
                                    t.lr_schedule, origin=s.step)
        if s.position.cursor + plan.seqs_per_step > plan.n_windows:
            s.position = dataclasses.replace(s.position, epoch=s.position.epoch + 1, cursor=0)
        self.state = s
        self.total_steps = s.schedule.total_steps
        if ckpt is not None:
            self.last_good = GoodCheckpoint(ckpt.path, s.step, with_optimizer=resume)

    def setup_callbacks(self, ckpt) -> None:
        """The built-in callbacks the config asks for, then the caller's; restore state."""
        t = self.cfg.train
        self.guard = AnomalyGuard(t, warmup_steps=self.state.schedule.origin + t.warmup_steps,
                                  gradients_may_overflow=self.scaler is not None)
        built: list[Callback] = [self.guard]
        if t.early_stop_patience:
            built.append(EarlyStopping(t.early_stop_patience, t.early_stop_min_delta))
        if t.sample_interval and self.dist.is_main:
            built.append(Sampler(t.sample_interval, t.sample_prompts, t.sample_tokens,
                                 t.sample_temperature, t.seed))
        self.callbacks = CallbackList(built + list(self.callbacks))
        self.callbacks.load_state_dict(self.state.callbacks)

    def announce(self) -> None:
        cfg, dist, plan, s, shape = self.cfg, self.dist, self.plan, self.state, self.shape
        n_params = self.model.num_params(non_embedding=False)
        self.callbacks.on_start(self, {
            "device": self.device.to_json(), "precision": self.precision.name,
            "parameters": n_params, "architecture": shape.__dict__,
            "tokenizer": {"kind": self.tokenizer.kind, "vocab_size": self.tokenizer.vocab_size},
            "dataset": {"spec": self.data.source.spec,
                        "fingerprint": self.data.source.fingerprint,
                        "train_tokens": len(self.data.train), "val_tokens": len(self.data.val)},
            "steps_per_epoch": plan.steps_per_epoch, "tokens_per_step": plan.tokens_per_step,
            "global_batch": plan.seqs_per_step, "world_size": dist.world_size,
            "start_step": s.step, "total_steps": self.total_steps,
            "optimizer": self.optimizer_kind, "compiled": self.compiled,
            "config": cfg.to_dict(), "startup_s": time.time() - self.t_start,
        })
        self.log(
            f"model: {n_params / 1e6:.2f}M parameters ({shape.n_layer} layers, {shape.n_head} "
            f"heads, {shape.n_embd} dims, context {shape.block_size}); {plan.steps_per_epoch:,} "
            f"steps per epoch of {plan.tokens_per_step:,} tokens; training steps {s.step:,} -> "
            f"{self.total_steps:,}")
        ft = cfg.finetune
        if ft.lora_r or ft.freeze_layers:
            from llm_trainer.model.lora import trainable

            n_train, n_all = trainable(self.model)
            how = (f"LoRA r={ft.lora_r} alpha={ft.lora_alpha:g} on {', '.join(ft.lora_targets)}"
                   if ft.lora_r else f"embeddings and the first {ft.freeze_layers} blocks "
                                     f"frozen")
            self.log(f"fine-tuning: {n_train:,} of {n_all:,} parameters trainable "
                     f"({n_train / n_all:.2%}); {how}")
        if dist.enabled:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            self.log(f"data parallel: {dist.world_size} processes ({backend}); global batch "
                     f"{plan.seqs_per_step} sequences = micro-batch {plan.batch_size} x "
                     f"accumulation {plan.grad_accum} x {dist.world_size} processes")
        if s.finished:
            self.log(f"note: this checkpoint's plan already ended ({s.finished})")
