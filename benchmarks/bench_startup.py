#!/usr/bin/env python
"""Start-up: a 1-step ``train --foreground`` whole command against nanoGPT's 1-step ``train.py``.

Both train char-level Tiny Shakespeare with the same model and batch shape (4 layers, 4 heads,
128 dims, context 64, 12 sequences, no dropout), on the CPU, from data prepared beforehand:

- nanoGPT: ``python train.py config/train_shakespeare_char.py --device=cpu --compile=False
  --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
  --n_embd=128 --max_iters=1 --lr_decay_iters=2000 --dropout=0.0``. With ``max_iters=1`` it
  evaluates at step 0 (20 train + 20 val batches), trains iterations 0 and 1, saves nothing
  (it never saves at step 0) and samples nothing.
- ours: ``llm-trainer train --dataset FILE --set data.tokenizer=char ... --max-steps 1
  --foreground`` in a home whose token cache is already there (copied from a prepared
  template home before each run, so every run starts from the same home). It trains one step,
  evaluates 20 val batches, writes a checkpoint and prints a 200-token sample.

``--rounds`` rounds alternate the two (the order flips every round); the whole commands'
wall times are compared by their medians. ``--before SRC`` adds a third command: ours with
another source tree on ``PYTHONPATH`` (e.g. a ``git worktree`` of an older commit).

``--breakdown N`` then runs ours N more times with timing probes (a ``sitecustomize`` in a
temporary folder wraps functions of the CLI and the worker and writes ``pid time label``
lines; both processes append to one file) and prints where the time goes, median per phase.

    .venv/bin/python benchmarks/bench_startup.py --nanogpt ../nanogpt \\
        --dataset ../shared/data/tinyshakespeare.txt --rounds 6 --breakdown 3

The machine is shared: only figures from one invocation are comparable. Where
``PYTHONDONTWRITEBYTECODE`` is set (as in this project's sandbox), every run compiles our
modules from source (nanoGPT's two files too); ``--bytecode`` times both with a bytecode
cache instead, as a normal install has.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12)

NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                "--eval_iters=20", "--log_interval=1", f"--block_size={SHAPE['block_size']}",
                f"--batch_size={SHAPE['batch_size']}", f"--n_layer={SHAPE['n_layer']}",
                f"--n_head={SHAPE['n_head']}", f"--n_embd={SHAPE['n_embd']}", "--max_iters=1",
                "--lr_decay_iters=2000", "--dropout=0.0"]


def ours_args(dataset: Path) -> list[str]:
    return ["train", "--dataset", str(dataset), "--set", "data.tokenizer=char",
            "--set", f"model.n_layer={SHAPE['n_layer']}",
            "--set", f"model.n_head={SHAPE['n_head']}",
            "--set", f"model.n_embd={SHAPE['n_embd']}", "--seq-len", str(SHAPE["block_size"]),
            "--batch-size", str(SHAPE["batch_size"]), "--set", "model.dropout=0.0",
            "--max-steps", "1", "--foreground"]


def ours_command(dataset: Path) -> list[str]:
    """The installed entry point (what a user types) where there is one."""
    script = Path(sys.executable).with_name("llm-trainer")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "llm_trainer"]
    return head + ours_args(dataset)


def prepare_nanogpt(path: Path, dataset: Path) -> None:
    """nanoGPT's own prepare.py, once, on the local copy of the corpus (no download)."""
    data = path / "data" / "shakespeare_char"
    if (data / "train.bin").exists() and (data / "meta.pkl").exists():
        return
    if not (data / "input.txt").exists():
        shutil.copyfile(dataset, data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True,
                   stdout=subprocess.DEVNULL)


