"""Everything a training step needs, built in one straight function.

``build_parts(job)`` reads top to bottom as nanoGPT's ``train.py`` does: processes and
threads, device and precision, the starting checkpoint, the data, the model (imported
weights, LoRA, frozen layers, DDP, compile), the optimizer and scaler, and the ``TrainState``
(fresh, or the checkpoint's). It returns ``TrainingParts``; ``Trainer(parts, callbacks)``
runs the loop on them, and the dry-run estimator times ``parts.train_step`` without a
trainer. Nothing here writes a run record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UsageError
from llm_trainer.store.records import InitFrom, InitMode, RunMeta
from llm_trainer.training.callbacks import EarlyStopping, StepStats
from llm_trainer.training.optim import build_optimizer, load_optimizer
from llm_trainer.training.state import TrainState

Log = Callable[[str], None]


@dataclass
class TrainingJob:
    """What to train: the worker builds it from a run's meta.json (``from_meta``)."""

    config: RunConfig
    home: Path
    model_dir: Path
    run_id: str = "adhoc"
    init: InitFrom | None = None
    dataset_explicit: bool = True
    stop: Any = None  # anything with is_set(); None: never stops early
    on_prepare: Any = None  # gets data.prepare.PrepareProgress while the data is prepared
    extra_state: dict[str, Any] = dataclasses.field(default_factory=dict)  # in trainer.json

    @classmethod
    def from_meta(cls, meta: RunMeta, *, home: Path, model_dir: Path,
                  stop: Any = None) -> TrainingJob:
        return cls(config=RunConfig.from_dict(meta.config, source="meta.json"), home=home,
                   model_dir=model_dir, run_id=meta.run_id, init=meta.init,
                   dataset_explicit=meta.dataset_explicit, stop=stop,
                   extra_state={"model_id": meta.model["id"]})

    @property
    def resumes(self) -> bool:
        return self.init is not None and self.init.mode == InitMode.RESUME


