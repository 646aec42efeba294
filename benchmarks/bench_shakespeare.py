#!/usr/bin/env python
"""Benchmark the ``shakespeare-char`` preset on this machine (CPU), optionally against nanoGPT.

What it measures, in this order (each part can be skipped):

1. **matmul peak**: fp32 GFLOP/s of square matmuls (1024 and 2048) with torch's default
   threads; the best one is this machine's peak, the denominator of the model FLOP fraction.
2. **training throughput**: ``llm-trainer train --foreground`` for ``--steps`` steps with no
   evaluation, ``--rounds`` times. Tokens/s come from the wall-clock spacing of the run's
   ``metrics.jsonl`` records (bookkeeping included), median of 10-step windows after the first.
   With ``--nanogpt PATH`` nanoGPT's README CPU recipe (same model and batch shape, taken
   from the preset) runs for the same number of iterations, alternating with ours, and the
   tokens/s ratio ours/nanoGPT is reported. The machine is shared and noisy: only ratios
   measured within one invocation are meaningful.
3. **time to target**: the whole ``llm-trainer train --preset shakespeare-char ...
   --foreground`` command, from launch (start-up included) to the first checkpoint with a
   *full-split* val loss <= target (every val token once, ``llm-trainer eval``'s computation,
   scored after the run; the in-run estimate decides nothing), and to the command's exit.
   ``--set`` applies extra settings to this run.
4. **generation**: tokens/s of ``TextGenerator.generate_ids`` (KV cache, temperature 0.8,
   top-k 200) for 500 and 2000 new tokens, with the model trained in 3 (or in 2).
5. **bookkeeping**: the same steps in-process with a no-op reporter and with the worker's
   ``RunReporter`` (state.json, metrics.jsonl, train.log, telemetry), alternating; the %
   difference of the training loop's wall time (fastest run of each kind: background load
   only adds time), and the reporter's own share of the loop within each run ("in-run":
   loop wall time minus the steps' own time, which is immune to background load).
6. **CLI latency**: ``llm-trainer --help``, ``llm-trainer train --help`` and
   ``llm-trainer status`` with 200 fake runs on disk.

Everything is written to a scratch home (a temporary folder unless ``--home``), never to the
repository. Run it on an otherwise idle machine, one benchmark at a time:

    .venv/bin/python benchmarks/bench_shakespeare.py --nanogpt ../nanogpt --write-results

``--write-results`` appends a dated section to ``benchmarks/RESULTS.md``; ``--json PATH``
writes every raw figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

from llm_trainer.training.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
PRESET = "shakespeare-char"
WINDOW = 10  # steps per throughput window (the preset's log interval)
SKIP_WINDOWS = 1  # warm-up windows left out of throughput medians
TAG = time.strftime("%m%d-%H%M%S")  # makes model names unique when --home is reused

# what the project promises on this kind of machine (2 cores, no GPU)
TARGETS = {
    "ratio": 1.25,  # training tokens/s ours / nanoGPT, same shapes (aim: 1.5)
    "target_wall_s": 90.0,  # launch -> val loss <= target, whole command
    "gen_tps_2000": 1000.0,  # generation tokens/s over 2000 new tokens
    "bookkeeping_pct": 3.0,  # RunReporter vs no-op reporter
    "status_s": 0.5,  # `llm-trainer status` with 200 runs
    "help_s": 0.5,  # `llm-trainer --help`, `llm-trainer train --help`
}

NANOGPT_ITER = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
VAL_LINE = re.compile(r"step (\d+): val loss ([\d.]+)")
RUN_LINE = re.compile(r"^run (\S+) \(pid (\d+)\)")


# ============================================================================ helpers


def say(message: str = "") -> None:
    print(message, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def llm_trainer_exe() -> list[str]:
    """The console script next to this interpreter (the venv's), else ``-m llm_trainer``."""
    exe = Path(sys.executable).parent / "llm-trainer"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "llm_trainer"]


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


