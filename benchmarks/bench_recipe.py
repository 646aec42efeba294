#!/usr/bin/env python
"""The modern recipe against nanoGPT on char-level Tiny Shakespeare, in one invocation.

Two presets (``shakespeare-char``: nanoGPT's model and recipe shape; ``shakespeare-char-fast``:
the same data, tokenizer and 4x128 size with the modern recipe) against nanoGPT's README CPU
recipe, on the same machine, interleaved:

1. **speed** (``--steps`` steps of nanoGPT, the same number of tokens for each preset;
   ``--rounds`` rounds; the order rotates every round): nanoGPT, then each preset at its own
   precision (``auto``: bf16 autocast where the CPU has native
   bf16) and forced to ``--precision fp32``. Two figures per run:
   - *whole command*: training tokens / wall seconds of the whole ``train --foreground``
     command (start-up, data, the final evaluation and checkpoint included; for nanoGPT its
     whole ``train.py``, with its evaluation at iteration 0);
   - *steady state*: the median of 10-step windows after the first (from the spacing of the
     run's metrics records; nanoGPT's from its per-iteration times).
   Ratios are ours / nanoGPT within the same round; the median over rounds is reported.
2. **time to quality**: each preset's whole command as shipped (``--target-runs`` times), then
   a *full-split* evaluation (``llm-trainer eval``'s computation: every val token once) of every
   checkpoint it saved. "Reached" is decided by that evaluation, never by the in-run estimate
   (20 random batches). Reported: the wall time of the whole command, the time at which the
   first checkpoint with full-split val <= ``--target`` was on disk, and where the time outside
   the model steps went (start-up, evaluations, checkpoints, exit).
3. with ``--nanogpt-target``: nanoGPT's whole recipe (2000 iterations), and the same full-split
   evaluation of its final checkpoint.

Run on an otherwise idle machine, one benchmark at a time:

    .venv/bin/python benchmarks/bench_recipe.py --nanogpt ../nanogpt --write-results
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_shakespeare as bs

PRESETS = ("shakespeare-char", "shakespeare-char-fast")
TARGET_WALL_S = 20.0  # shakespeare-char-fast: full-split val <= 1.88 within this, whole command
TARGET_FP32_RATIO = 1.25  # shakespeare-char in fp32 vs nanoGPT
DEVICE = {"name": "cpu"}  # --device: where both sides train
NANOGPT_VAL = re.compile(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)")


# ============================================================================ runs


def run_ours(home: Path, data: Path, preset: str, precision: str, steps: int | None,
             name: str, extra: list[str] = ()) -> dict[str, Any]:
    """``train --foreground`` of ``preset``; ``steps`` None runs the preset as shipped."""
    cmd = [*bs.llm_trainer_exe(), "--home", str(home), "train", "--preset", preset,
           "--dataset", str(data), "--foreground", "--name", name, "--sample", "0",
           "--set", f"runtime.precision={precision}", "--device", DEVICE["name"]]
    if steps is not None:
        cmd += ["--max-steps", str(steps), "--set", "train.eval_interval=0",
                "--set", f"train.log_interval={bs.WINDOW}"]
    cmd += list(extra)
    watch = bs.CpuWatch()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=home, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train failed ({proc.returncode}):\n{proc.stderr[-2000:]}\n"
                           f"{proc.stdout[-2000:]}")
    run_id = next(m.group(1) for m in map(bs.RUN_LINE.match, proc.stdout.splitlines()) if m)
    run_dir = home / "runs" / run_id
    meta = json.loads((run_dir / "meta.json").read_text())
    state = json.loads((run_dir / "state.json").read_text())
    metrics = bs.read_metrics(run_dir)
    train = [r for r in metrics if r["kind"] == "train"]
    tokens_per_step = int(meta["tokens_per_step"])
    tps = bs.windows_tps([(r["step"], r["time"]) for r in train], tokens_per_step)
    steps_done = int(state["step"])
    first, last_event = train[0], max(r["time"] for r in metrics)
    startup = first["time"] - t0 - first["elapsed_s"]
    evals = [r for r in metrics if r["kind"] == "eval"]
    ckpts = [r for r in metrics if r["kind"] == "checkpoint"]
    eval_s = sum(r.get("seconds") or 0.0 for r in evals)
    ckpt_s = sum(r.get("seconds") or 0.0 for r in ckpts)
    exit_s = t0 + wall - last_event
    return {
        "preset": preset, "precision": precision, "wall_s": wall, "steps": steps_done,
        "tokens_per_step": tokens_per_step, "whole_tps": steps_done * tokens_per_step / wall,
        "steady_tps": bs.median(tps), "windows": len(tps), "noise": watch.stop(),
        "run_dir": str(run_dir), "architecture": meta.get("architecture"),
        "outside": {"startup_s": startup, "eval_s": eval_s, "checkpoint_s": ckpt_s,
                    "exit_s": exit_s,
                    "fraction": (startup + eval_s + ckpt_s + exit_s) / wall},
        "evals": [(r["step"], r["val_loss"], r["time"] - t0) for r in evals],
        "checkpoints": [(r["step"], r["path"], r["time"] - t0) for r in ckpts],
    }


def run_nanogpt(nanogpt: Path, steps: int, out_dir: Path, cfg, *, evaluate_at_end: bool = False
                ) -> dict[str, Any]:
    cmd = bs.nanogpt_command(nanogpt, steps, out_dir, cfg)
    if DEVICE["name"] != "cpu":  # its GPU recipe: compiled, on the same device
        cmd = [f"--device={DEVICE['name']}" if c == "--device=cpu" else
               "--compile=True" if c == "--compile=False" else c for c in cmd]
    if evaluate_at_end:  # evaluations at 0 and at the last iteration, which saves ckpt.pt
        cmd = [c for c in cmd if not c.startswith("--eval_interval=")]
        cmd += [f"--eval_interval={steps}", "--always_save_checkpoint=True"]
    watch = bs.CpuWatch()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=nanogpt, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"nanoGPT failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    iters = [float(m.group(3)) / 1000
             for m in map(bs.NANOGPT_ITER.match, proc.stdout.splitlines()) if m]
    tokens_per_step = cfg.train.batch_size * cfg.model.block_size
    points, clock = [(0, 0.0)], 0.0
    for i, dt in enumerate(iters[1:], start=1):  # iteration 0 includes its evaluation
        clock += dt
        if i % bs.WINDOW == 0:
            points.append((i, clock))
    tps = bs.windows_tps(points, tokens_per_step)
    vals = [(int(m.group(1)), float(m.group(2))) for m in map(
        NANOGPT_VAL.search, proc.stdout.splitlines()) if m]
    return {"wall_s": wall, "steps": steps, "tokens_per_step": tokens_per_step,
            "whole_tps": steps * tokens_per_step / wall, "steady_tps": bs.median(tps),
            "noise": watch.stop(), "command": " ".join(cmd[1:]), "evals": vals}


# ============================================================================ 1. speed


def same_tokens(preset: str, steps: int, nanogpt_cfg) -> int:
    """Steps of ``preset`` that train as many tokens as ``steps`` of nanoGPT's recipe."""
    from llm_trainer.config import load_config

    t = load_config(preset=preset)
    per_step = t.train.batch_size * t.train.grad_accum * t.model.block_size
    return max(3 * bs.WINDOW, round(steps * nanogpt_cfg.train.batch_size
                                    * nanogpt_cfg.model.block_size / per_step))