@dataclass
class TrainingParts:
    """The built pieces of one training run (see the module doc)."""

    job: TrainingJob
    config: RunConfig  # the job's, with what set-up resolved (e.g. an offline fallback)
    dist: Any  # DistContext
    device: Any  # DeviceChoice
    precision: Any  # PrecisionChoice
    data: Any  # TokenData: source, tokenizer, train and val tokens
    plan: Any  # BatchPlan
    batches: Any  # Batches
    val_batches: list
    shape: Any  # ModelShape
    model: Any  # the unwrapped model (what checkpoints store)
    train_model: Any  # what the step calls: the model, or its DDP / compiled wrapper
    compiled: bool
    optimizer: Any
    optimizer_kind: str
    scaler: Any  # GradScaler (fp16) or None
    state: TrainState
    start: Any  # the LoadedCheckpoint it started from (resume / continue), or None
    started_at: float
    chat: Any = None  # the model's ChatTemplate (stored with every checkpoint), or None

    def __post_init__(self) -> None:
        import torch

        self.torch = torch
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.on_cpu = self.device.type == "cpu"
        self.non_blocking = self.device.type == "cuda"
        self.autocast = _autocast(torch, self.device.type, self.precision.name)
        self.no_sync = getattr(self.train_model, "no_sync", None) if self.dist.enabled else None
        self.last_loss: Any = 0.0  # the latest step's loss, still on the device

    @property
    def total_steps(self) -> int:
        return self.state.schedule.total_steps

    @property
    def epoch(self) -> float:
        return self.state.position.epochs_done(self.plan)

    @property
    def tokenizer(self):
        return self.data.tokenizer

    def to_device(self, a):
        t = self.torch.from_numpy(a)
        if self.non_blocking:
            t = t.pin_memory()
        return t.to(self.device.device, non_blocking=self.non_blocking)

    def train_step(self, read: bool, loss_factor: float | None = None) -> StepStats:
        """One optimizer step over ``grad_accum`` micro-batches (DDP syncs on the last).
        ``read``: bring the loss and gradient norm to the host (a sync on an accelerator).
        ``loss_factor``: scale the first micro-batch's loss (the anomaly test hook)."""
        torch, s, accum = self.torch, self.state, self.plan.grad_accum
        lr = s.schedule(s.step)
        for group in self.optimizer.param_groups:  # each at its own peak (optim.py)
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss = 0.0
        trained = 0
        # chat data: each micro-batch's loss is a mean over its own trained targets, which
        # vary; weighted by their share of the step's, the step's loss (and gradient) is the
        # mean over all of them, whatever the split into micro-batches and processes
        batches = [self.batches.get(s.position, micro) for micro in range(accum)]
        counts = [int((yb >= 0).sum()) if self.data.chat is not None else yb.size
                  for _, yb in batches]
        if self.data.chat is None:
            step_targets = 0
        elif self.plan.world_size == 1:  # this process holds the whole step: count what it read
            step_targets = sum(counts)
        else:  # every process's micro-batches, read from the mask
            step_targets = self.batches.step_targets(s.position)
        for micro, ((xb, yb), n) in enumerate(zip(batches, counts, strict=True)):
            trained += n
            sync = self.no_sync() if self.no_sync and micro < accum - 1 else \
                contextlib.nullcontext()
            with sync:
                with self.autocast:
                    _, micro_loss = self.train_model(self.to_device(xb), self.to_device(yb))
                if loss_factor is not None and micro == 0:
                    micro_loss = micro_loss * loss_factor
                if step_targets:  # x world: DDP averages the processes' gradients
                    micro_loss = micro_loss * (n * self.plan.world_size / step_targets)
                elif accum > 1:
                    micro_loss = micro_loss / accum
                if self.scaler is not None:
                    self.scaler.scale(micro_loss).backward()
                else:
                    micro_loss.backward()
            loss = loss + micro_loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.config.train.grad_clip
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
        self.last_loss = loss
        return StepStats(step=s.step, lr=lr, loss=float(loss) if read else None,
                         grad_norm=float(norm) if read else None,
                         tokens=step_targets or trained)

    def evaluate(self) -> float:
        """Mean loss over the held-out batches (eval mode, no gradients)."""
        torch = self.torch
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad(), self.autocast:
            for xb, yb in self.val_batches:
                _, loss = self.model(self.to_device(xb), self.to_device(yb))
                n = int((yb >= 0).sum())  # the targets it scored (chat: the trained ones)
                total += float(loss) * n
                count += n
        self.model.train()
        return total / max(1, count)

    def sync(self) -> None:
        """Wait for the device (timing)."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device.device)

    def with_micro_batch(self, batch: int, accum: int) -> TrainingParts:
        """The same parts stepping ``batch`` sequences x ``accum`` micro-batches (same data,
        same model and optimizer; the config says so too)."""
        from llm_trainer.data.batches import Batches

        plan = dataclasses.replace(self.plan, batch_size=batch, grad_accum=accum)
        plan.check()
        config = dataclasses.replace(self.config, train=dataclasses.replace(
            self.config.train, batch_size=batch, grad_accum=accum))
        return dataclasses.replace(self, plan=plan, config=config,
                                   batches=Batches(self.data.train, plan, rank=self.dist.rank,
                                                   mask=self.data.train_mask))


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


def want_compile(setting: str, device_type: str) -> bool:
    """auto: only on CUDA, where it pays off; on CPU it costs ~70 s to compile a small model
    and was not faster (measured)."""
    if setting == "true":
        return True
    if setting == "false":
        return False
    return device_type == "cuda"


# ============================================================================ the build
def build_parts(job: TrainingJob, log: Log = lambda message: None) -> TrainingParts:
    """Set up everything a training step needs, in order. ``log`` gets the set-up lines
    (the run's log, on rank 0)."""
    import torch

    from llm_trainer.training.distributed import DistContext

    started_at = time.time()
    cfg = job.config
    dist = DistContext.from_env()
    if not dist.is_main:
        log = _quiet  # rank 0 alone writes the run's log
    _set_threads(torch, cfg, dist)
    device, precision = _device(cfg, dist, log)
    start = _starting_checkpoint(job, log)
    own_chat = _own_template(job, start)
    data, cfg = _data(job, cfg, dist, start, own_chat, log)
    plan, batches, val_batches = _batches(cfg, dist, data)
    shape, model = _model(job, cfg, dist, device, data, start, log)
    model.train()
    optimizer, optimizer_kind = build_optimizer(model, cfg, device.type, precision.name)
    log(f"optimizer: {optimizer_kind}")
    scaler = torch.amp.GradScaler(device.type, enabled=True) if precision.use_scaler else None
    train_model, compiled = _wrap(torch, model, cfg, dist, device, log)
    state = _state(job, cfg, plan, start, optimizer, scaler, device)
    return TrainingParts(
        job=job, config=cfg, dist=dist, device=device, precision=precision, data=data,
        plan=plan, batches=batches, val_batches=val_batches, shape=shape, model=model,
        train_model=train_model, compiled=compiled, optimizer=optimizer,
        optimizer_kind=optimizer_kind, scaler=scaler, state=state, start=start,
        started_at=started_at, chat=data.chat or own_chat)


def _quiet(message: str) -> None:
    pass


def _set_threads(torch, cfg: RunConfig, dist) -> None:
    from llm_trainer.training.distributed import cpu_threads_per_process

    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    elif dist.enabled:
        torch.set_num_threads(cpu_threads_per_process(dist.local_world_size))


def _device(cfg: RunConfig, dist, log: Log):
    """The device and precision asked for (or the fallback), and the process group."""
    from llm_trainer.training.device import probe_devices, select_device, select_precision

    probe = probe_devices()
    device = select_device(cfg.runtime.device, probe, strict=cfg.runtime.strict_device)
    if dist.enabled and device.type == "cuda":  # one GPU per process
        device = dataclasses.replace(device, device=f"cuda:{dist.local_rank}",
                                     name=probe.cuda_names[dist.local_rank % probe.cuda_count])
    precision = select_precision(cfg.runtime.precision, device, probe)
    dist.init(device.type, cfg.runtime.dist_timeout)
    for warning in (device.warning, precision.warning):
        if warning:
            log(f"warning: {warning}")
    log(f"device: requested {device.requested}, using {device.device} ({device.name}); "
        f"precision {precision.name}")
    return device, precision


def _starting_checkpoint(job: TrainingJob, log: Log):
    """The checkpoint a resume / continue starts from (read and verified), or None."""
    from llm_trainer.checkpoint_io import read_checkpoint

    if job.init is None:
        return None
    if job.init.mode == InitMode.IMPORT:
        log(f"importing the weights of {job.init.checkpoint}")
        return None
    ckpt = read_checkpoint(job.init.checkpoint)
    log(f"starting from checkpoint {ckpt.path} (step {ckpt.info.step})")
    return ckpt


def _data(job: TrainingJob, cfg: RunConfig, dist, start, own_chat, log: Log):
    """The tokenized data (with the checkpoint's tokenizer when there is one). Rank 0
    downloads / tokenizes into the cache first; the others then read the cache."""
    from llm_trainer.data.prepare import ChatSettings, prepare_data
    from llm_trainer.data.tokenizer import TextTokenizer, tokenizer_kind

    if not dist.is_main:
        dist.barrier()
    stop = job.stop.is_set if job.stop is not None else None
    tokenizer = start.tokenizer if start else None
    if tokenizer is None and job.init is not None and job.init.mode == InitMode.IMPORT \
            and tokenizer_kind(cfg.data.tokenizer) == "file":
        # an imported model's tokenizer as it is: its embedding has no row for an added
        # separator (its own <|endoftext|> / </s> separates documents when it has one)
        tokenizer = TextTokenizer.from_file(Path(cfg.data.tokenizer).expanduser())
    data = prepare_data(
        dataset=cfg.data.dataset, tokenizer_spec=cfg.data.tokenizer,
        vocab_size=cfg.data.vocab_size, val_fraction=cfg.data.val_fraction,
        text_column=cfg.data.text_column, data_dir=job.home / "data",
        explicit=job.dataset_explicit, tokenizer=tokenizer, log=log,
        progress=job.on_prepare if dist.is_main else None, stop=stop,
        val_max_tokens=cfg.data.val_max_tokens,
        chat=ChatSettings.from_config(cfg, own_chat))
    if dist.is_main:
        dist.barrier()
    log(f"data: {data.summary}")
    if data.source.spec != cfg.data.dataset:  # e.g. the offline fallback: record it
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                dataset=data.source.spec))
    return data, cfg


