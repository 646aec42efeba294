"""Estimates before (and checks after) a run: memory, time, and the automatic micro-batch.

Everything here is an *estimate*. The memory figures are formulas; the time figures come from
a few real optimizer steps of the real model on real batches on this machine, timed after a
warm-up, and multiplied out. Pure formulas at the top (no torch); the parts that build and
time the model import torch inside their functions.

Memory, in bytes (P: parameters, P_t: the trainable ones; e: bytes per activation element,
4 for fp32, 2 under bf16/fp16 autocast; b: micro-batch, s: sequence length, h: n_embd,
a: n_head, L: n_layer, V: vocabulary):

- weights ``4 P`` (fp32 master weights, also under autocast), gradients ``4 P_t``,
  AdamW ``8 P_t`` (two fp32 states per trainable weight); with ``train.optimizer: muon``
  ``4 P_m + 8 (P_t - P_m)`` (Muon keeps one fp32 momentum buffer for each of the ``P_m``
  block-matrix weights it trains, AdamW two for the rest);
- activations kept for the backward pass, per layer, after Korthikanti et al. 2022
  ("Reducing Activation Recomputation in Large Transformer Models", eq. 1:
  ``s b h (34 + 5 a s / h)`` bytes with 2-byte activations and 1-byte dropout masks),
  rescaled to ``e``: ``s b h (16 e + m)`` with ``m = 2`` for the two dropout masks when
  dropout > 0, and the ``5 a s^2 b`` attention-score term only where SDPA cannot use a fused
  (flash / memory-efficient) kernel, which keeps O(s) per head instead: we count it on a CPU
  with dropout > 0 (the math fallback), never on CUDA;
- the head: logits ``b s V e`` plus the fp32 log-softmax of the loss ``4 b s V`` and its
  gradient ``4 b s V`` at the start of the backward pass (the usual peak), and the
  embedding / final-norm outputs ``3 b s h e``.

Not counted: the CUDA context (~0.3-0.5 GB, outside torch's allocator), allocator
fragmentation, the interpreter and libraries in RAM on a CPU. ``choose_batch`` leaves
``HEADROOM`` for them.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llm_trainer.training.callbacks import Callback
from llm_trainer.views import (
    BatchChoiceView,
    DryRunData,
    DryRunMemory,
    DryRunReport,
    DryRunTime,
)

WARMUP_STEPS = 2  # not timed: the first steps allocate buffers and warm caches
TIMED_STEPS = 5  # at least; more while they took under MIN_TIMED_S (up to MAX_TIMED_STEPS)
MIN_TIMED_S = 1.0  # 5 steps of a small model take ~0.15 s: too short to time on a busy CPU
MAX_TIMED_STEPS = 100
HEADROOM = 0.8  # use at most this share of the free memory for the estimate
PROBE_WARMUP, PROBE_TIMED = 2, 3  # per candidate micro-batch when choosing one on a CPU
PROBE_SECONDS = 0.5  # ... and at least this long (tiny steps are too short to time alone)
BETTER = 1.05  # a larger micro-batch must be this much faster (tokens/s) to be chosen


# ============================================================================ formulas
@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def activation_element_bytes(precision: str) -> int:
    return 2 if precision in ("bf16", "fp16") else 4


def activation_bytes(*, batch: int, seq: int, n_layer: int, n_embd: int, n_head: int,
                     vocab: int, precision: str, dropout: float, fused_attention: bool) -> int:
    """Activations kept for the backward pass of one micro-batch (see the module docstring)."""
    e = activation_element_bytes(precision)
    sbh = seq * batch * n_embd
    per_layer = sbh * (16 * e + (2 if dropout > 0 else 0))
    if not fused_attention:  # the (b, a, s, s) scores, softmax and dropout mask are kept
        per_layer += 5 * n_head * seq * seq * batch * e // 2
    head = batch * seq * vocab * (e + 4 + 4) + 3 * sbh * e
    return n_layer * per_layer + head


def memory_estimate(*, params: int, trainable: int, batch: int, seq: int, n_layer: int,
                    n_embd: int, n_head: int, vocab: int, precision: str, dropout: float,
                    device_type: str, muon: int = 0) -> MemoryEstimate:
    """``muon``: how many of the trainable weights Muon trains (the rest: AdamW)."""
    fused = device_type == "cuda" or dropout == 0
    return MemoryEstimate(
        weights=4 * params, gradients=4 * trainable, optimizer=8 * (trainable - muon) + 4 * muon,
        activations=activation_bytes(batch=batch, seq=seq, n_layer=n_layer, n_embd=n_embd,
                                     n_head=n_head, vocab=vocab, precision=precision,
                                     dropout=dropout, fused_attention=fused))


def micro_batch_candidates(global_batch: int) -> list[int]:
    """Largest first: the global batch, then roughly halving, each dividing the global batch
    (so ``micro x accumulation`` stays exactly the configured global batch)."""
    out, b = [global_batch], global_batch
    while b > 1:
        b = max(d for d in range(1, b // 2 + 1) if global_batch % d == 0)
        out.append(b)
    return out


def run_times(*, step_time_s: float, steps: int, steps_per_epoch: int,
              eval_time_s: float | None, evals: int) -> dict[str, float | None]:
    """Time per epoch and for the whole run from a measured step (and evaluation) time."""
    evals_s = (eval_time_s or 0.0) * evals
    return {"step_time_s": step_time_s, "epoch_time_s": step_time_s * steps_per_epoch,
            "run_time_s": step_time_s * steps + evals_s, "eval_time_s": eval_time_s,
            "evals": evals}


def evals_in_run(*, start_step: int, total_steps: int, eval_interval: int) -> int:
    """Evaluations the loop makes from ``start_step`` to ``total_steps`` (the final one too)."""
    if total_steps <= start_step:
        return 0
    every = (total_steps - 1) // eval_interval - start_step // eval_interval \
        if eval_interval else 0
    return every + 1


# ============================================================================ choosing
def probe_cuda_batch(candidates: list[int], try_step: Callable[[int], None],
                     *, empty_cache: Callable[[], None] | None = None) -> tuple[int, list]:
    """The first (largest) micro-batch whose real forward/backward/optimizer step does not
    raise ``torch.cuda.OutOfMemoryError``; on one, free the cache and try the next (about
    half). Raises the last error when even a micro-batch of the smallest size does not fit."""
    import torch

    empty_cache = empty_cache or torch.cuda.empty_cache
    tried: list[dict[str, Any]] = []
    for i, b in enumerate(candidates):
        try:
            try_step(b)
        except torch.cuda.OutOfMemoryError:
            tried.append({"batch_size": b, "fits": False})
            empty_cache()
            if i == len(candidates) - 1:
                raise
            continue
        tried.append({"batch_size": b, "fits": True})
        return b, tried
    raise ValueError("no candidate micro-batch")


def pick_cpu_batch(candidates: list[int], *, memory_for: Callable[[int], int],
                   available: int, tokens_per_s: Callable[[int], float],
                   max_measured: int = 4) -> tuple[int, list]:
    """Among the micro-batches whose estimated memory fits ``HEADROOM`` of the free RAM,
    the largest one that is faster (tokens/s, by ``BETTER``) than the next smaller one: from
    the largest fitting down, stop at the first that beats its smaller neighbour."""
    tried: list[dict[str, Any]] = []
    fits = []
    for b in candidates:
        need = memory_for(b)
        ok = need <= HEADROOM * available
        tried.append({"batch_size": b, "memory_bytes": need, "fits": ok})
        if ok:
            fits.append(b)
    if not fits:
        return candidates[-1], tried
    rates: dict[int, float] = {}

    def rate(b: int) -> float:
        if b not in rates:
            rates[b] = tokens_per_s(b)
            next(t for t in tried if t["batch_size"] == b)["tokens_per_s"] = rates[b]
        return rates[b]

    fits = fits[:max_measured]
    for big, small in itertools.pairwise(fits):
        if rate(big) > BETTER * rate(small):
            return big, tried
    return fits[-1], tried


# ============================================================================ measuring
def time_steps(parts, *, warmup: int = WARMUP_STEPS, timed: int = TIMED_STEPS,
               min_seconds: float = 0.0, max_steps: int = MAX_TIMED_STEPS,
               clock: Callable[[], float] = time.perf_counter) -> tuple[list[float], float]:
    """Run ``warmup`` untimed real optimizer steps (``TrainingParts.train_step``: every
    micro-batch, backward, clip, AdamW), then ``timed`` timed ones, and more (up to
    ``max_steps``) while they took less than ``min_seconds`` in all. Returns each timed
    step's seconds and the seconds of them all."""
    for _ in range(warmup):
        parts.train_step(read=False)
    parts.sync()
    start, times = clock(), []
    while len(times) < timed or (min_seconds > 0 and len(times) < max_steps and
                                 clock() - start < min_seconds):
        t0 = clock()
        parts.train_step(read=False)
        parts.sync()
        times.append(clock() - t0)
    return times, clock() - start