class CpuWatch:
    """How much CPU other processes used (and the hypervisor stole) while a section ran, as a
    % of all cores: the noise indicator printed next to every figure. Our own share is this
    process plus its waited-for descendants (the CLI reaps its worker, we reap the CLI)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.t0 = time.perf_counter()
        self.sys0 = psutil.cpu_times()
        self.own0 = self._own()

    @staticmethod
    def _own() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
            resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    @staticmethod
    def _busy(t: Any) -> float:
        return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))

    def stop(self) -> dict[str, float]:
        sys1 = self._psutil.cpu_times()
        capacity = (time.perf_counter() - self.t0) * (os.cpu_count() or 1)
        other = self._busy(sys1) - self._busy(self.sys0) - (self._own() - self.own0)
        steal = getattr(sys1, "steal", 0.0) - getattr(self.sys0, "steal", 0.0)
        return {"other_pct": max(0.0, 100 * other / capacity),
                "steal_pct": max(0.0, 100 * steal / capacity)}


def noise(watch: dict[str, float]) -> str:
    return f"others {watch['other_pct']:.0f}% CPU, steal {watch['steal_pct']:.0f}%"


def windows_tps(points: list[tuple[int, float]], tokens_per_step: int,
                skip: int = SKIP_WINDOWS) -> list[float]:
    """Tokens/s of consecutive (step, time) points, the first ``skip`` windows left out."""
    out = []
    for (s0, t0), (s1, t1) in pairwise(points):
        if t1 > t0 and s1 > s0:
            out.append((s1 - s0) * tokens_per_step / (t1 - t0))
    return out[skip:]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def preset_config(data: Path, **overrides: Any):
    from llm_trainer.config import load_config

    return load_config(preset=PRESET).replace(**{"data.dataset": str(data), **overrides})


# ============================================================================ 1. matmul peak


def matmul_gflops(n: int, dtype: Any, seconds: float) -> float:
    """Best-of-batches GFLOP/s of ``n`` x ``n`` matmuls in ``dtype``."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    best = 0.0
    deadline = time.perf_counter() + seconds
    reps = max(1, int(2e9 / (2 * n ** 3)))  # ~2 GFLOP per timed batch
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048), seconds: float = 1.5
                ) -> dict[str, Any]:
    """fp32 GFLOP/s per size with torch's default threads; the best size is this machine's
    peak. bf16 (1024) is measured too: CPUs with AVX512-BF16 or AMX run it much faster."""
    import torch

    out: dict[str, Any] = {"threads": torch.get_num_threads(),
                           "gflops": {n: matmul_gflops(n, torch.float32, seconds) for n in sizes}}
    out["peak_gflops"] = max(out["gflops"].values())
    out["bf16_gflops"] = matmul_gflops(1024, torch.bfloat16, seconds)
    return out


# ============================================================================ 2. throughput


def run_ours(home: Path, data: Path, steps: int, name: str) -> dict[str, Any]:
    """``llm-trainer train --foreground`` for ``steps`` steps without evaluations; returns the
    run's record of progress (tokens/s from record spacing) and where it lives."""
    cmd = [*llm_trainer_exe(), "--home", str(home), "train", "--preset", PRESET,
           "--dataset", str(data), "--foreground", "--name", name, "--max-steps", str(steps),
           "--sample", "0", "--set", "train.eval_interval=0",
           "--set", f"train.log_interval={WINDOW}"]
    watch = CpuWatch()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=home, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"llm-trainer train failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
                           f"\n{proc.stdout[-2000:]}")
    run_id = next(m.group(1) for m in map(RUN_LINE.match, proc.stdout.splitlines()) if m)
    run_dir = home / "runs" / run_id
    meta = json.loads((run_dir / "meta.json").read_text())
    records = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    tokens_per_step = int(meta["tokens_per_step"])
    points = [(r["step"], r["time"]) for r in records]
    tps = windows_tps(points, tokens_per_step)
    return {"tokens_per_s": median(tps), "best_tokens_per_s": quantile(tps, 0.9),
            "windows": len(tps), "wall_s": wall, "noise": watch.stop(),
            "tokens_per_step": tokens_per_step, "run_dir": str(run_dir),
            "architecture": meta.get("architecture"), "parameters": meta.get("parameters")}


def nanogpt_command(nanogpt: Path, steps: int, out_dir: Path, cfg) -> list[str]:
    """nanoGPT's README CPU recipe with the preset's model and batch shape, ``steps`` iters
    (its only evaluation is the one at iteration 0)."""
    m, t = cfg.model, cfg.train
    return [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
            "--compile=False", f"--eval_iters={t.eval_batches}", "--log_interval=1",
            f"--block_size={m.block_size}", f"--batch_size={t.batch_size}",
            f"--n_layer={m.n_layer}", f"--n_head={m.n_head}", f"--n_embd={m.n_embd}",
            f"--max_iters={steps}", f"--lr_decay_iters={steps}", f"--dropout={m.dropout}",
            f"--eval_interval={steps + 1}", f"--out_dir={out_dir}"]