def _own_template(job: TrainingJob, start):
    """The chat template the model already has: its checkpoint's, or the one of the folder
    it is imported from (a Hugging Face folder's chat_template, or a model of ours); None:
    it gets ChatML when it trains on conversations."""
    if start is not None:
        return start.chat
    if job.init is None or job.init.mode != InitMode.IMPORT:
        return None
    from llm_trainer.data.chat import ChatTemplate

    folder = Path(job.init.checkpoint)
    found = ChatTemplate.from_hf_folder(folder)
    if found is None and (folder / "manifest.json").is_file():
        from llm_trainer.checkpoint_io import read_checkpoint

        found = read_checkpoint(folder).chat
    return found


def _batches(cfg: RunConfig, dist, data):
    from llm_trainer.data.batches import Batches, BatchPlan, chat_eval_windows, eval_windows

    chat = data.chat is not None
    plan = BatchPlan(n_tokens=len(data.train), seq_len=cfg.model.block_size,
                     batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum,
                     world_size=dist.world_size, seed=cfg.train.seed, aligned=chat)
    plan.check()
    if chat:
        val = list(chat_eval_windows(data.val, data.val_mask, cfg.model.block_size,
                                     cfg.train.batch_size, cfg.train.eval_batches))
    else:
        val = list(eval_windows(data.val, cfg.model.block_size, cfg.train.batch_size,
                                cfg.train.eval_batches))
    return plan, Batches(data.train, plan, rank=dist.rank, mask=data.train_mask), val