def speed(home: Path, data: Path, nanogpt: Path, steps: int, rounds: int) -> dict[str, Any]:
    cfg = bs.preset_config(data)
    kinds = [("nanogpt", None), *((p, prec) for p in PRESETS for prec in ("auto", "fp32"))]
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for who, prec in order:
            key = who if prec is None else f"{who}/{prec}"
            if who == "nanogpt":
                res = run_nanogpt(nanogpt, steps, home / "nanogpt-out", cfg)
            else:  # the same number of training tokens as nanoGPT's run
                res = run_ours(home, data, who, prec, same_tokens(who, steps, cfg),
                               f"bench-speed-{bs.TAG}-{r}-{who}-{prec}")
            runs.setdefault(key, []).append(res)
            bs.say(f"  round {r + 1}: {key:<30} whole command {res['whole_tps']:>7,.0f} "
                   f"tokens/s ({res['wall_s']:.1f} s), steady {res['steady_tps']:>7,.0f} "
                   f"({bs.noise(res['noise'])})")
    out: dict[str, Any] = {"steps": steps, "rounds": rounds, "runs": runs, "ratios": {}}
    base = runs["nanogpt"]
    for key, rs in runs.items():
        if key == "nanogpt":
            continue
        whole = [a["whole_tps"] / b["whole_tps"] for a, b in zip(rs, base, strict=True)]
        steady = [a["steady_tps"] / b["steady_tps"] for a, b in zip(rs, base, strict=True)]
        out["ratios"][key] = {"whole": bs.median(whole), "steady": bs.median(steady),
                              "whole_rounds": whole, "steady_rounds": steady,
                              "whole_tps": bs.median([a["whole_tps"] for a in rs]),
                              "steady_tps": bs.median([a["steady_tps"] for a in rs]),
                              "outside": bs.median([a["outside"]["fraction"] for a in rs])}
    out["nanogpt_whole_tps"] = bs.median([b["whole_tps"] for b in base])
    out["nanogpt_steady_tps"] = bs.median([b["steady_tps"] for b in base])
    out["nanogpt_command"] = base[0]["command"]
    return out