class Runner:
    def __init__(self, scratch: Path, dataset: Path, nanogpt: Path | None) -> None:
        self.scratch, self.dataset, self.nanogpt = scratch, dataset, nanogpt
        self.template = scratch / "prepared-home"
        self.count = 0
        self.bytecode = False

    def base_env(self) -> dict[str, str]:
        env = {**os.environ}
        if self.bytecode:  # compiled modules cached (in the scratch folder) and read back
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.scratch / "pycache")
        return env

    def env(self, src: Path, **extra: str) -> dict[str, str]:
        env = {**self.base_env(), **extra}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(src)] + ([extra["PROBE_DIR"]] if "PROBE_DIR" in extra else []))
        env.pop("LLM_TRAINER_HOME", None)
        env.pop("LLM_TRAINER_IN_PROCESS", None)
        return env

    def prepare(self, src: Path) -> None:
        """A home with the token cache: one run of ours, then only its data/ is kept."""
        if (self.template / "data").exists():
            return
        self.template.mkdir(parents=True)
        subprocess.run(ours_command(self.dataset), cwd=self.template, env=self.env(src),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in os.listdir(self.template):
            if name != "data":
                shutil.rmtree(self.template / name)

    def fresh_home(self) -> Path:
        self.count += 1
        home = self.scratch / f"home-{self.count}"
        shutil.copytree(self.template, home)
        return home

    def timed(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
        before = os.times()
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        after = os.times()
        if proc.returncode != 0:
            sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}")
        cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system)
        return {"wall": wall, "cpu": cpu, "load": load}

    def ours(self, src: Path, **extra: str) -> dict[str, float]:
        home = self.fresh_home()
        try:
            return self.timed(ours_command(self.dataset), home, self.env(src, **extra))
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def nano(self) -> dict[str, float]:
        out = self.scratch / "nanogpt-out"
        env = self.base_env()
        env.pop("PYTHONPATH", None)
        return self.timed([sys.executable, "train.py", *NANOGPT_ARGS, f"--out_dir={out}"],
                          self.nanogpt, env)


# ------------------------------------------------------------------ the probes
PROBE = r'''
import os, sys, time
_F = os.environ.get("PROBE_FILE")
if _F:
    import functools, importlib.abc
    _fd = os.open(_F, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    def mark(label):
        os.write(_fd, f"{os.getpid()} {time.time():.4f} {label}\n".encode())
    mark("python-up")
    TARGETS = %(targets)r
    IMPORTS = {"torch", "torch._dynamo"}
    def wrap(fn, label):
        @functools.wraps(fn)
        def w(*a, **k):
            mark("> " + label)
            try:
                return fn(*a, **k)
            finally:
                mark("< " + label)
        return w
    def patch(mod):
        for name in TARGETS.get(mod.__name__, []):
            obj, parts = mod, name.split(".")
            for p in parts[:-1]:
                obj = getattr(obj, p, None)
            if obj is not None and hasattr(obj, parts[-1]):
                setattr(obj, parts[-1], wrap(getattr(obj, parts[-1]), name))
    class Loader(importlib.abc.Loader):
        def __init__(self, inner): self.inner = inner
        def create_module(self, spec): return self.inner.create_module(spec)
        def exec_module(self, module):
            n = module.__name__
            if n in IMPORTS: mark("> import " + n)
            self.inner.exec_module(module)
            if n in IMPORTS: mark("< import " + n)
            patch(module)
    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in TARGETS and name not in IMPORTS: return None
            for f in sys.meta_path:
                if f is self: continue
                spec = getattr(f, "find_spec", lambda *a: None)(name, path, target)
                if spec is not None:
                    if spec.loader is not None: spec.loader = Loader(spec.loader)
                    return spec
            return None
    sys.meta_path.insert(0, Finder())
    _exit = os._exit
    def _marked_exit(code):
        mark("os._exit")
        _exit(code)
    os._exit = _marked_exit  # no atexit handler here: the CLI leaves early only without any
'''

TARGETS = {
    "llm_trainer.cli": ["main"],
    "llm_trainer.app.control": ["ProcessControl._spawn"],
    "llm_trainer.cli.train": ["_follow", "_sample"],
    "llm_trainer.training.parts": ["build_parts", "_data", "_model", "build_optimizer",
                                   "TrainingParts.train_step"],
    "llm_trainer.training.trainer": ["Trainer.announce", "Trainer.run_eval", "Trainer.save",
                                     "Trainer.fit"],
    "llm_trainer.inference.samples": ["FinalSample.on_end"],
}