def run_nanogpt(nanogpt: Path, steps: int, out_dir: Path, cfg) -> dict[str, Any]:
    cmd = nanogpt_command(nanogpt, steps, out_dir, cfg)
    watch = CpuWatch()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=nanogpt, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"nanoGPT failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    iters = [(int(m.group(1)), float(m.group(3)) / 1000)
             for m in map(NANOGPT_ITER.match, proc.stdout.splitlines()) if m]
    tokens_per_step = cfg.train.batch_size * cfg.model.block_size
    # the same statistic as ours: 10-iteration windows, the first one left out
    points, clock = [(0, 0.0)], 0.0
    for i, (_, dt) in enumerate(iters[1:], start=1):  # iter 0 includes its evaluation
        clock += dt
        if i % WINDOW == 0:
            points.append((i, clock))
    tps = windows_tps(points, tokens_per_step)
    return {"tokens_per_s": median(tps), "best_tokens_per_s": quantile(tps, 0.9),
            "windows": len(tps), "wall_s": wall, "noise": watch.stop(),
            "iterations": len(iters), "command": " ".join(cmd[1:])}


def throughput(home: Path, data: Path, steps: int, rounds: int, nanogpt: Path | None
               ) -> dict[str, Any]:
    cfg = preset_config(data)
    ours, theirs = [], []
    for r in range(rounds):
        # alternate which goes first so a drift in background load hits both alike
        order = ["ours", "nanogpt"] if r % 2 == 0 else ["nanogpt", "ours"]
        for who in order:
            if who == "ours":
                res = run_ours(home, data, steps, f"bench-tput-{TAG}-{r + 1}")
                ours.append(res)
                say(f"  round {r + 1}: ours    {res['tokens_per_s']:>8,.0f} tokens/s "
                    f"({res['wall_s']:.1f} s for the whole command; {noise(res['noise'])})")
            elif nanogpt is not None:
                res = run_nanogpt(nanogpt, steps, home / "nanogpt-out", cfg)
                theirs.append(res)
                say(f"  round {r + 1}: nanoGPT {res['tokens_per_s']:>8,.0f} tokens/s "
                    f"({res['wall_s']:.1f} s for the whole command; {noise(res['noise'])})")
    out: dict[str, Any] = {"steps": steps, "rounds": rounds, "ours": ours, "nanogpt": theirs}
    out["ours_tps"] = median([r["tokens_per_s"] for r in ours])
    out["tokens_per_step"] = ours[0]["tokens_per_step"]
    out["ms_per_step"] = 1000 * out["tokens_per_step"] / out["ours_tps"]
    if theirs:
        out["nanogpt_tps"] = median([r["tokens_per_s"] for r in theirs])
        out["nanogpt_ms_per_step"] = 1000 * out["tokens_per_step"] / out["nanogpt_tps"]
        out["round_ratios"] = [a["tokens_per_s"] / b["tokens_per_s"]
                               for a, b in zip(ours, theirs, strict=False)]
        # the headline is the median of the paired rounds (each pair ran back to back, so a
        # slow spell of the shared host hits both sides); the ratio of medians is kept too
        out["ratio"] = median(out["round_ratios"])
        out["ratio_of_medians"] = out["ours_tps"] / out["nanogpt_tps"]
        # the fastest windows are the least disturbed by other processes: a cross-check
        out["best_ratio"] = (median([r["best_tokens_per_s"] for r in ours])
                             / median([r["best_tokens_per_s"] for r in theirs]))
        out["nanogpt_command"] = theirs[0]["command"]
    return out


def model_flops(architecture: dict[str, Any]) -> dict[str, float]:
    from llm_trainer.model.gpt import GPT, GPTShape

    model = GPT(GPTShape(**architecture))
    return {"flops_per_token": float(model.flops_per_token()),
            "six_n": 6.0 * model.num_params(non_embedding=False),
            "parameters": model.num_params(non_embedding=False)}


# ============================================================================ 3. time to target