# ============================================================================ 2. time to quality


def full_split(checkpoint: Path) -> dict[str, Any]:
    from llm_trainer.training.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(checkpoint, split="val", device="cpu")
    return {"loss": r.loss, "tokens": r.tokens, "bits_per_byte": r.bits_per_byte,
            "seconds": r.seconds}


def time_to_quality(home: Path, data: Path, preset: str, precision: str, target: float,
                    name: str) -> dict[str, Any]:
    run = run_ours(home, data, preset, precision, None, name,
                   ["--set", "train.keep_last=1000"])  # every checkpoint stays to be scored
    scored = []
    for step, path, at in run["checkpoints"]:
        fs = full_split(Path(path))
        scored.append({"step": step, "at_s": at, "full_val": fs["loss"],
                       "eval_s": fs["seconds"], "tokens": fs["tokens"]})
        bs.say(f"  {preset} ({precision}) checkpoint step {step} on disk at {at:.1f} s: "
               f"full-split val {fs['loss']:.4f} ({fs['tokens']:,} tokens)")
    hit = next((c for c in scored if c["full_val"] <= target), None)
    final = scored[-1]
    o = run["outside"]
    bs.say(f"  whole command {run['wall_s']:.1f} s; final full-split val {final['full_val']:.4f}"
           f"; outside the model steps {o['fraction']:.0%} (start-up {o['startup_s']:.1f} s, "
           f"evaluations {o['eval_s']:.1f} s, checkpoints {o['checkpoint_s']:.1f} s, exit "
           f"{o['exit_s']:.1f} s)")
    return {**run, "target": target, "scored": scored, "reached": hit is not None,
            "reached_step": hit["step"] if hit else None,
            "reached_at_s": hit["at_s"] if hit else None,
            "final_full_val": final["full_val"],
            "final_reached": final["full_val"] <= target}


