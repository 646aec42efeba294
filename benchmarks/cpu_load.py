#!/usr/bin/env python
"""Training speed on a CPU that other programs keep busy: 1 thread, 2 threads and the
automatic choice (``llm_trainer.cpu_share``), under a competing load.

The load is ``--load`` busy-loop processes (as ``stress --cpu N`` makes; default: one per
core), started before and killed after each measurement. Every configuration trains the same
``--preset`` for ``--steps`` steps on ``builtin:python-docs`` (offline; its token cache is
prepared once, before any timing), in the foreground, ``--rounds`` times with the order
rotating each round. Reported per configuration: the median steady-state tok/s (the
``tokens_per_s`` of each 10-step window after the first two), the whole command's wall time,
and for ``auto`` the thread count it chose (its log's "CPU threads" lines). The ratios are
each configuration's tok/s over 1 thread's under the same load. ``--baseline`` adds the same
runs without the load, for reference.

Run it on an otherwise quiet machine, one benchmark at a time (it loads every core):

    .venv/bin/python benchmarks/cpu_load.py --baseline --out benchmarks/cpu_load.json

A 10-second smoke run (checks the script, measures nothing):

    .venv/bin/python benchmarks/cpu_load.py --steps 20 --rounds 1 --threads auto --load 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATASET = "builtin:python-docs"
WINDOW = 10  # train.log_interval: steps per tok/s window
SKIP_WINDOWS = 2  # warm-up windows left out of the median


def llm_trainer_exe() -> list[str]:
    """The console script next to this interpreter (the venv's), else ``-m llm_trainer``."""
    exe = Path(sys.executable).parent / "llm-trainer"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "llm_trainer"]


def train(home: Path, preset: str, steps: int, name: str, threads: str) -> dict[str, Any]:
    """One ``train --foreground`` with ``threads`` ("auto": the CPU share decides)."""
    cmd = [*llm_trainer_exe(), "--home", str(home), "train", "--preset", preset,
           "--dataset", DATASET, "--max-steps", str(steps), "--name", name, "--foreground",
           "--sample", "0", "--set", f"train.log_interval={WINDOW}",
           "--set", f"train.eval_interval={steps * 10}"]
    if threads != "auto":
        cmd += ["--set", f"runtime.num_threads={threads}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LLM_TRAINER_IGNORE_LOAD"):
        env.pop(var, None)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n"
                         f"{proc.stderr}")
    run = max((p for p in (home / "runs").iterdir() if p.name.endswith(f"-{name}")),
              key=lambda p: p.stat().st_mtime)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if r.get("kind") == "train"]
    steady = rates[SKIP_WINDOWS:] or rates
    chosen = [line.split("CPU threads: ", 1)[1] for line in
              (run / "train.log").read_text().splitlines() if "CPU threads: " in line]
    return {"threads": threads, "tokens_per_s": statistics.median(steady) if steady else None,
            "wall_s": round(wall, 2), "windows": len(steady), "cpu_threads_log": chosen}


class Load:
    """``n`` busy-loop processes (this script's own children) while the block runs."""

    def __init__(self, n: int) -> None:
        self.n, self.procs = n, []

    def __enter__(self) -> Load:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(self.n)]
        time.sleep(1.0)  # the load shows in the machine's busy time before a run starts
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()


def measure(home: Path, args, threads: list[str], load: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {t: [] for t in threads}
    for round_ in range(args.rounds):
        order = threads[round_ % len(threads):] + threads[:round_ % len(threads)]
        for t in order:
            with Load(load):
                r = train(home, args.preset, args.steps, f"load{load}-t{t}-r{round_}", t)
            print(f"  load {load}, threads {t}, round {round_ + 1}: "
                  f"{r['tokens_per_s'] or 0:,.0f} tok/s, {r['wall_s']} s"
                  + (f" ({'; '.join(r['cpu_threads_log'])})" if t == "auto" else ""),
                  flush=True)
            results[t].append(r)
    return results


def summary(results: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for t, runs in results.items():
        rates = [r["tokens_per_s"] for r in runs if r["tokens_per_s"]]
        out[t] = {"tokens_per_s": statistics.median(rates) if rates else None,
                  "wall_s": statistics.median(r["wall_s"] for r in runs),
                  "cpu_threads_log": sorted({c for r in runs for c in r["cpu_threads_log"]})}
    one = out.get("1", {}).get("tokens_per_s")
    for row in out.values():
        row["vs_1_thread"] = (round(row["tokens_per_s"] / one, 3)
                              if one and row["tokens_per_s"] else None)
    return out


def table(title: str, rows: dict[str, dict]) -> str:
    lines = [f"{title}", "", "| threads | tok/s (median) | vs 1 thread | whole command |",
             "|---|---:|---:|---:|"]
    for t, r in rows.items():
        rate = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-"
        ratio = f"{r['vs_1_thread']:.2f}x" if r["vs_1_thread"] else "-"
        chose = sorted({line.split()[0] for line in r["cpu_threads_log"]}, key=int)
        label = t if t != "auto" else f"auto ({'/'.join(chose) or '?'} threads)"
        lines.append(f"| {label} | {rate} | {ratio} | {r['wall_s']:.1f} s |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2,auto", help="comma-separated: N or auto")
    ap.add_argument("--load", type=int, default=os.cpu_count() or 1,
                    help="busy-loop processes competing (default: one per core)")
    ap.add_argument("--baseline", action="store_true",
                    help="also measure without the load")
    ap.add_argument("--home", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = ap.parse_args()
    threads = [t.strip() for t in args.threads.split(",") if t.strip()]

    with tempfile.TemporaryDirectory(prefix="cpu-load-") as tmp:
        home = args.home or Path(tmp)
        print(f"preparing {DATASET} for --preset {args.preset} ...", flush=True)
        train(home, args.preset, 1, "prepare", "1")  # the token cache, outside any timing
        loaded = summary(measure(home, args, threads, args.load))
        quiet = summary(measure(home, args, threads, 0)) if args.baseline else None

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "preset": args.preset, "steps": args.steps, "rounds": args.rounds,
            "load_processes": args.load, "python": platform.python_version()}
    print()
    print(f"{info['cores']} cores, --preset {args.preset}, {args.steps} steps, "
          f"{args.rounds} rounds; load: {args.load} busy-loop processes")
    print(table(f"with {args.load} busy-loop processes competing", loaded))
    if quiet:
        print()
        print(table("without the load", quiet))
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "loaded": loaded, "quiet": quiet},
                                       indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