def time_to_target(home: Path, data: Path, target: float, sets: list[str], name: str
                   ) -> dict[str, Any]:
    """The whole training command, from launch to the first val loss <= ``target``."""
    cmd = [*llm_trainer_exe(), "--home", str(home), "train", "--preset", PRESET,
           "--dataset", str(data), "--foreground", "--name", name, "--sample", "0",
           "--set", "train.keep_last=1000"]  # the whole preset; every checkpoint is scored
    for item in sets:
        cmd += ["--set", item]
    say("  $ " + " ".join(["llm-trainer", *cmd[len(llm_trainer_exe()):]]))
    evals_seen: list[tuple[int, float, float]] = []  # step, val loss, seconds since launch
    run_id = None
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        now = time.time() - t0
        tail = [*tail[-20:], line.rstrip()]
        if run_id is None and (m := RUN_LINE.match(line)):
            run_id = m.group(1)
        if m := VAL_LINE.search(line):
            evals_seen.append((int(m.group(1)), float(m.group(2)), now))
            say(f"  {now:6.1f} s  step {m.group(1):>5}: val loss {m.group(2)}")
    code = proc.wait()
    wall = time.time() - t0
    if code != 0 or run_id is None:
        raise RuntimeError(f"training command failed ({code}):\n" + "\n".join(tail))
    run_dir = home / "runs" / run_id
    evals = [r for r in read_metrics(run_dir) if r["kind"] == "eval"]
    state = json.loads((run_dir / "state.json").read_text())
    meta = json.loads((run_dir / "meta.json").read_text())
    # "reached" is decided by the full split (every val token once) of each saved
    # checkpoint, not by the in-run estimate (eval_batches random batches)
    from llm_trainer.training.evaluate import evaluate_checkpoint

    full = {r["step"]: evaluate_checkpoint(r["path"], split="val").loss
            for r in read_metrics(run_dir) if r["kind"] == "checkpoint"}
    for r in evals:
        r["estimate"], r["val_loss"] = r["val_loss"], full.get(r["step"], float("inf"))
    hit = next((r for r in evals if r["val_loss"] <= target), None)
    printed = next((e for e in evals_seen if e[0] == (hit or {}).get("step")), None)
    train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    first = train[0] if train else None
    return {
        "target": target, "sets": sets, "wall_s": wall, "run_id": run_id,
        "reached": hit is not None,
        "step": hit["step"] if hit else None,
        "val_loss": hit["val_loss"] if hit else min((r["val_loss"] for r in evals), default=None),
        "to_target_s": hit["time"] - t0 if hit else None,  # metrics record written
        "to_target_printed_s": printed[2] if printed else None,  # the CLI printed the line
        "evals": [(r["step"], r["val_loss"], r["time"] - t0) for r in evals],
        "estimates": [(r["step"], r["estimate"]) for r in evals],
        "startup_s": (first["time"] - t0 - first["elapsed_s"]) if first else None,
        "final_step": state.get("step"), "checkpoint": state.get("checkpoint"),
        "config": {k: meta["config"]["train"][k] for k in (
            "max_steps", "lr", "warmup_steps", "min_lr_ratio", "beta2", "weight_decay",
            "eval_interval", "eval_batches")},
    }


# ============================================================================ 4. generation


def generation_speed(checkpoint: Path, lengths: tuple[int, ...] = (500, 2000), repeats: int = 3
                     ) -> dict[str, Any]:
    """Median tokens/s of ``generate_ids`` per length (model loading not counted)."""
    from llm_trainer.inference.generate import GenerationSettings, TextGenerator

    gen = TextGenerator.from_checkpoint(checkpoint)
    ids, _ = gen.prompt_ids("")
    list(gen.generate_ids(ids, GenerationSettings(max_new_tokens=100, seed=0)))  # warm up
    out: dict[str, Any] = {"checkpoint": str(checkpoint)}
    for n in lengths:
        rates = []
        for rep in range(repeats):
            settings = GenerationSettings(max_new_tokens=n, temperature=0.8, top_k=200, seed=rep)
            t0 = time.perf_counter()
            count = sum(1 for _ in gen.generate_ids(ids, settings))
            rates.append(count / (time.perf_counter() - t0))
        out[n] = median(rates)
    return out


# ============================================================================ 5. bookkeeping


