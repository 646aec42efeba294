"""Two trainings at once on one CPU: do they share the cores or stall each other?

    python benchmarks/bench_concurrent.py [--steps 800] [--data path/to/tinyshakespeare.txt]

Three measurements of the ``shakespeare-char`` preset, through the real CLI (detached runs,
metrics read back from ``runs/<id>/metrics.jsonl``):

1. solo: one run alone, median tokens/s of its 10-step windows;
2. shared (the default): two runs started together; each picks ``cores // runs`` threads and
   re-checks every 5 s (``llm_trainer.cpu_share``);
3. unshared (the behaviour before): two runs that each keep all cores
   (``runtime.num_threads`` = cores).

For 2 and 3 the figure is the sum of both runs' median tokens/s over the windows logged
while both were training, after a 10 s settling time. The goal: shared >= 90% of solo.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
SETTLE_S = 10.0


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("llm-trainer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "llm_trainer"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*cmd, "--home", str(home), *args], capture_output=True, text=True,
                          env=env, check=True)


def train_args(data: Path, steps: int, name: str, extra: list[str]) -> list[str]:
    return ["train", "--preset", "shakespeare-char", "--dataset", str(data), "--max-steps",
            str(steps), "--eval-interval", "0", "--name", name, *extra]


def run_id_of(stdout: str) -> str:
    return next(ln.split()[2] for ln in stdout.splitlines() if ln.startswith("started run"))


def wait_done(home: Path, run_ids: list[str]) -> None:
    while True:
        views = json.loads(cli(home, "status", "--json", "--all").stdout)
        status = {v["run_id"]: v["status"] for v in views}
        if all(status.get(r) not in ("queued", "running") for r in run_ids):
            bad = [r for r in run_ids if status.get(r) != "completed"]
            if bad:
                raise SystemExit(f"runs did not complete: {bad}")
            return
        time.sleep(1.0)


def windows(home: Path, run_id: str) -> list[dict]:
    path = home / "runs" / run_id / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "train"]


def solo(home: Path, data: Path, steps: int) -> float:
    run = run_id_of(cli(home, *train_args(data, steps, "solo", [])).stdout)
    wait_done(home, [run])
    rates = [r["tokens_per_s"] for r in windows(home, run)][3:]
    return statistics.median(rates)


def pair(home: Path, data: Path, steps: int, label: str, extra: list[str]) -> dict:
    runs = [run_id_of(cli(home, *train_args(data, steps, f"{label}-{i}", extra)).stdout)
            for i in range(2)]
    wait_done(home, runs)
    records = {r: windows(home, r) for r in runs}
    start = max(recs[0]["time"] for recs in records.values()) + SETTLE_S
    end = min(recs[-1]["time"] for recs in records.values())
    medians = {}
    for r, recs in records.items():
        both = [x["tokens_per_s"] for x in recs if start <= x["time"] <= end]
        if len(both) < 3:
            raise SystemExit(f"too little overlap for {r}: raise --steps")
        medians[r] = statistics.median(both)
    threads = {}
    for r in runs:
        log = (home / "runs" / r / "train.log").read_text()
        threads[r] = [ln.split("CPU threads: ")[1] for ln in log.splitlines()
                      if "CPU threads: " in ln]
    return {"runs": runs, "tokens_per_s": medians, "total": sum(medians.values()),
            "overlap_s": end - start, "threads_log": threads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no data at {args.data}: pass --data path/to/tinyshakespeare.txt")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-concurrent-") as tmp:
        home = Path(tmp)
        cli(home, *train_args(args.data, 20, "warm-up", ["--foreground", "--sample", "0"]))
        alone = solo(home, args.data, args.steps)
        print(f"solo: {alone:,.0f} tokens/s", flush=True)
        shared = pair(home, args.data, args.steps, "shared", [])
        print(f"two runs, shared cores: {shared['total']:,.0f} tokens/s together "
              f"({shared['total'] / alone:.0%} of solo)", flush=True)
        unshared = pair(home, args.data, args.steps, "unshared",
                        ["--set", f"runtime.num_threads={cores}"])
        print(f"two runs, {cores} threads each: {unshared['total']:,.0f} tokens/s together "
              f"({unshared['total'] / alone:.0%} of solo)", flush=True)
    out = {"cores": cores, "steps": args.steps, "solo_tokens_per_s": alone,
           "shared": shared, "unshared": unshared,
           "shared_over_solo": shared["total"] / alone,
           "unshared_over_solo": unshared["total"] / alone}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