def measure_step_time(parts, *, warmup: int = WARMUP_STEPS, timed: int = TIMED_STEPS,
                      min_seconds: float = 0.0, max_steps: int = MAX_TIMED_STEPS,
                      median: bool = False,
                      clock: Callable[[], float] = time.perf_counter) -> float:
    """Mean seconds per step of ``time_steps``; ``median``: the median step instead, for
    comparing micro-batches on a busy machine (one descheduled step does not decide)."""
    times, total = time_steps(parts, warmup=warmup, timed=timed, min_seconds=min_seconds,
                              max_steps=max_steps, clock=clock)
    return statistics.median(times) if median else total / max(1, len(times))


def measure_eval_time(parts, clock: Callable[[], float] = time.perf_counter) -> float:
    t0 = clock()
    parts.evaluate()
    parts.sync()
    return clock() - t0


def parts_memory(parts, batch: int) -> MemoryEstimate:
    from llm_trainer.model.lora import trainable
    from llm_trainer.training.optim import muon_param_count

    n_train, n_all = trainable(parts.model)
    s = parts.shape
    return memory_estimate(params=n_all, trainable=n_train, batch=batch, seq=s.block_size,
                           n_layer=s.n_layer, n_embd=s.n_embd, n_head=s.n_head,
                           vocab=s.vocab_size, precision=parts.precision.name,
                           dropout=s.dropout, device_type=parts.device.type,
                           muon=muon_param_count(parts.optimizer))