def _model(job: TrainingJob, cfg: RunConfig, dist, device, data, start, log: Log):
    """The model: the checkpoint's, or a new one (with imported weights for --init-from),
    then LoRA adapters and frozen layers."""
    import torch

    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.model.gpt import GPT
    from llm_trainer.store.checkpoints import inspect_source

    source = inspect_source(Path(job.init.checkpoint)) \
        if job.init is not None and job.init.mode == InitMode.IMPORT else None
    # the embedding may have more rows than the tokenizer has tokens (padded imports)
    vocab = start.shape.vocab_size if start is not None else (
        source.vocab_size if source else data.tokenizer.vocab_size)
    shape = cfg.model.shape(vocab)
    if start is not None:
        diff = start.shape.diff(shape)
        if diff:
            raise UsageError(
                f"checkpoint {start.path.name} has a different architecture: "
                f"{'; '.join(diff)} (checkpoint vs requested)",
                hint="resume with the model's own settings (drop the model.* overrides)")
    torch.manual_seed(cfg.train.seed)
    added: list[int] = []
    if start is not None:
        model = load_model(start, device.device, merged=False)
        added = _grow(model, data.tokenizer, log)
    else:
        model = GPT(shape)
        if source is not None:
            added = _import_weights(job, cfg, dist, model, shape, data.tokenizer, source, log)
        model.to(device.device)
    return model.shape, _finetune(cfg, model, model.shape, added)


def _grow(model, tokenizer, log: Log) -> list[int]:
    """Room in the embedding for tokens the tokenizer gained (a chat template's markers),
    initialised as the mean of the trained rows. Returns the new rows' ids: a LoRA run
    trains those rows with its adapters (model/lora.py), the rest of the embedding frozen."""
    from llm_trainer.model.lora import is_lora

    if tokenizer.vocab_size <= model.shape.vocab_size:
        return []
    if is_lora(model):
        raise UsageError(
            f"the tokenizer needs {tokenizer.vocab_size - model.shape.vocab_size} new tokens "
            "(the chat template's markers), but this LoRA model's embedding is frozen",
            hint="fine-tune it on chat data without LoRA first, or start from a model whose "
                 "tokenizer has them")
    old = model.shape.vocab_size
    added = tokenizer.vocab_size - old
    model.grow_vocab(tokenizer.vocab_size)
    log(f"added {added} token embedding{'s' if added != 1 else ''} for the chat template's "
        f"markers (each the mean of the existing ones)")
    return list(range(old, tokenizer.vocab_size))


def _import_weights(job: TrainingJob, cfg: RunConfig, dist, model, shape, tokenizer, source,
                    log: Log) -> list[int]:
    from llm_trainer.model.hf_import import OWN, check_complete, load_hf_weights

    if source.family == OWN:
        from llm_trainer.checkpoint_io import weights_for_import

        sd = weights_for_import(source.path, shape.block_size)
    else:
        sd = load_hf_weights(source, shape.block_size)
    check_complete(sd, model.state_dict(), source)
    model.load_state_dict(sd, strict=True)
    added = _grow(model, tokenizer, log)
    if source.tokenizer.is_file():
        # a padded embedding (more rows than the folder's tokens) may hold new tokens
        # without growing: they are the ids past the folder's own tokenizer all the same
        from llm_trainer.data.tokenizer import TextTokenizer

        known = TextTokenizer.from_file(source.tokenizer).vocab_size
        added = sorted({*added, *range(known, tokenizer.vocab_size)})
    if cfg.finetune.lora_r and dist.is_main:
        from llm_trainer.checkpoint_io import save_base

        path = save_base(job.model_dir, model=model, config=cfg, shape=model.shape,
                         tokenizer=tokenizer, source=cfg.finetune.init_from or source.spec)
        log(f"base weights for the LoRA adapters: {path}")
    return added


