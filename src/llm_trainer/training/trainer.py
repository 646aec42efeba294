"""The training loop: the only place that trains. ``run_training(job, reporter)``.

The loop is kept lean (it is most of the wall time on a CPU): batches are gathered from a
memory-mapped token array with one fancy-index, the loss stays on the device except at log
intervals (every step on CPU, where reading it is free and catches NaN at once), and all
bookkeeping goes through the ``Reporter`` at log intervals only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llm_trainer.config import RunConfig
from llm_trainer.data.batches import Batches, BatchPlan, DataPosition, eval_windows
from llm_trainer.data.prepare import TokenData, prepare_data
from llm_trainer.errors import TrainingError, UsageError
from llm_trainer.progress import EtaClock
from llm_trainer.store.checkpoints import prune_checkpoints

RESUME = "resume"  # restore everything: optimizer, schedule, RNG, data position
CONTINUE = "continue"  # weights and tokenizer only: new data, fresh optimizer and schedule


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


class Reporter(Protocol):
    def log(self, message: str) -> None: ...
    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_progress(self, progress: dict[str, Any]) -> None: ...
    def on_eval(self, result: dict[str, Any]) -> None: ...
    def on_checkpoint(self, result: dict[str, Any]) -> None: ...


class NullReporter:
    """Reports nothing (ranks other than 0 of a multi-process run); a base for others."""

    def log(self, message: str) -> None:
        pass

    def on_start(self, info: dict[str, Any]) -> None:
        pass

    def on_progress(self, progress: dict[str, Any]) -> None:
        pass

    def on_eval(self, result: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, result: dict[str, Any]) -> None:
        pass


class PrintReporter(NullReporter):
    """Log lines on stdout, nothing else."""

    def log(self, message: str) -> None:
        print(message, flush=True)


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


def architecture_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "activation")
    return [f"{k} {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k)]


def build_optimizer(model, cfg: RunConfig, device_type: str):
    """AdamW, fused where the build supports it (else foreach); no weight decay on norms,
    biases and embeddings (including the tied lm_head)."""
    import torch

    embeddings = {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), eps=1e-8)
    if device_type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs), "fused"
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs), "foreach"


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


def run_training(job: TrainingJob, reporter: Reporter) -> TrainingResult:
    import numpy as np
    import torch

    from llm_trainer.model.gpt import GPT, GPTShape
    from llm_trainer.training.checkpoint import (
        capture_rng,
        load_model,
        load_optimizer_state,
        load_rng_state,
        read_checkpoint,
        restore_rng,
        save_checkpoint,
    )
    from llm_trainer.training.device import probe_devices, select_device, select_precision
    from llm_trainer.training.distributed import DistContext, cpu_threads_per_process
    from llm_trainer.training.schedule import LRSchedule

    cfg = job.config
    t_start = time.time()
    dist = DistContext.from_env()
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    elif dist.enabled:
        torch.set_num_threads(cpu_threads_per_process(dist.local_world_size))

    probe = probe_devices()
    device = select_device(cfg.runtime.device, probe, strict=cfg.runtime.strict_device)
    if dist.enabled and device.type == "cuda":  # one GPU per process
        device = dataclasses.replace(device, device=f"cuda:{dist.local_rank}",
                                     name=probe.cuda_names[dist.local_rank % probe.cuda_count])
    precision = select_precision(cfg.runtime.precision, device, probe)
    dist.init(device.type, cfg.runtime.dist_timeout)
    for warning in (device.warning, precision.warning):
        if warning:
            reporter.log(f"warning: {warning}")
    reporter.log(f"device: requested {device.requested}, using {device.device} ({device.name}); "
                 f"precision {precision.name}")

    # ---------------------------------------------------------------- checkpoint to start from
    ckpt = None
    if job.init is not None:
        ckpt = read_checkpoint(job.init.checkpoint)
        reporter.log(f"starting from checkpoint {ckpt.path} (step {ckpt.info.step})")

    # ---------------------------------------------------------------- data
    # rank 0 downloads / tokenizes into the cache first; the others then read the cache
    if not dist.is_main:
        dist.barrier()
    data: TokenData = prepare_data(
        dataset=cfg.data.dataset, tokenizer_spec=cfg.data.tokenizer,
        vocab_size=cfg.data.vocab_size, val_fraction=cfg.data.val_fraction,
        text_column=cfg.data.text_column, data_dir=job.home / "data",
        explicit=job.dataset_explicit, tokenizer=ckpt.tokenizer if ckpt else None,
        log=reporter.log)
    if dist.is_main:
        dist.barrier()
    reporter.log(f"data: {data.summary}")
    if data.source.spec != cfg.data.dataset:  # e.g. the offline fallback: record what was used
        cfg = cfg.replace(**{"data.dataset": data.source.spec})

    shape = GPTShape(vocab_size=data.tokenizer.vocab_size, block_size=cfg.model.block_size,
                     n_layer=cfg.model.n_layer, n_head=cfg.model.n_head, n_embd=cfg.model.n_embd,
                     dropout=cfg.model.dropout, bias=cfg.model.bias,
                     activation=cfg.model.activation)
    if ckpt is not None:
        diff = architecture_diff(ckpt.shape.__dict__, shape.__dict__)
        if diff:
            raise UsageError(
                f"checkpoint {ckpt.path.name} has a different architecture: "
                f"{'; '.join(diff)} (checkpoint vs requested)",
                hint="resume with the model's own settings (drop the model.* overrides)")

    plan = BatchPlan(n_tokens=len(data.train), seq_len=shape.block_size,
                     batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum,
                     world_size=dist.world_size, seed=cfg.train.seed)
    plan.check()
    batches = Batches(data.train, plan, rank=dist.rank)
    val_batches = list(eval_windows(data.val, shape.block_size, cfg.train.batch_size,
                                    cfg.train.eval_batches))

    # ---------------------------------------------------------------- model and optimizer
    torch.manual_seed(cfg.train.seed)
    model = load_model(ckpt, device.device) if ckpt is not None else GPT(shape).to(device.device)
    model.train()
    optimizer, optimizer_kind = build_optimizer(model, cfg, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler) \
        if precision.use_scaler else None

    pos = DataPosition()
    step = 0
    best_val: float | None = None
    last_val: float | None = None
    schedule_origin = 0
    if ckpt is not None:
        step = int(ckpt.trainer["step"])
        schedule_origin = step
        best_val = ckpt.trainer.get("best_val_loss")
        last_val = ckpt.trainer.get("val_loss")
    if ckpt is not None and job.init.mode == RESUME:
        optimizer.load_state_dict(load_optimizer_state(ckpt, device.device))
        if scaler is not None and ckpt.trainer.get("scaler"):
            scaler.load_state_dict(ckpt.trainer["scaler"])
        p = ckpt.trainer.get("data_position") or {}
        pos = DataPosition(int(p.get("epoch", 0)), int(p.get("cursor", 0)))
        old = LRSchedule.from_state_dict(ckpt.trainer["schedule"])
        if job.init.more_epochs:
            total_steps = step + job.init.more_epochs * plan.steps_per_epoch
            if job.init.restart_schedule:
                schedule = LRSchedule(total_steps, cfg.train.warmup_steps, cfg.train.lr,
                                      cfg.train.lr * cfg.train.min_lr_ratio,
                                      cfg.train.lr_schedule, origin=step)
            else:  # same curve, stretched to the new horizon; warm-up is not repeated
                schedule = LRSchedule(total_steps, old.warmup_steps, old.max_lr, old.min_lr,
                                      old.kind, old.origin)
        else:
            schedule = old
            total_steps = old.total_steps
    else:
        if cfg.train.max_steps:
            total_steps = step + cfg.train.max_steps
        else:
            total_steps = step + cfg.train.epochs * plan.steps_per_epoch
        schedule = LRSchedule(total_steps, cfg.train.warmup_steps, cfg.train.lr,
                              cfg.train.lr * cfg.train.min_lr_ratio, cfg.train.lr_schedule,
                              origin=schedule_origin)
    if pos.cursor + plan.seqs_per_step > plan.n_windows:
        pos = DataPosition(pos.epoch + 1, 0)

    train_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    compiled = False
    if want_compile(cfg.train.compile, device.type):
        try:
            train_model = torch.compile(train_model)
            compiled = True
        except Exception as exc:  # no compiler toolchain, unsupported platform
            reporter.log(f"warning: torch.compile unavailable ({exc}); running eagerly")
    no_sync = getattr(train_model, "no_sync", None) if dist.enabled else None

    autocast = _autocast(torch, device.type, precision.name)
    n_params = model.num_params(non_embedding=False)
    reporter.on_start({
        "device": device.to_json(), "precision": precision.name, "parameters": n_params,
        "architecture": shape.__dict__, "tokenizer": {"kind": data.tokenizer.kind,
                                                     "vocab_size": data.tokenizer.vocab_size},
        "dataset": {"spec": data.source.spec, "fingerprint": data.source.fingerprint,
                    "train_tokens": len(data.train), "val_tokens": len(data.val)},
        "steps_per_epoch": plan.steps_per_epoch, "tokens_per_step": plan.tokens_per_step,
        "global_batch": plan.seqs_per_step, "world_size": dist.world_size,
        "start_step": step, "total_steps": total_steps, "optimizer": optimizer_kind,
        "compiled": compiled, "config": cfg.to_dict(), "tokenizer_object": data.tokenizer,
        "startup_s": time.time() - t_start,
    })
    reporter.log(
        f"model: {n_params / 1e6:.2f}M parameters ({shape.n_layer} layers, {shape.n_head} heads, "
        f"{shape.n_embd} dims, context {shape.block_size}); {plan.steps_per_epoch:,} steps per "
        f"epoch of {plan.tokens_per_step:,} tokens; training steps {step:,} -> {total_steps:,}")
    if dist.enabled:
        backend = "nccl" if device.type == "cuda" else "gloo"
        reporter.log(f"data parallel: {dist.world_size} processes ({backend}); global batch "
                     f"{plan.seqs_per_step} sequences = micro-batch {plan.batch_size} x "
                     f"accumulation {plan.grad_accum} x {dist.world_size} processes")

    if ckpt is not None and job.init.mode == RESUME:
        restore_rng(load_rng_state(ckpt), rank=dist.rank, world_size=dist.world_size)
    elif dist.enabled:  # same weights everywhere (DDP broadcasts them); own dropout stream
        torch.manual_seed(cfg.train.seed + 1000 * dist.rank)

    # ---------------------------------------------------------------- helpers
    on_cpu = device.type == "cpu"
    non_blocking = device.type == "cuda"
    clip = cfg.train.grad_clip
    params = [p for p in model.parameters() if p.requires_grad]
    accum = plan.grad_accum
    eta = EtaClock()
    train_elapsed = 0.0

    def to_device(a: np.ndarray):
        t = torch.from_numpy(a)
        if non_blocking:
            t = t.pin_memory()
        return t.to(device.device, non_blocking=non_blocking)

    def evaluate() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), autocast:
            for xb, yb in val_batches:
                _, loss = model(to_device(xb), to_device(yb))
                total += float(loss) * len(xb)
                count += len(xb)
        model.train()
        return total / max(1, count)

    def trainer_state(val_loss: float | None) -> dict[str, Any]:
        return {
            "step": step, "epoch": pos.epochs_done(plan), "data_position": pos.to_json(),
            "schedule": schedule.state_dict(), "val_loss": val_loss, "best_val_loss": best_val,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "plan": {"n_tokens": plan.n_tokens, "seq_len": plan.seq_len,
                     "batch_size": plan.batch_size, "grad_accum": plan.grad_accum,
                     "world_size": plan.world_size, "seed": plan.seed,
                     "steps_per_epoch": plan.steps_per_epoch},
            "dataset": {"spec": data.source.spec, "fingerprint": data.source.fingerprint},
            "run_id": job.run_id, "optimizer": optimizer_kind, "device": device.to_json(),
            "precision": precision.name, "world_size": dist.world_size, **job.extra_state,
        }

    last_saved: Path | None = None
    last_saved_step = -1

    def save(val_loss: float | None) -> Path | None:
        """Rank 0 writes the checkpoint; every rank takes part (its RNG state is gathered)."""
        nonlocal last_saved, last_saved_step
        t0 = time.perf_counter()
        rng_states = dist.gather(capture_rng())
        last_saved_step = step
        if not dist.is_main:
            return None
        path = save_checkpoint(job.model_dir, model=model, optimizer=optimizer,
                               trainer_state=trainer_state(val_loss), config=cfg, shape=shape,
                               tokenizer=data.tokenizer, step=step, epoch=pos.epochs_done(plan),
                               val_loss=val_loss, rng=rng_states)
        prune_checkpoints(job.model_dir, keep_last=cfg.train.keep_last,
                          keep_every=cfg.train.keep_every)
        last_saved = path
        seconds = time.perf_counter() - t0
        reporter.on_checkpoint({"path": str(path), "step": step, "epoch": pos.epochs_done(plan),
                                "val_loss": val_loss, "best_val_loss": best_val,
                                "seconds": seconds})
        return path

    def diverged(value: float) -> TrainingError:
        where = (f"the last good checkpoint ({last_saved.name}) is intact" if last_saved else
                 "no checkpoint was written in this run")
        return TrainingError(
            f"training diverged: the loss became {value} at step {step}; {where}",
            hint="lower --lr, raise train.warmup_steps, or use --precision fp32")

    last_eval_step = -1

    def run_eval() -> float:
        nonlocal best_val, last_val, last_eval_step
        t0 = time.perf_counter()
        val = evaluate()
        if not math.isfinite(val):
            raise diverged(val)
        last_val, last_eval_step = val, step
        if best_val is None or val < best_val:
            best_val = val
        reporter.on_eval({"step": step, "epoch": pos.epochs_done(plan), "val_loss": val,
                          "perplexity": math.exp(min(val, 50.0)), "best_val_loss": best_val,
                          "seconds": time.perf_counter() - t0})
        return val

    # ---------------------------------------------------------------- the loop
    log_every = cfg.train.log_interval
    eval_every = cfg.train.eval_interval
    ckpt_every = cfg.train.checkpoint_interval
    target = cfg.train.target_val_loss
    window_loss = 0.0
    window_steps = 0
    window_start = time.perf_counter()
    reason = "reached the planned steps"
    status = "completed"
    loss_t = None

    def stop_requested() -> bool:
        return job.stop is not None and job.stop.is_set()

    pending_nonfinite: float | None = None
    while step < total_steps:
        if dist.enabled:  # every rank leaves the loop at the same step
            stop_now, bad = dist.any([stop_requested(), pending_nonfinite is not None],
                                     device.device)
            if bad:
                raise diverged(pending_nonfinite if pending_nonfinite is not None else math.nan)
        else:
            stop_now = stop_requested()
        if stop_now:
            status, reason = "paused", "stop requested"
            break
        t0 = time.perf_counter()
        lr = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for micro in range(accum):
            xb, yb = batches.get(pos, micro)
            sync = no_sync() if (no_sync is not None and micro < accum - 1) else \
                contextlib.nullcontext()
            with sync:
                with autocast:
                    _, loss_t = train_model(to_device(xb), to_device(yb))
                if accum > 1:
                    loss_t = loss_t / accum
                if scaler is not None:
                    scaler.scale(loss_t).backward()
                else:
                    loss_t.backward()
            step_loss = step_loss + loss_t.detach()
        if scaler is not None:
            if clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            scaler.step(optimizer)
            scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pos.advance(plan)
        step += 1
        if on_cpu:
            value = float(step_loss)
            if not math.isfinite(value):
                if not dist.enabled:
                    raise diverged(value)
                pending_nonfinite = value  # raised on every rank at the next step's check
            window_loss += value
        else:
            window_loss = step_loss + (window_loss if window_steps else 0.0)
        window_steps += 1
        dt = time.perf_counter() - t0
        eta.add_step(dt)
        train_elapsed += dt

        done = step >= total_steps
        if step % log_every == 0 or done:
            mean_loss = dist.mean(float(window_loss) / window_steps, device.device)
            if not math.isfinite(mean_loss):
                raise diverged(mean_loss)
            now = time.perf_counter()
            remaining = total_steps - step
            pauses = (remaining // eval_every if eval_every else 0) + 1
            est = eta.estimate(remaining_steps=remaining, remaining_pauses=pauses)
            reporter.on_progress({
                "step": step, "total_steps": total_steps, "epoch": pos.epochs_done(plan),
                "loss": mean_loss, "lr": lr,
                "tokens_per_s": window_steps * plan.tokens_per_step / max(1e-9, now - window_start),
                "train_time_s": train_elapsed, **est.to_json(),
            })
            window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        pause_start = time.perf_counter()
        evaluated = False
        if eval_every and step % eval_every == 0 and not done:
            val = run_eval()
            evaluated = True
            if target is not None and val <= target:
                status, reason = "completed", f"reached the target val loss {target:g}"
                break
        due = (ckpt_every and step % ckpt_every == 0) or (not ckpt_every and evaluated)
        if due and not done:
            save(last_val if evaluated else None)
        if evaluated or last_saved_step == step:
            eta.add_pause(time.perf_counter() - pause_start)
            window_start = time.perf_counter()

    # ---------------------------------------------------------------- wrap up
    if status == "completed" and last_eval_step != step:
        run_eval()
    current_val = last_val if last_eval_step == step else None  # val loss of these weights
    if last_saved_step != step:
        save(current_val)
    dist.shutdown()
    return TrainingResult(status=status, step=step, total_steps=total_steps,
                          epoch=pos.epochs_done(plan), val_loss=current_val,
                          best_val_loss=best_val, checkpoint=last_saved, reason=reason)
