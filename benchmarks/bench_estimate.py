#!/usr/bin/env python
"""How good is the pre-launch estimate? ``train --dry-run --json`` then the same ``train
--foreground``, ``--rounds`` times, through the real CLI, in a scratch home.

Reported per round: the dry run's estimated step time and run time, the run's actual mean
step time (``state.json: actual_step_time_s``, the training loop's step time only) and its
loop wall time (``elapsed_s`` of the last progress record: steps, evaluations and
checkpoints), the errors ``actual / estimated - 1`` of both, and the in-run estimate's error
that the worker records (``state.json: estimate_error``: the same measurement taken from the
run's own first 2 + 5 steps).

    .venv/bin/python benchmarks/bench_estimate.py --dataset ../shared/data/tinyshakespeare.txt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "llm_trainer", *args], capture_output=True,
                          text=True, env=env, cwd=str(home))
    if proc.returncode != 0:
        raise SystemExit(f"llm-trainer {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="shakespeare-char")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--home")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="bench-estimate-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    common = ["--preset", args.preset, "--dataset", str(Path(args.dataset).resolve()),
              "--max-steps", str(args.steps), *[x for s in args.sets for x in ("--set", s)]]
    rows = []
    for i in range(args.rounds):
        est = json.loads(cli(home, "train", *common, "--dry-run", "--json").stdout)
        name = f"bench-{i}"
        cli(home, "train", *common, "--name", name, "--foreground", "--sample", "0")
        run_dir = max((home / "runs").glob(f"*-{name}"))
        state = json.loads((run_dir / "state.json").read_text())
        t = est["time"]
        actual_step = state["actual_step_time_s"]
        loop_s = state["elapsed_s"]
        row = {"est_step_s": t["step_time_s"], "est_run_s": t["run_time_s"],
               "actual_step_s": actual_step, "actual_loop_s": loop_s,
               "step_error": actual_step / t["step_time_s"] - 1,
               "run_error": loop_s / t["run_time_s"] - 1,
               "in_run_error": state.get("estimate_error"),
               "steps": est["steps"], "run_steps": state["step"] - (state.get("start_step") or 0)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for key in ("step_error", "run_error", "in_run_error"):
        vals = [r[key] for r in rows if r[key] is not None]
        if vals:
            print(f"{key}: median {statistics.median(vals):+.1%}, range "
                  f"{min(vals):+.1%} .. {max(vals):+.1%}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