class TimedReporter(Callback):
    """Forwards to ``inner`` and notes the loop's wall time (on_start -> last step's
    progress) and the steps' own time (``train_time_s``), so the reporter's share is
    ``loop - steps``. The final evaluation and checkpoint are outside the window."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.t_start: float | None = None
        self.t_end: float | None = None
        self.step_time = 0.0

    def on_log(self, message: str) -> None:
        self.inner.on_log(message)

    def on_start(self, trainer, info) -> None:
        self.inner.on_start(trainer, info)
        self.t_start = time.perf_counter()

    def on_progress(self, trainer, progress) -> None:
        self.inner.on_progress(trainer, progress)
        if progress.step >= progress.total_steps:
            self.t_end = time.perf_counter()
            self.step_time = progress.train_time_s

    def on_eval(self, trainer, result) -> None:
        self.inner.on_eval(trainer, result)

    def on_checkpoint(self, trainer, result) -> None:
        self.inner.on_checkpoint(trainer, result)

    @property
    def loop_s(self) -> float:
        assert self.t_start is not None and self.t_end is not None
        return self.t_end - self.t_start


class AlternatingReporter(TimedReporter):
    """Hands every other progress report to the RunReporter (state.json, metrics.jsonl,
    telemetry) and drops the rest, timing each 10-step window together with its report. With
    and without bookkeeping then interleave every ~0.3 s, so the host's slow spells (seconds
    long) hit both alike: the cleanest "same steps with it disabled" on a noisy machine."""

    SKIP = 2  # the first windows include one-time warm-up

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.windows: dict[str, list[float]] = {"on": [], "off": []}
        self.count = 0
        self.last: float | None = None

    def on_start(self, trainer, info) -> None:
        super().on_start(trainer, info)
        self.last = time.perf_counter()

    def on_progress(self, trainer, progress) -> None:
        active = self.count % 2 == 0
        if active:
            self.inner.on_progress(trainer, progress)
        now = time.perf_counter()
        if self.count >= self.SKIP and self.last is not None:
            self.windows["on" if active else "off"].append(now - self.last)
        self.last = now
        self.count += 1
        if progress.step >= progress.total_steps:
            self.t_end = now
            self.step_time = progress.train_time_s


def _train_in_process(home: Path, cfg, name: str, worker_reporter: bool,
                      alternate: bool = False) -> TimedReporter:
    from llm_trainer.store.models import ModelStore
    from llm_trainer.store.runs import RunStore
    from llm_trainer.training.parts import TrainingJob
    from llm_trainer.training.trainer import train
    from llm_trainer.worker import RunReporter

    models, runs = ModelStore(home), RunStore(home)
    rec = models.create(name, default_base="bench")
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    inner: Any = Callback()  # the do-nothing callback
    if worker_reporter:
        state = {"status": "running", "model_id": rec.id, "model_name": rec.name,
                 "created_at": time.time(), "step": 0}
        runs.create(run_id, {"model": {"id": rec.id, "name": rec.name},
                             "config": cfg.to_dict()}, state)
        inner = RunReporter(run_id, runs, models, rec.id, dict(state))
    reporter = AlternatingReporter(inner) if alternate else TimedReporter(inner)
    try:
        train(TrainingJob(config=cfg, home=home, model_dir=rec.path, run_id=run_id),
              [reporter])
    finally:
        if worker_reporter:
            inner.close()
    return reporter


def bookkeeping(home: Path, data: Path, steps: int, rounds: int) -> dict[str, Any]:
    """No-op reporter vs the worker's RunReporter on the same steps, alternating (ABBA)."""
    from llm_trainer.worker import tune_allocator

    tune_allocator()  # the worker does this before training; it changes step time a lot
    cfg = preset_config(data, **{"train.max_steps": steps, "train.eval_interval": 0,
                                 "train.log_interval": WINDOW})
    # the first training in a process pays one-time costs (kernel selection, heap growth)
    warmup = cfg.replace(**{"train.max_steps": 3 * WINDOW})
    _train_in_process(home, warmup, f"bench-bk-{TAG}-warmup", False)
    loops: dict[str, list[float]] = {"null": [], "worker": []}
    own: dict[str, list[float]] = {"null": [], "worker": []}
    for r in range(rounds):
        order = ["null", "worker"] if r % 2 == 0 else ["worker", "null"]
        watch = CpuWatch()
        for kind in order:
            rep = _train_in_process(home, cfg, f"bench-bk-{TAG}-{kind}-{r + 1}",
                                   kind == "worker")
            loops[kind].append(rep.loop_s)
            own[kind].append((rep.loop_s - rep.step_time) / rep.step_time * 100)
        say(f"  round {r + 1}: no-op {loops['null'][-1]:.2f} s, RunReporter "
            f"{loops['worker'][-1]:.2f} s for {steps} steps ({noise(watch.stop())})")
    # the headline: one run whose 10-step windows alternate with and without bookkeeping;
    # whole-run A/B pairs (ABBA) and the reporter's own time inside runs are cross-checks
    alt = _train_in_process(home, cfg.replace(**{"train.max_steps": steps * rounds}),
                            f"bench-bk-{TAG}-alternating", True, alternate=True)
    on, off = median(alt.windows["on"]), median(alt.windows["off"])
    null_s, worker_s = min(loops["null"]), min(loops["worker"])
    paired = [(w / n - 1) * 100 for w, n in zip(loops["worker"], loops["null"], strict=True)]
    return {"steps": steps, "rounds": rounds, "null_s": null_s, "worker_s": worker_s,
            "loops": loops, "ab_pct": (on / off - 1) * 100, "paired_pct": paired,
            "paired_median_pct": median(paired), "windows": len(alt.windows["on"]) +
            len(alt.windows["off"]), "fastest_pct": (worker_s / null_s - 1) * 100,
            "ab_median_pct": (median(loops["worker"]) / median(loops["null"]) - 1) * 100,
            "in_run_pct": median(own["worker"]) - median(own["null"]),
            "tokens_per_s_null": steps * cfg.train.batch_size * cfg.model.block_size / null_s}


# ============================================================================ 6. CLI latency