class NanoGPTAdapter:
    """nanoGPT's model as ``evaluate_tokens`` calls ours: ``model(x)[0]`` is every position's
    logits (its forward returns only the last position's unless targets are given)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def eval(self) -> None:
        self.model.eval()

    def parameters(self):
        return self.model.parameters()

    def __call__(self, x):
        x = x.contiguous()  # its loss views the targets
        return self.model(x, x)


def nanogpt_full_split(nanogpt: Path, out_dir: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from llm_trainer.training.evaluate import evaluate_tokens

    sys.path.insert(0, str(nanogpt))
    import model as ng  # nanoGPT's model.py

    ckpt = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    model = ng.GPT(ng.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    val = np.fromfile(nanogpt / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16)
    t0 = time.perf_counter()
    totals = evaluate_tokens(NanoGPTAdapter(model), val.astype(np.int64),
                             ckpt["model_args"]["block_size"], 32)
    return {"loss": totals.loss, "tokens": totals.tokens, "seconds": time.perf_counter() - t0,
            "iter": ckpt.get("iter_num")}


def nanogpt_target(nanogpt: Path, data: Path, home: Path, iters: int) -> dict[str, Any]:
    cfg = bs.preset_config(data)
    out = home / "nanogpt-target"
    res = run_nanogpt(nanogpt, iters, out, cfg, evaluate_at_end=True)
    res["full"] = nanogpt_full_split(nanogpt, out)
    bs.say(f"  nanoGPT {iters} iterations: whole command {res['wall_s']:.1f} s; its own "
           f"estimate {res['evals'][-1][1] if res['evals'] else '-'}; full-split val "
           f"{res['full']['loss']:.4f} ({res['full']['tokens']:,} tokens)")
    return res


# ============================================================================ report


def summary_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    sp = res.get("speed")
    if sp:
        rows.append(("nanoGPT tokens/s (whole command; steady state)",
                     f"{sp['nanogpt_whole_tps']:,.0f}; {sp['nanogpt_steady_tps']:,.0f}", "", ""))
        for key, r in sp["ratios"].items():
            fp32 = key == "shakespeare-char/fp32"
            rounds = ", ".join(f"{x:.2f}" for x in r["whole_rounds"])
            rows.append((f"{key}: whole-command ratio", f"{r['whole']:.2f}x ({r['whole_tps']:,.0f}"
                         f" tokens/s; rounds {rounds}; outside the steps {r['outside']:.0%})",
                         f">= {TARGET_FP32_RATIO}x" if fp32 else "",
                         bs._check(r["whole"] >= TARGET_FP32_RATIO) if fp32 else ""))
            rounds = ", ".join(f"{x:.2f}" for x in r["steady_rounds"])
            rows.append((f"{key}: steady-state ratio", f"{r['steady']:.2f}x "
                         f"({r['steady_tps']:,.0f} tokens/s; rounds {rounds})",
                         f">= {TARGET_FP32_RATIO}x" if fp32 else "",
                         bs._check(r["steady"] >= TARGET_FP32_RATIO) if fp32 else ""))
    for key, runs in (res.get("quality") or {}).items():
        fast = key == "shakespeare-char-fast/auto"  # the goal: the preset as shipped
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in runs)
        typical = sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]
        finals = ", ".join(f"{r['final_full_val']:.4f}" for r in runs)
        reached = ", ".join(f"{r['reached_at_s']:.1f} s (step {r['reached_step']})"
                            if r["reached"] else "missed" for r in runs)
        o = typical["outside"]
        ok = all(r["final_reached"] and r["wall_s"] <= TARGET_WALL_S for r in runs)
        rows.append((f"{key}: whole command, final full-split val",
                     f"{typical['wall_s']:.1f} s (runs {walls}); val {finals}",
                     f"<= {TARGET_WALL_S:.0f} s and <= {typical['target']}" if fast else "",
                     bs._check(ok) if fast else ""))
        rows.append((f"{key}: first checkpoint with full-split val <= {typical['target']}",
                     reached, "", ""))
        rows.append((f"{key}: outside the model steps", f"{o['fraction']:.0%} (start-up "
                     f"{o['startup_s']:.1f} s, evaluations {o['eval_s']:.1f} s, checkpoints "
                     f"{o['checkpoint_s']:.1f} s, exit {o['exit_s']:.1f} s)", "", ""))
    ng = res.get("nanogpt_target")
    if ng:
        rows.append(("nanoGPT recipe: whole command, full-split val",
                     f"{ng['wall_s']:.1f} s; val {ng['full']['loss']:.4f} (its estimate "
                     f"{ng['evals'][-1][1] if ng['evals'] else '-'})", "", ""))
    return rows


def write_results(res: dict[str, Any], rows, argv: list[str]) -> None:
    lines = bs.results_head(res, rows, "bench_recipe.py", argv,
                            title="modern recipe vs nanoGPT (issue 13)")
    for key, runs in (res.get("quality") or {}).items():
        for i, r in enumerate(runs, start=1):
            lines += ["", f"{key} run {i}: checkpoints (step, on disk at s, full-split val): "
                      + ", ".join(f"({c['step']}, {c['at_s']:.1f}, {c['full_val']:.4f})"
                                  for c in r["scored"])
                      + "; in-run estimates (step, val): "
                      + ", ".join(f"({s}, {v:.4f})" for s, v, _ in r["evals"])]
    sp = res.get("speed")
    if sp:
        lines += ["", f"nanoGPT: `python {sp['nanogpt_command']}`"]
    bs.append_results(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=bs.DEFAULT_DATA)
    p.add_argument("--nanogpt", type=Path, required=True,
                   help="nanoGPT checkout with data/shakespeare_char prepared")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: both sides "
                   "train there (nanoGPT then with --compile=True)")
    p.add_argument("--steps", type=int, default=300, help="steps per speed run (300)")
    p.add_argument("--rounds", type=int, default=3, help="speed rounds (3)")
    p.add_argument("--target", type=float, default=1.88, help="full-split val loss (1.88)")
    p.add_argument("--target-runs", type=int, default=2, help="runs per preset (2)")
    p.add_argument("--target-fp32", action="store_true",
                   help="also time shakespeare-char-fast to quality in fp32")
    p.add_argument("--nanogpt-target", type=int, default=0, metavar="ITERS",
                   help="also run nanoGPT's recipe for ITERS iterations (2000) and score it")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--home", help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args(argv)
    if not (args.nanogpt / "data" / "shakespeare_char" / "val.bin").is_file():
        p.error(f"--nanogpt {args.nanogpt}: run data/shakespeare_char/prepare.py there first")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.data, args.nanogpt = args.data.resolve(), args.nanogpt.resolve()
    DEVICE["name"] = args.device
    res: dict[str, Any] = {"load_before": bs.load_average(), "machine": bs.machine_info()}
    m = res["machine"]
    bs.say(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, commit {m['commit']}"
           f"; load average {bs._fmt(res['load_before'], '.2f')}")

    def part(key: str, title: str, fn) -> None:
        bs.say(f"\n== {title}")
        t0, watch = time.perf_counter(), bs.CpuWatch()
        res[key] = fn()
        res.setdefault("noise", {})[key] = watch.stop()
        bs.say(f"  ({time.perf_counter() - t0:.0f} s; {bs.noise(res['noise'][key])})")

    with bs.scratch_home(args.home, args.keep) as home:
        if not args.skip_speed:
            part("speed", f"speed: {args.rounds} rounds of {args.steps} steps",
                 lambda: speed(home, args.data, args.nanogpt, args.steps, args.rounds))
        if not args.skip_quality:
            def quality() -> dict[str, Any]:
                out: dict[str, Any] = {}
                kinds = [(p, "auto") for p in PRESETS]
                if args.target_fp32:
                    kinds.append(("shakespeare-char-fast", "fp32"))
                for i in range(args.target_runs):
                    for preset, prec in kinds:
                        out.setdefault(f"{preset}/{prec}", []).append(time_to_quality(
                            home, args.data, preset, prec, args.target,
                            f"bench-q-{bs.TAG}-{i}-{preset}-{prec}"))
                return out
            part("quality", f"time to full-split val <= {args.target:g}", quality)
        if args.nanogpt_target:
            part("nanogpt_target", f"nanoGPT's recipe, {args.nanogpt_target} iterations",
                 lambda: nanogpt_target(args.nanogpt, args.data, home, args.nanogpt_target))
    res["load_after"] = bs.load_average()
    return bs.report(res, summary_rows(res), args, argv, write_results)


if __name__ == "__main__":
    sys.exit(main())