def _finetune(cfg: RunConfig, model, shape, added: list[int]):
    """LoRA adapters (a fresh LoRA run; a LoRA checkpoint already has them) and frozen
    layers, before the optimizer sees the parameters. ``added``: the ids of the embedding
    rows this run added, which train with the adapters."""
    from llm_trainer.model.lora import apply_lora, freeze_layers, is_lora, lora_settings

    ft = cfg.finetune
    if ft.lora_r and not is_lora(model):
        model = apply_lora(model, lora_settings(ft, added))
    if ft.freeze_layers:
        if ft.freeze_layers > shape.n_layer:
            raise UsageError(f"finetune.freeze_layers {ft.freeze_layers} exceeds the "
                             f"model's {shape.n_layer} blocks")
        freeze_layers(model, ft.freeze_layers)
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError("nothing left to train: every weight is frozen",
                         hint="lower --freeze-layers")
    return model


def _wrap(torch, model, cfg: RunConfig, dist, device, log: Log):
    """What the step calls: DDP across processes, then torch.compile where it pays."""
    train_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    if want_compile(cfg.train.compile, device.type):
        try:
            return torch.compile(train_model), True
        except Exception as exc:  # no compiler toolchain, unsupported platform
            log(f"warning: torch.compile unavailable ({exc}); running eagerly")
    return train_model, False


def _state(job: TrainingJob, cfg: RunConfig, plan, start, optimizer, scaler,
           device) -> TrainState:
    """A fresh plan, or the checkpoint's state: all of it for resume (optimizer, scaler,
    data position, callbacks); the step count, losses and a new schedule for continue; a
    stretched schedule for --more-epochs."""
    from llm_trainer.checkpoint_io import load_optimizer_state
    from llm_trainer.training.schedule import LRSchedule

    t = cfg.train
    saved = TrainState.from_state_dict(start.trainer) if start is not None else None
    if saved is not None and job.resumes:
        s = saved  # all of it: position, schedule, callbacks, the last evaluation
        load_optimizer(optimizer, load_optimizer_state(start, device.device),
                       where=f"checkpoint {start.path.name}")
        if scaler is not None and start.trainer.get("scaler"):
            scaler.load_state_dict(start.trainer["scaler"])
        if job.init.more_epochs:
            total = s.step + job.init.more_epochs * plan.steps_per_epoch
            s.finished = None
            s.callbacks.pop(EarlyStopping.name, None)  # more epochs asked: patience anew
            old = saved.schedule
            if job.init.restart_schedule:
                old = LRSchedule(total, t.warmup_steps, t.lr, t.lr * t.min_lr_ratio,
                                 t.lr_schedule, origin=s.step)
            # else the same curve, stretched to the new horizon; warm-up not repeated
            s.schedule = dataclasses.replace(old, total_steps=total)
    else:
        s = TrainState()
        if saved is not None:  # continue: the step count and the losses, nothing else
            s.step, s.val_loss = saved.step, saved.val_loss
            s.best_val_loss, s.best_val_step = saved.best_val_loss, saved.best_val_step
            if start.trainer.get("model_id") == job.extra_state.get("model_id") is not None:
                # the same model trained further: its steps count on, and so does its curve
                # in the experiment loggers (another model's checkpoint starts its own)
                s.callbacks = {k: v for k, v in saved.callbacks.items() if k == "loggers"}
        s.schedule = LRSchedule(s.step + t.planned_steps(plan.steps_per_epoch),
                                t.warmup_steps, t.lr, t.lr * t.min_lr_ratio, t.lr_schedule,
                                origin=s.step)
    if s.position.cursor + plan.seqs_per_step > plan.n_windows:
        s.position = dataclasses.replace(s.position, epoch=s.position.epoch + 1, cursor=0)
    return s