def make_fake_runs(home: Path, count: int = 200) -> None:
    from llm_trainer.store.runs import RunStore

    runs = RunStore(home)
    now = time.time()
    for i in range(1, count + 1):
        run_id = f"20261101-000000-fake-{i:03d}"
        started = now - 86400 + i * 60
        meta = {"created_at": started, "kind": "train", "command": ["llm-trainer", "train"],
                "model": {"id": "x", "name": "fake"}, "requested_device": "cpu"}
        state = {"status": "completed", "model_id": "x", "model_name": "fake",
                 "created_at": started, "started_at": started, "ended_at": started + 50,
                 "updated_at": started + 50, "step": 100, "total_steps": 100, "epoch": 0.08,
                 "loss": 2.1, "val_loss": 2.2, "best_val_loss": 2.2, "device": "cpu",
                 "tokens_per_s": 20000.0, "reason": "reached the planned steps"}
        runs.create(run_id, meta, state)


def time_command(cmd: list[str], cwd: Path, repeats: int) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
    return {"median_s": median(times), "min_s": min(times), "times": times}


def cli_latency(home: Path, repeats: int = 5) -> dict[str, Any]:
    fake = home / f"fake-runs-{TAG}"
    make_fake_runs(fake)
    exe = llm_trainer_exe()
    return {
        "help": time_command([*exe, "--help"], home, repeats),
        "train_help": time_command([*exe, "train", "--help"], home, repeats),
        "status": time_command([*exe, "--home", str(fake), "status"], home, repeats),
    }


# ============================================================================ report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _check(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def summary_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, value, target, verdict) rows."""
    rows: list[tuple[str, str, str, str]] = []
    mm = res.get("matmul")
    peak = mm["peak_gflops"] if mm else None
    if mm:
        sizes = ", ".join(f"{n}: {g:.0f}" for n, g in mm["gflops"].items())
        rows.append(("fp32 matmul GFLOP/s (peak)", f"{peak:.0f} ({sizes}; "
                     f"{mm['threads']} threads)", "", ""))
        rows.append(("bf16 matmul GFLOP/s (1024)", f"{mm['bf16_gflops']:.0f}", "", ""))
    tp = res.get("throughput")
    if tp:
        rows.append(("training tokens/s (ours)", f"{tp['ours_tps']:,.0f}", "", ""))
        rows.append(("ms per step (ours)", f"{tp['ms_per_step']:.1f}", "", ""))
        flops = res.get("flops")
        if flops and peak:
            achieved = tp["ours_tps"] * flops["flops_per_token"] / 1e9
            rows.append(("model GFLOP/s, fraction of matmul peak",
                         f"{achieved:.1f} ({achieved / peak:.0%}; "
                         f"{flops['flops_per_token'] / 1e6:.2f} MFLOP/token)", "", ""))
        if "ratio" in tp:
            rows.append(("training tokens/s (nanoGPT)", f"{tp['nanogpt_tps']:,.0f} "
                         f"({tp['nanogpt_ms_per_step']:.1f} ms/iter)", "", ""))
            ratios = ", ".join(f"{x:.2f}" for x in tp["round_ratios"])
            rows.append(("tokens/s ratio ours/nanoGPT", f"{tp['ratio']:.2f}x median of paired "
                         f"rounds ({ratios}; ratio of medians {tp['ratio_of_medians']:.2f}x; "
                         f"fastest windows: {tp['best_ratio']:.2f}x)",
                         f">= {TARGETS['ratio']:.2f}x", _check(tp["ratio"] >= TARGETS["ratio"])))
    runs = res.get("target")
    if runs:
        tt = typical_target_run(runs)
        if tt["reached"]:
            value = (f"{tt['to_target_s']:.1f} s (step {tt['step']}, val {tt['val_loss']:.4f}; "
                     f"start-up {_fmt(tt['startup_s'], '.1f')} s; printed at "
                     f"{_fmt(tt['to_target_printed_s'], '.1f')} s; command {tt['wall_s']:.1f} s)")
        else:
            value = f"not reached (best {_fmt(tt['val_loss'], '.4f')}; {tt['wall_s']:.1f} s)"
        if len(runs) > 1:
            value += " median of " + ", ".join(
                _fmt(r["to_target_s"], ".1f") if r["reached"] else "missed" for r in runs)
        ok = all(r["reached"] for r in runs) and tt["to_target_s"] <= TARGETS["target_wall_s"]
        rows.append((f"launch -> val loss <= {tt['target']:g}", value,
                     f"<= {TARGETS['target_wall_s']:.0f} s", _check(ok)))
    gen = res.get("generation")
    if gen:
        for n in (500, 2000):
            if n in gen:
                ok = gen[n] >= TARGETS["gen_tps_2000"] if n == 2000 else None
                rows.append((f"generation tokens/s, {n} new", f"{gen[n]:,.0f}",
                             f">= {TARGETS['gen_tps_2000']:.0f}" if n == 2000 else "",
                             _check(ok)))
    bk = res.get("bookkeeping")
    if bk:
        rows.append(("bookkeeping (RunReporter vs no-op)",
                     f"{bk['ab_pct']:+.2f}% in alternating windows ({bk['windows']} windows "
                     f"of 10 steps); whole runs: median of pairs {bk['paired_median_pct']:+.1f}%"
                     f" ({', '.join(f'{x:+.1f}' for x in bk.get('paired_pct', []))}); "
                     f"reporter's own time {bk['in_run_pct']:+.2f}%",
                     f"< {TARGETS['bookkeeping_pct']:.0f}%",
                     _check(bk["ab_pct"] < TARGETS["bookkeeping_pct"])))
    cli = res.get("cli")
    if cli:
        for key, label, target in (("help", "llm-trainer --help", "help_s"),
                                   ("train_help", "llm-trainer train --help", "help_s"),
                                   ("status", "llm-trainer status (200 runs)", "status_s")):
            t = cli[key]
            rows.append((label, f"{t['median_s']:.2f} s (min {t['min_s']:.2f})",
                         f"< {TARGETS[target]} s", _check(t["median_s"] < TARGETS[target])))
    return rows