def phases(lines: list[tuple[int, float, str]], start: float, end: float,
           cli_pid: int) -> dict[str, float]:
    """Seconds per phase from one probed run's marks (a phase whose marks are missing: 0)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    worker_pid = next((pid for pid, _, label in lines if pid != cli_pid), None)
    for pid, t, label in lines:
        key = f"{'cli' if pid == cli_pid else 'worker'}:{label}"
        first.setdefault(key, t)
        last[key] = t

    def span(a: str, b: str) -> float:
        if a in first and b in last:
            return max(0.0, last[b] - first[a])
        return 0.0

    def overlap(a: str, b: str, c: str, d: str) -> float:
        """How much of a..b lies inside c..d."""
        if not (a in first and c in first and b in last and d in last):
            return 0.0
        return max(0.0, min(last[b], last[d]) - max(first[a], first[c]))

    torch_import = span("worker:> import torch", "worker:< import torch")
    dynamo = span("worker:> import torch._dynamo", "worker:< import torch._dynamo")
    out = {
        "CLI: interpreter and imports (to main())": span("cli:python-up", "cli:> main")
        + (first.get("cli:python-up", start) - start),
        "CLI: parse, plan, write the run, start or hand over the worker": span(
            "cli:> main", "cli:< ProcessControl._spawn"),
    }
    if worker_pid is None:  # the worker ran in this process (LLM_TRAINER_IN_PROCESS)
        return out
    build = span("worker:> build_parts", "worker:< build_parts")
    optimizer = span("worker:> build_optimizer", "worker:< build_optimizer")
    dynamo_in_optimizer = overlap("worker:> import torch._dynamo", "worker:< import torch._dynamo",
                                  "worker:> build_optimizer", "worker:< build_optimizer")
    out.update({
        "worker: process up (s after the command started)": first.get("worker:python-up",
                                                                       start) - start,
        "worker: import torch": torch_import,
        "worker: import torch._dynamo (the first optimizer's, or the standby's)": dynamo,
        "worker: set-up starts (s after the command started)": first.get(
            "worker:> build_parts", start) - start,
        "worker: data (tokenizer + token cache)": span("worker:> _data", "worker:< _data"),
        "worker: model build": span("worker:> _model", "worker:< _model"),
        "worker: optimizer (less torch._dynamo)": optimizer - dynamo_in_optimizer,
        "worker: rest of set-up (device, threads, batches, state)": max(0.0, build - span(
            "worker:> _data", "worker:< _data") - span("worker:> _model", "worker:< _model")
            - optimizer - overlap("worker:> import torch", "worker:< import torch",
                                  "worker:> build_parts", "worker:< build_parts")),
        "worker: run records (on_start: meta, state, model)": span("worker:> Trainer.announce",
                                                                  "worker:< Trainer.announce"),
        "worker: the step": span("worker:> TrainingParts.train_step",
                                 "worker:< TrainingParts.train_step"),
        "worker: final evaluation (20 batches)": span("worker:> Trainer.run_eval",
                                                      "worker:< Trainer.run_eval"),
        "worker: checkpoint write": span("worker:> Trainer.save", "worker:< Trainer.save"),
        "worker: final sample (200 tokens)": span("worker:> FinalSample.on_end",
                                                  "worker:< FinalSample.on_end"),
        "worker: end of run (records, lock) to exit": span("worker:< Trainer.fit",
                                                            "worker:os._exit"),
        "worker: exits (s after the command started)": last.get("worker:os._exit",
                                                                start) - start,
        "CLI: notices the worker's exit": max(0.0, first.get("cli:< _follow", 0.0) - last.get(
            "worker:os._exit", first.get("cli:< _follow", 0.0))),
        "CLI: final sample (import torch, load the checkpoint, 200 tokens)": span(
            "cli:> _sample", "cli:< _sample"),
        "CLI: the rest of its output": span("cli:< _follow", "cli:< main")
        - span("cli:> _sample", "cli:< _sample"),
        "CLI: exit (interpreter teardown)": end - last.get("cli:< main", end),
    })
    return out


def breakdown(runner: Runner, src: Path, n: int) -> list[dict[str, float]]:
    probe_dir = runner.scratch / "probe"
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / "sitecustomize.py").write_text(PROBE % {"targets": TARGETS})
    results = []
    for _ in range(n):
        marks = runner.scratch / f"marks-{runner.count}.txt"
        home = runner.fresh_home()
        start = time.time()
        proc = subprocess.Popen(ours_command(runner.dataset), cwd=home,
                                env=runner.env(src, PROBE_DIR=str(probe_dir),
                                               PROBE_FILE=str(marks)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait()
        end = time.time()
        lines = []
        for line in marks.read_text().splitlines():
            pid, t, label = line.split(" ", 2)
            lines.append((int(pid), float(t), label))
        results.append({**phases(lines, start, end, proc.pid), "whole command": end - start})
        shutil.rmtree(home, ignore_errors=True)
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, help="a karpathy/nanoGPT checkout")
    ap.add_argument("--dataset", type=Path, required=True, help="tinyshakespeare.txt")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--before", type=Path, help="another src/ tree to time as 'before'")
    ap.add_argument("--breakdown", type=int, default=0, help="probed runs of ours")
    ap.add_argument("--scratch", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--bytecode", action="store_true",
                    help="let Python cache compiled modules (where PYTHONDONTWRITEBYTECODE is "
                         "set, every run compiles ours from source)")
    args = ap.parse_args()
    dataset = args.dataset.resolve()
    src = REPO / "src"
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-startup-"))
    runner = Runner(scratch, dataset, args.nanogpt.resolve() if args.nanogpt else None)
    runner.bytecode = args.bytecode
    if runner.nanogpt:
        prepare_nanogpt(runner.nanogpt, dataset)
    runner.prepare(src)
    kinds: list[tuple[str, object]] = []
    if runner.nanogpt:
        kinds.append(("nanoGPT train.py", runner.nano))
    if args.before:
        kinds.append(("ours (before)", lambda: runner.ours(args.before.resolve())))
    kinds.append(("ours", lambda: runner.ours(src)))
    for _, run in kinds:  # warm the page cache once, unmeasured
        run()
    figures: dict[str, list[dict[str, float]]] = {name: [] for name, _ in kinds}
    for r in range(args.rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for name, run in order:
            fig = run()
            figures[name].append(fig)
            print(f"round {r + 1} {name}: {fig['wall']:.2f} s wall, {fig['cpu']:.2f} s CPU, "
                  f"load {fig['load']:.2f}", flush=True)
    print(f"\n{'command':<20} {'median wall s':>14} {'median CPU s':>13}  walls")
    for name, figs in figures.items():
        walls = [f["wall"] for f in figs]
        print(f"{name:<20} {median(walls):>14.2f} {median([f['cpu'] for f in figs]):>13.2f}  "
              + " ".join(f"{w:.2f}" for w in walls))
    if runner.nanogpt:
        nano = median([f["wall"] for f in figures["nanoGPT train.py"]])
        for name in figures:
            if name != "nanoGPT train.py":
                print(f"{name} / nanoGPT: {median([f['wall'] for f in figures[name]]) / nano:.2f}x"
                      " (median walls)")
    if args.breakdown:
        trees = [("ours", src)] + ([("before", args.before.resolve())] if args.before else [])
        tables = {name: [] for name, _ in trees}
        for _ in range(args.breakdown):  # alternating, one probed run of each at a time
            for name, tree in trees:
                tables[name] += breakdown(runner, tree, 1)
        keys = list(dict.fromkeys(k for rows in tables.values() for r in rows for k in r))
        print(f"\nwhere the time goes ({args.breakdown} probed runs each, median seconds)")
        print(f"  {'phase':<68} " + " ".join(f"{name:>7}" for name in tables))
        for key in keys:
            print(f"  {key:<68} " + " ".join(
                f"{median([r.get(key, 0.0) for r in rows]):7.3f}" for rows in tables.values()))
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
