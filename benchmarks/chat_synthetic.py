"""The synthetic instruction benchmark: does a small chat model trained from scratch learn to
follow a simple instruction, and does the loss mask do its job?

    python benchmarks/chat_synthetic.py make reverse tasks.jsonl [--n 6000] [--noise]
    python benchmarks/chat_synthetic.py run [--task reverse] [--out FILE.json]

``make`` writes conversations for one task (``reverse``, ``copy``, ``upper``, ``shift``):
the user says "<task>: <word>" (3-8 random lowercase letters), the assistant answers. With
``--noise`` the user turn starts with random letters the model cannot predict.

``run`` (in a scratch home) writes the training tasks and a held-out set of prompts whose
words never occur in training, runs ``llm-trainer train --preset chat-synthetic`` (the time
a user sees, whole command), scores exact match on the held-out prompts with greedy decoding
through the same call ``generate --chat`` makes (and checks a few through the real command),
then trains again with ``--set train.loss_on=all`` on data with noisy user turns, and with
the assistant-only loss on the same data, to show the loss each reports. Writes the figures
as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TASKS = {
    "reverse": lambda w: w[::-1],
    "copy": lambda w: w,
    "upper": lambda w: w.upper(),
    "shift": lambda w: "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in w),
}


def words(rng: random.Random, n: int, exclude: set[str] | None = None) -> list[str]:
    out, seen = [], set(exclude or ())
    while len(out) < n:
        w = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 8)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def conversation(task: str, word: str, rng: random.Random | None = None) -> dict:
    prompt = f"{task}: {word}"
    if rng is not None:  # noise the model cannot predict, before the instruction
        prompt = "".join(rng.choice(LETTERS) for _ in range(rng.randint(8, 16))) + " " + prompt
    return {"messages": [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": TASKS[task](word)}]}


def make(task: str, path: Path, n: int, seed: int = 0, noise: bool = False,
         exclude: set[str] | None = None) -> list[str]:
    rng = random.Random(seed)
    ws = words(rng, n, exclude)
    with open(path, "w", encoding="utf-8") as fh:
        for w in ws:
            fh.write(json.dumps(conversation(task, w, rng if noise else None)) + "\n")
    return ws


def cli(home: Path, *args: str, check: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llm_trainer", *args], cwd=home, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise SystemExit(f"llm-trainer {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc, seconds


def val_loss(home: Path, model: str) -> float | None:
    from llm_trainer.store.checkpoints import resolve_checkpoint

    ckpt = resolve_checkpoint(home / "checkpoints" / model, "latest")
    trainer = json.loads((ckpt.path / "trainer.json").read_text())
    return trainer.get("val_loss")


def exact_match(home: Path, model: str, task: str, held: list[str]) -> tuple[float, list]:
    """Greedy replies to the held-out prompts, through the service call `generate --chat`
    makes; the share that is exactly right, and the misses."""
    from llm_trainer.inference.settings import GenerationSettings
    from llm_trainer.service import Service

    settings = GenerationSettings(max_new_tokens=24, temperature=0.0, top_k=None)
    chat = Service(home).chat(settings, model=model, device="cpu")
    replies = []
    for w in held:  # each prompt a new conversation, as `generate --chat` has it
        chat.reset()
        replies.append("".join(chat.session.reply(f"{task}: {w}", settings)))
    misses = [(w, r) for w, r in zip(held, replies, strict=True) if r != TASKS[task](w)]
    return 1 - len(misses) / len(held), misses


def run(task: str, n_train: int, n_held: int, mask_check: bool = True) -> dict:
    home = Path(tempfile.mkdtemp(prefix="chat-synthetic-"))
    train_words = make(task, home / "tasks.jsonl", n_train, seed=1)
    held = words(random.Random(2), n_held, set(train_words))
    _, seconds = cli(home, "train", "--foreground", "--preset", "chat-synthetic",
                        "--dataset", "tasks.jsonl", "--name", "chat", "--sample", "0")
    score, misses = exact_match(home, "chat", task, held)
    spot = []
    for w in held[:3]:  # the real command, as a user runs it
        out, _ = cli(home, "generate", "--chat", "--model", "chat", "--prompt", f"{task}: {w}",
                     "--temperature", "0")
        spot.append({"prompt": f"{task}: {w}", "reply": out.stdout.strip(),
                     "expected": TASKS[task](w)})
    # the mask: noisy user turns, the loss on everything vs on the replies only
    make(task, home / "noisy.jsonl", n_train, seed=3, noise=True)
    losses = {}
    for loss_on in ("assistant", "all") if mask_check else ():
        cli(home, "train", "--foreground", "--preset", "chat-synthetic", "--dataset",
            "noisy.jsonl", "--name", f"noisy-{loss_on}", "--sample", "0",
            "--set", f"train.loss_on={loss_on}")
        losses[loss_on] = val_loss(home, f"noisy-{loss_on}")
    return {"task": task, "train_examples": n_train, "held_out_prompts": n_held,
            "train_seconds_whole_command": round(seconds, 1), "exact_match": round(score, 4),
            "misses": misses[:10], "spot_checks": spot, "noisy_val_loss": losses,
            "home": str(home)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("task", choices=sorted(TASKS))
    m.add_argument("path", type=Path)
    m.add_argument("--n", type=int, default=6000)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--noise", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--task", choices=sorted(TASKS), default="reverse")
    r.add_argument("--n-train", type=int, default=6000)
    r.add_argument("--n-held", type=int, default=200)
    r.add_argument("--out", type=Path)
    r.add_argument("--skip-mask", action="store_true",
                   help="skip the two noisy-data runs that show the loss mask at work")
    args = ap.parse_args()
    if args.cmd == "make":
        make(args.task, args.path, args.n, args.seed, args.noise)
        return
    result = run(args.task, args.n_train, args.n_held, mask_check=not args.skip_mask)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