def typical_target_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by time to target (a run that missed counts as slowest)."""
    ordered = sorted(runs, key=lambda r: r["to_target_s"] if r["reached"] else float("inf"))
    return ordered[(len(ordered) - 1) // 2]


def render_table(rows: list[tuple[str, str, str, str]], markdown: bool) -> str:
    head = ("metric", "value", "target", "")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [head, *rows])


def machine_info() -> dict[str, Any]:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def results_head(res: dict[str, Any], rows: list[tuple[str, str, str, str]], script: str,
                 argv: list[str], title: str = "") -> list[str]:
    """What every RESULTS.md entry starts with: the machine, the command, the load and the
    summary table (``script``: the benchmark's file name; ``title``: what it compares)."""
    m = res["machine"]
    return [f"## {m['date']}: {title + '; ' if title else ''}{m['cpu']}, {m['cores']} cores, "
            f"torch {m['torch']}, commit {m['commit']}", "",
            "`" + " ".join(["python", f"benchmarks/{script}", *argv]) + "`",
            f"(load average {_fmt(res['load_before'], '.2f')} before, "
            f"{_fmt(res['load_after'], '.2f')} after; CPU used by other processes per part: "
            + ", ".join(f"{k} {v['other_pct']:.0f}%" for k, v in res.get("noise", {}).items())
            + ")", "", render_table(rows, markdown=True)]


def append_results(lines: list[str]) -> None:
    new = not RESULTS_MD.exists()
    with RESULTS_MD.open("a", encoding="utf-8") as fh:
        if new:
            fh.write("# Benchmark results\n\nAppended by `benchmarks/bench_shakespeare.py "
                     "--write-results`. Only ratios measured within one run are comparable: "
                     "the machines are shared and noisy.\n")
        fh.write("\n" + "\n".join(lines) + "\n")
    say(f"results appended to {RESULTS_MD}")


def write_results(res: dict[str, Any], rows: list[tuple[str, str, str, str]], argv: list[str]
                  ) -> None:
    lines = results_head(res, rows, "bench_shakespeare.py", argv)
    for i, tt in enumerate(res.get("target") or [], start=1):
        lines += ["", f"Time-to-target run {i}: " + ", ".join(
            f"{k}={v}" for k, v in tt["config"].items()) + "; evaluations (step, full-split "
            "val loss, s): " + ", ".join(f"({s}, {v:.4f}, {t:.1f})" for s, v, t in tt["evals"])
            + "; in-run estimates (step, val): "
            + ", ".join(f"({s}, {v:.4f})" for s, v in tt.get("estimates", []))]
    tp = res.get("throughput")
    if tp and tp.get("nanogpt_command"):
        lines += ["", f"nanoGPT: `python {tp['nanogpt_command']}`"]
    append_results(lines)


# ============================================================================ main


@contextmanager
def scratch_home(path: str | None, keep: bool) -> Iterator[Path]:
    if path:
        home = Path(path).expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        yield home
        return
    home = Path(tempfile.mkdtemp(prefix="bench-shakespeare-"))
    try:
        yield home
    finally:
        if keep:
            say(f"scratch files kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the shakespeare-char preset: throughput (vs nanoGPT), time to "
                    "val loss 1.88, generation, bookkeeping overhead and CLI latency.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"char-level text file (default: {DEFAULT_DATA})")
    p.add_argument("--nanogpt", type=Path, help="nanoGPT checkout with data/shakespeare_char "
                                                "prepared: also run its CPU recipe")
    p.add_argument("--steps", type=int, default=200,
                   help="steps per throughput / bookkeeping measurement (default 200)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--target", type=float, default=1.88, help="val loss to reach (1.88)")
    p.add_argument("--target-runs", type=int, default=1,
                   help="repeat the time-to-target run N times; the median is reported")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config for the time-to-target run (repeatable), e.g. "
                        "--set train.lr=0.002")
    for part in ("throughput", "target", "generation", "bookkeeping", "cli"):
        p.add_argument(f"--skip-{part}", action="store_true", help=f"skip the {part} part")
    p.add_argument("--home", help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    p.add_argument("--json", type=Path, help="also write every raw figure to this file")
    p.add_argument("--write-results", action="store_true",
                   help="append a dated section to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if not args.data.is_file():
        p.error(f"--data {args.data}: no such file (pass the Tiny Shakespeare text)")
    if args.nanogpt is not None:
        prepared = args.nanogpt / "data" / "shakespeare_char" / "train.bin"
        if not (args.nanogpt / "train.py").is_file() or not prepared.is_file():
            p.error(f"--nanogpt {args.nanogpt}: needs train.py and "
                    "data/shakespeare_char/train.bin (run prepare.py there first)")
    if args.steps < 3 * WINDOW:
        p.error(f"--steps must be at least {3 * WINDOW}")
    if args.rounds < 1 or args.target_runs < 1:
        p.error("--rounds and --target-runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.data = args.data.resolve()
    res: dict[str, Any] = {"load_before": load_average(), "machine": machine_info(),
                           "args": argv}
    m = res["machine"]
    say(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
        f"commit {m['commit']}; load average {_fmt(res['load_before'], '.2f')}")
    if res["load_before"] is not None and res["load_before"] > 0.5 * (m["cores"] or 1):
        say("warning: the machine is busy; figures will be noisy (ratios less so)")

    def part(key: str, title: str, fn: Callable[[], Any]) -> None:
        say(f"\n== {title}")
        t0, watch = time.perf_counter(), CpuWatch()
        res[key] = fn()
        res.setdefault("noise", {})[key] = watch.stop()
        say(f"  ({time.perf_counter() - t0:.0f} s; {noise(res['noise'][key])})")

    with scratch_home(args.home, args.keep) as home:
        part("matmul", "fp32 matmul peak", matmul_peak)
        checkpoint = None
        if not args.skip_throughput:
            part("throughput", f"training throughput: {args.rounds} rounds of {args.steps} steps"
                 + (", alternating with nanoGPT" if args.nanogpt else ""),
                 lambda: throughput(home, args.data, args.steps, args.rounds, args.nanogpt))
            last = Path(res["throughput"]["ours"][-1]["run_dir"])
            res["flops"] = model_flops(res["throughput"]["ours"][0]["architecture"])
            checkpoint = json.loads((last / "state.json").read_text()).get("checkpoint")
        if not args.skip_target:
            part("target", f"time to val loss <= {args.target:g} (whole command)"
                 + (f", {args.target_runs} runs" if args.target_runs > 1 else ""),
                 lambda: [time_to_target(home, args.data, args.target, args.sets,
                                         f"bench-target-{TAG}-{i + 1}")
                          for i in range(args.target_runs)])
            checkpoint = res["target"][-1]["checkpoint"] or checkpoint
        if not args.skip_generation:
            if checkpoint is None:  # nothing trained above: a short run to get a model
                say("\n(training 100 steps for a checkpoint to generate from)")
                last = Path(run_ours(home, args.data, 100, f"bench-gen-{TAG}")["run_dir"])
                checkpoint = json.loads((last / "state.json").read_text())["checkpoint"]
            # before bookkeeping: that part calls tune_allocator() in this process, which
            # `llm-trainer generate` does not do
            part("generation", "generation (KV cache, temperature 0.8, top-k 200)",
                 lambda: generation_speed(Path(checkpoint)))
        if not args.skip_bookkeeping:
            part("bookkeeping", f"bookkeeping: no-op reporter vs RunReporter, {args.rounds} "
                 f"rounds of {args.steps} steps",
                 lambda: bookkeeping(home / "bk", args.data, args.steps, args.rounds))
        if not args.skip_cli:
            part("cli", "CLI latency (5 runs each)", lambda: cli_latency(home))
    res["load_after"] = load_average()

    return report(res, summary_rows(res), args, argv, write_results)


def report(res: dict[str, Any], rows, args: argparse.Namespace, argv: list[str],
           write: Callable[[dict[str, Any], Any, list[str]], None]) -> int:
    """Print the summary table; ``--json`` and ``--write-results`` as asked (both scripts)."""
    say(f"\n== summary (load average {_fmt(res['load_before'], '.2f')} before, "
        f"{_fmt(res['load_after'], '.2f')} after)")
    say(render_table(rows, markdown=False))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    if args.write_results:
        write(res, rows, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
