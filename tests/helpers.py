"""Helpers the tests share: a synthetic corpus, the real CLI in a subprocess, waiting, and a
callback that records training events. Fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from llm_trainer.training.callbacks import Callback

WORDS = ("the a of to and in that it was he for on are as with his they at be this from "
         "have or by one had not but what all were when we there can an your which their said "
         "if do will each about how up out them then she many some so these would other into "
         "has more her two like him see time could no make than first been its who now people "
         "my made over did down only way find use may water long little very after words "
         "called just where most know get through back much before go good new write our "
         "used me man too any day same right look think also around another came come work "
         "three word must because does part even place well such here take why things help "
         "put years different away again off went old number great tell men say small every "
         "found still between name should home big give air line set own under read last "
         "never us left end along while might next sound below saw something thought both "
         "few those always looked show large often together asked house world going want").split()


def corpus_text(n_chars: int = 60_000, seed: int = 0) -> str:
    """Deterministic English-like text: sentences of common words, lines and paragraphs."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n_chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        sentence = sentence[0].upper() + sentence[1:] + rng.choice(".!?.")
        out.append(sentence)
        size += len(sentence) + 1
        out.append("\n\n" if rng.random() < 0.1 else ("\n" if rng.random() < 0.3 else " "))
    return "".join(out)[:n_chars]


# tiny, fast settings for end-to-end runs (seconds on a CPU)
TINY = ["--preset", "tiny", "--set", "model.n_embd=32", "--set", "train.log_interval=5"]


def run_cli(*args: str, home: Path, timeout: float = 300, check: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "LLM_TRAINER_HOME": str(home), "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "llm_trainer", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=str(home))
    if check and proc.returncode != 0:
        raise AssertionError(f"llm-trainer {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def stop_all_runs(home: Path) -> None:
    """Kill any worker a test left running under ``home`` (a failed test must not leave
    training processes behind)."""
    from llm_trainer.service import Service

    svc = Service(home)
    for view in svc.list_runs(active_only=True):
        with contextlib.suppress(Exception):
            svc.stop(view.run_id, now=True)


def wait_for(predicate, timeout=60.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


class Recorder(Callback):
    """Keeps every training event; sets ``flag`` once progress reaches ``stop_after``."""

    def __init__(self, stop_after: int | None = None, flag=None):
        self.progress, self.evals, self.ckpts, self.lines = [], [], [], []
        self.samples, self.anomalies = [], []
        self.stop_after, self.flag = stop_after, flag

    def on_log(self, message):
        self.lines.append(message)

    def on_start(self, trainer, info):
        self.info = info

    def on_progress(self, trainer, p):
        self.progress.append(p)
        if self.stop_after is not None and p["step"] >= self.stop_after:
            self.flag.set()

    def on_eval(self, trainer, r):
        self.evals.append(r)

    def on_checkpoint(self, trainer, r):
        self.ckpts.append(r)

    def on_sample(self, trainer, s):
        self.samples.append(s)

    def on_anomaly(self, trainer, e):
        self.anomalies.append(e)


class Flag:
    """A stop flag, set from a callback."""

    def __init__(self):
        self.value = False

    def set(self):
        self.value = True

    def is_set(self):
        return self.value