def available_memory(parts) -> int:
    """Free bytes where the activations live: the GPU's free memory plus what torch already
    holds of it, or the available RAM."""
    if parts.device.type == "cuda":
        torch = parts.torch
        free, _total = torch.cuda.mem_get_info(parts.device.device)
        return int(free + torch.cuda.memory_reserved(parts.device.device))
    import psutil

    return int(psutil.virtual_memory().available)


def choose_batch(parts) -> tuple[BatchChoiceView, Any]:
    """The largest micro-batch that fits, keeping the configured global batch
    (``batch_size x grad_accum``) with a raised accumulation. CUDA: real steps, halving on
    out-of-memory. CPU (and others): the memory estimate against the available RAM, then
    measured tokens/s. Returns the choice and the parts on it (at the step they started:
    the probe steps do not move the plan)."""
    import copy

    cfg = parts.config.train
    saved_state = copy.deepcopy(parts.state)  # the probe steps must not move the plan
    global_batch = cfg.batch_size * cfg.grad_accum
    candidates = micro_batch_candidates(global_batch)
    seq = parts.shape.block_size
    if parts.device.type == "cuda":
        def try_step(b: int) -> None:
            probe = parts.with_micro_batch(b, 1)
            probe.train_step(read=False)
            probe.sync()

        batch, tried = probe_cuda_batch(candidates, try_step)
        method = "cuda probe"
    else:
        def rate(b: int) -> float:
            return b * seq / measure_step_time(parts.with_micro_batch(b, 1),
                                               warmup=PROBE_WARMUP, timed=PROBE_TIMED,
                                               min_seconds=PROBE_SECONDS, median=True)

        held = parts_memory(parts, 0).weights  # already allocated (AdamW's state is not)
        batch, tried = pick_cpu_batch(
            candidates, memory_for=lambda b: parts_memory(parts, b).total,
            available=available_memory(parts) + held, tokens_per_s=rate)
        method = f"{parts.device.type} memory and throughput"
    choice = BatchChoiceView(batch, global_batch // batch, global_batch, method, tried)
    parts.state = saved_state
    return choice, parts.with_micro_batch(choice.batch_size, choice.grad_accum)


def prepared_parts(job):
    """``build_parts(job)`` exactly as for training (device, data, model, optimizer, state),
    with nothing announced and nothing written."""
    from llm_trainer.training.device import tune_allocator
    from llm_trainer.training.parts import build_parts

    tune_allocator()  # as the worker does: it changes a CPU step's time by ~25%
    return build_parts(job)


def estimate_run(job, *, timed: int = TIMED_STEPS, warmup: int = WARMUP_STEPS,
                 auto_batch: bool = False) -> DryRunReport:
    """What a run of ``job`` would be: config, data, model, steps, memory and (``timed`` >
    0) time, measured on this machine. Writes no run and no checkpoint (a LoRA import's base
    weights go to a temporary folder); the token cache under ``<home>/data`` may fill."""
    import dataclasses

    with tempfile.TemporaryDirectory(prefix="llm-trainer-estimate-") as tmp:
        parts = prepared_parts(dataclasses.replace(job, model_dir=Path(tmp)))
        try:
            choice = None
            if auto_batch:  # the run will use it: so does everything below
                choice, parts = choose_batch(parts)
            return describe(parts, choice, timed=timed, warmup=warmup)
        finally:
            parts.dist.shutdown()


def choose_batch_for(job) -> BatchChoiceView:
    """``choose_batch`` on parts built for ``job`` (then thrown away; nothing written)."""
    import dataclasses

    with tempfile.TemporaryDirectory(prefix="llm-trainer-estimate-") as tmp:
        parts = prepared_parts(dataclasses.replace(job, model_dir=Path(tmp)))
        try:
            return choose_batch(parts)[0]
        finally:
            parts.dist.shutdown()
            if parts.device.type == "cuda":  # leave the GPU to the worker
                torch = parts.torch
                del parts
                torch.cuda.empty_cache()


def describe(parts, choice: BatchChoiceView | None, *, timed: int, warmup: int) -> DryRunReport:
    """The dry-run report of built ``parts`` (``kind``, ``model`` and ``notes`` are the
    launch plan's: the service fills them in)."""
    from llm_trainer.model.lora import trainable

    plan, s, cfg = parts.plan, parts.state, parts.config
    start, total = s.step, parts.total_steps
    n_train, n_all = trainable(parts.model)
    mem = parts_memory(parts, plan.batch_size)
    time_view = None
    if timed > 0 and total > start:
        times, seconds = time_steps(parts, warmup=warmup, timed=timed,
                                    min_seconds=MIN_TIMED_S)
        step_time = seconds / len(times)
        evals = evals_in_run(start_step=start, total_steps=total,
                             eval_interval=cfg.train.eval_interval)
        eval_time = measure_eval_time(parts) if evals else None
        time_view = DryRunTime(**run_times(step_time_s=step_time, steps=total - start,
                                           steps_per_epoch=plan.steps_per_epoch,
                                           eval_time_s=eval_time, evals=evals),
                               tokens_per_s=plan.tokens_per_step / step_time,
                               warmup_steps=warmup, timed_steps=len(times))
    return DryRunReport(
        kind="", model=None, notes=[], config=cfg.to_dict(), device=parts.device.to_json(),
        precision=parts.precision.name,
        dataset=DryRunData(spec=parts.data.source.spec, train_tokens=len(parts.data.train),
                           val_tokens=len(parts.data.val)),
        parameters=n_all, trainable_parameters=n_train,
        architecture=parts.shape.to_json(), batch_size=plan.batch_size,
        grad_accum=plan.grad_accum, global_batch=plan.seqs_per_step,
        tokens_per_step=plan.tokens_per_step, steps_per_epoch=plan.steps_per_epoch,
        start_step=start, total_steps=total, steps=total - start,
        batch_choice=choice,
        memory=DryRunMemory(**mem.to_json(), device_type=parts.device.type,
                            available=available_memory(parts)),
        time=time_view)


# ============================================================================ checking
class EstimateCheck(Callback):
    """During a real run: the same step-time measurement as the dry run (``WARMUP_STEPS``
    untimed, then the mean of at least ``TIMED_STEPS`` and ``MIN_TIMED_S``), taken from the
    run's own first steps and
    multiplied out to the plan; at the end, ``estimate_error`` = actual mean step time /
    estimated - 1. ``report(**fields)`` stores both (the worker: state.json)."""

    def __init__(self, report: Callable[..., None], *, warmup: int = WARMUP_STEPS,
                 timed: int = TIMED_STEPS, min_seconds: float = MIN_TIMED_S,
                 max_steps: int = MAX_TIMED_STEPS) -> None:
        self.report, self.warmup, self.timed = report, warmup, timed
        self.min_seconds, self.max_steps = min_seconds, max_steps
        self.start_step: int | None = None
        self.mark: float | None = None
        self.estimate: dict[str, Any] | None = None

    def on_start(self, trainer, info) -> None:
        self.start_step = info.start_step

    def on_step_end(self, trainer, stats) -> None:
        if self.start_step is None or self.estimate is not None:
            return
        done = stats.step - self.start_step
        if done == self.warmup:
            self.mark = trainer.train_time
        elif done >= self.warmup + self.timed and self.mark is not None and (
                trainer.train_time - self.mark >= self.min_seconds or
                done - self.warmup >= self.max_steps or stats.step >= trainer.total_steps):
            timed = done - self.warmup
            step_time = (trainer.train_time - self.mark) / timed
            steps = trainer.total_steps - self.start_step
            self.estimate = {
                "step_time_s": step_time, "run_steps": steps,
                "train_time_s": step_time * steps,
                "epoch_time_s": step_time * trainer.parts.plan.steps_per_epoch,
                "warmup_steps": self.warmup, "timed_steps": timed}
            self.report(estimate=self.estimate)

    def on_end(self, trainer, result) -> None:
        if self.estimate is None or result is None or self.start_step is None:
            return
        steps = result.step - self.start_step
        if steps <= 0 or not getattr(trainer, "train_time", 0):
            return
        actual = trainer.train_time / steps
        self.report(estimate_error=estimate_error(actual, self.estimate["step_time_s"]),
                    actual_step_time_s=actual)


def estimate_error(actual: float, estimated: float) -> float | None:
    """actual / estimated - 1 (+0.10: the run was 10% slower than estimated)."""
    if not estimated or not math.isfinite(actual):
        return None
    return actual / estimated - 1.0
