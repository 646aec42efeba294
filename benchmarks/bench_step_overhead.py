"""Step time of the current trainer against an earlier commit's, every callback off.

    python benchmarks/bench_step_overhead.py [--baseline REV] [--rounds 6] [--steps 300]

The earlier commit is checked out into a temporary git worktree and imported from there
(same interpreter, same packages). Each round trains the ``shakespeare-char`` preset on Tiny
Shakespeare in a fresh process with that commit's code, then with ours (the order alternates
ABBA), with no evaluation and no reporter. Two figures per run:

- steady-state ms/step: the median of 10-step windows of the steps' own time
  (``train_time_s``), first 3 windows left out (warm-up);
- fast-mode ms/step: the 10th percentile of those windows. This host runs in two modes
  (~23 and ~32 ms/step for the same code, switching every few seconds), so medians of whole
  runs swing by +-40% between rounds; the fast mode is what a step costs when the host leaves
  it alone, and is the figure that can resolve a 1% difference;
- whole run: the subprocess's wall time (start-up, data, model, steps, final checkpoint).

The headlines are the medians over rounds of the per-round ratios ours / baseline.
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
DEFAULT_BASELINE = "8246c95"  # the last commit with the one-function loop (run_training)

CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
from llm_trainer.config import load_config
from llm_trainer.worker import tune_allocator
import llm_trainer.training.trainer as T

data, home, name, steps = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
tune_allocator()
cfg = load_config(preset="shakespeare-char", overrides={
    "data.dataset": data, "train.max_steps": steps, "train.eval_interval": 0,
    "train.log_interval": 10})
marks = []

class Timer:
    def log(self, message): pass
    on_log = log
    def on_start(self, *a): pass
    def on_progress(self, *a):
        p = a[-1]  # a dict before the typed events, a Progress since
        marks.append(p["train_time_s"] if isinstance(p, dict) else p.train_time_s)
    def on_eval(self, *a): pass
    def on_checkpoint(self, *a): pass
    def on_step_end(self, *a): pass
    def on_sample(self, *a): pass
    def on_anomaly(self, *a): pass
    def on_end(self, *a): pass
    name = ""
    def state_dict(self): return {}
    def load_state_dict(self, s): pass

if hasattr(T, "TrainingJob"):
    Job = T.TrainingJob
else:  # since TrainingParts
    from llm_trainer.training.parts import TrainingJob as Job
job = Job(config=cfg, home=home, model_dir=home / name, run_id=name)
if hasattr(T, "train"):
    T.train(job, [Timer()])
elif hasattr(T, "Trainer"):
    T.Trainer(job, [Timer()]).fit()
else:
    T.run_training(job, Timer())
windows = [(b - a) / 10 for a, b in zip(marks, marks[1:])][3:]
fast = sorted(windows)[: max(1, len(windows) // 10)]
print(json.dumps({"ms_per_step": 1000 * statistics.median(windows),
                  "fast_ms_per_step": 1000 * fast[-1], "windows": len(windows)}))
"""


def run_one(src: Path, data: Path, home: Path, name: str, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), str(home), name, str(steps)],
                          capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no data at {args.data}: pass --data path/to/tinyshakespeare.txt")
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base),
                        args.baseline], check=True, capture_output=True)
        try:
            sides = {"baseline": base / "src", "current": REPO / "src"}
            results: dict[str, list[dict]] = {"baseline": [], "current": []}
            for r in range(args.rounds):
                order = ["baseline", "current"] if r % 2 == 0 else ["current", "baseline"]
                for side in order:
                    home = tmp / "home"
                    home.mkdir(exist_ok=True)
                    res = run_one(sides[side], args.data, home, f"{side}-{r}", args.steps)
                    results[side].append(res)
                    print(f"round {r + 1} {side:8s}: {res['ms_per_step']:.2f} ms/step "
                          f"(steady median), {res['fast_ms_per_step']:.2f} (fast mode), "
                          f"{res['wall_s']:.2f} s whole run", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                           check=False, capture_output=True)
    steady = [c["ms_per_step"] / b["ms_per_step"]
              for b, c in zip(results["baseline"], results["current"], strict=True)]
    fast = [c["fast_ms_per_step"] / b["fast_ms_per_step"]
            for b, c in zip(results["baseline"], results["current"], strict=True)]
    whole = [c["wall_s"] / b["wall_s"]
             for b, c in zip(results["baseline"], results["current"], strict=True)]
    summary = {
        "baseline": args.baseline, "rounds": args.rounds, "steps": args.steps,
        "baseline_ms_per_step": statistics.median(x["ms_per_step"] for x in results["baseline"]),
        "current_ms_per_step": statistics.median(x["ms_per_step"] for x in results["current"]),
        "steady_ratio_median": statistics.median(steady),
        "steady_ratios": [round(x, 4) for x in steady],
        "fast_mode_ratio_median": statistics.median(fast),
        "fast_mode_ratios": [round(x, 4) for x in fast],
        "best_fast_mode_ratio": min(x["fast_ms_per_step"] for x in results["current"]) /
        min(x["fast_ms_per_step"] for x in results["baseline"]),
        "whole_run_ratio_median": statistics.median(whole),
        "whole_run_ratios": [round(x, 4) for x in whole],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
