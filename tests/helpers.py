"""Helpers the tests share: a synthetic corpus, the real CLI (in this process, or in a child
for the tests about processes), waiting, and a callback that records training events.
Fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import time
import traceback
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


# tiny, fast settings for end-to-end runs (seconds on a CPU); one thread: a model this small
# trains several times faster on one than split across cores (more so on a busy machine)
TINY_ALL_CORES = ["--preset", "tiny", "--set", "model.n_embd=32", "--set",
                  "train.log_interval=5"]  # for the tests of how runs share the cores
TINY = [*TINY_ALL_CORES, "--set", "runtime.num_threads=1"]


# a terminal's size from the shell running the tests (some CI runners export it) would narrow
# the CLI's tables in a pipe: run_cli gives a pipe's defaults unless ``env`` says otherwise
PIPE_UNSET = ("COLUMNS", "LINES")


def run_cli(*args: str, home: Path, timeout: float = 300, check: bool = False,
            env: dict | None = None, cwd: Path | None = None,
            process: bool = False) -> subprocess.CompletedProcess:
    """``llm-trainer ARGS`` with ``home`` as LLM_TRAINER_HOME, run from ``cwd`` (default: the
    home): its exit code, stdout and stderr. In this process (``cli.main``; a ``--foreground``
    run trains here too, through ``Service(in_process=True)``) unless ``process``: a real
    ``python -m llm_trainer`` child, for the tests about processes (and whenever ``env``
    sets PYTHONPATH, which only a new interpreter reads)."""
    full_env = {"LLM_TRAINER_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
    if process or "PYTHONPATH" in full_env:
        inherited = {k: v for k, v in os.environ.items() if k not in PIPE_UNSET}
        proc = subprocess.run([sys.executable, "-m", "llm_trainer", *args], capture_output=True,
                              text=True, timeout=timeout, cwd=str(cwd or home),
                              env={**inherited, "PYTHONUNBUFFERED": "1", **full_env})
    else:
        proc = cli_in_process(list(args), env=full_env, cwd=Path(cwd or home))
    if check and proc.returncode != 0:
        raise AssertionError(f"llm-trainer {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def cli_in_process(args: list[str], *, env: dict[str, str], cwd: Path
                   ) -> subprocess.CompletedProcess:
    """``cli.main(args)`` as a child would run it: ``env`` added to the environment, in
    ``cwd``, ``sys.argv`` as the command line, stdin not a terminal, stdout and stderr
    captured (not terminals either); all of it put back afterwards. An exception the CLI lets
    through is exit code 1 and its traceback on stderr, as in a real process."""
    from llm_trainer.cli import main
    from llm_trainer.service import IN_PROCESS_ENV

    saved_env, saved_cwd, saved_argv, saved_stdin = dict(os.environ), os.getcwd(), sys.argv, \
        sys.stdin
    out, err = io.StringIO(), io.StringIO()
    for key in PIPE_UNSET:
        os.environ.pop(key, None)
    os.environ.update({IN_PROCESS_ENV: "1", **env})
    os.chdir(cwd)
    sys.argv, sys.stdin = ["llm-trainer", *args], io.StringIO("")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv, sys.stdin = saved_argv, saved_stdin
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["llm-trainer", *args], code, out.getvalue(),
                                       err.getvalue())


def shadow_package(monkeypatch, name: str, where: Path) -> None:
    """``import name`` in this process fails from now until the test ends, as for a child
    with a broken package of that name ahead on its PYTHONPATH: such a package in ``where``,
    first on sys.path, and the real one dropped from sys.modules (both put back after)."""
    (where / name).mkdir(parents=True)
    (where / name / "__init__.py").write_text(f"raise ImportError('No module named {name}')\n")
    monkeypatch.syspath_prepend(str(where))
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        monkeypatch.delitem(sys.modules, module)


def train_tiny(home: Path, *args: str) -> subprocess.CompletedProcess:
    """A TINY model trained in the foreground through the real CLI (no samples); the test
    fails with the CLI's output if training does."""
    proc = run_cli("train", *TINY, "--foreground", "--sample", "0", *args, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def stop_all_runs(home: Path) -> None:
    """Kill any worker a test left running under ``home`` (a failed test must not leave
    training processes behind)."""
    from llm_trainer.service import Service

    svc = Service(home)
    for view in svc.list_runs(active_only=True):
        with contextlib.suppress(Exception):
            svc.stop(view.run_id, now=True)
    # and any process still working in this home (a run whose state was not written yet)
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if f"--home {home}" in cmd and ("llm_trainer.worker" in cmd or
                                        "torch.distributed.run" in cmd):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def wait_for(predicate, timeout=60.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


class Recorder(Callback):
    """Keeps every training event (as its JSON dict); sets ``flag`` once progress reaches
    ``stop_after``."""

    def __init__(self, stop_after: int | None = None, flag=None):
        self.progress, self.evals, self.ckpts, self.lines = [], [], [], []
        self.samples, self.anomalies = [], []
        self.stop_after, self.flag = stop_after, flag

    def on_log(self, message):
        self.lines.append(message)

    def on_start(self, trainer, info):
        self.info = info.to_json()

    def on_progress(self, trainer, p):
        self.progress.append(p.to_json())
        if self.stop_after is not None and p.step >= self.stop_after:
            self.flag.set()

    def on_eval(self, trainer, r):
        self.evals.append(r.to_json())

    def on_checkpoint(self, trainer, r):
        self.ckpts.append(r.to_json())

    def on_sample(self, trainer, s):
        self.samples.append(s.to_json())

    def on_anomaly(self, trainer, e):
        self.anomalies.append(e.to_json())


class Flag:
    """A stop flag, set from a callback."""

    def __init__(self):
        self.value = False

    def set(self):
        self.value = True

    def is_set(self):
        return self.value


def make_hf_gpt2(folder: Path, text: str, *, n_layer: int = 2, n_head: int = 2,
                 n_embd: int = 32, n_positions: int = 64, vocab_size: int = 300,
                 weights: str = "safetensors", seed: int = 0, pad_vocab: int = 0) -> Path:
    """A tiny ``GPT2LMHeadModel`` folder as transformers saves it (random weights, a byte-level
    BPE tokenizer trained on ``text``): what a user's downloaded GPT-2 looks like, in small.
    ``weights="bin"``: a ``pytorch_model.bin`` in the layout of the original hub upload
    instead (no ``transformer.`` prefix, the ``attn.bias`` mask buffers, the tied head).
    ``pad_vocab``: that many embedding rows beyond the tokenizer's tokens (as GPT-2 variants
    padded to a multiple of 64 have)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm_trainer.data.tokenizer import EOT, TextTokenizer

    tok = TextTokenizer.train_bpe(text, vocab_size)
    eot = tok.tok.token_to_id(EOT)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=tok.vocab_size + pad_vocab, n_positions=n_positions,
                        n_embd=n_embd, n_layer=n_layer, n_head=n_head, bos_token_id=eot,
                        eos_token_id=eot)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tok.save(folder / "tokenizer.json")
    if weights == "bin":
        from safetensors.torch import load_file

        sd = {k.removeprefix("transformer."): v
              for k, v in load_file(str(folder / "model.safetensors")).items()}
        sd["lm_head.weight"] = sd["wte.weight"]
        for i in range(n_layer):
            sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n_positions, n_positions))
        torch.save(sd, folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return folder


def plan_only_hf_folder(folder: Path, *, n_positions: int = 64) -> Path:
    """A GPT-2 folder as planning reads it (config.json and a byte-level tokenizer.json; the
    weights file only exists, empty): fast, for tests that plan a fine-tune but never load
    it. ``make_hf_gpt2`` makes a real one."""
    import json

    from llm_trainer.data.tokenizer import TextTokenizer

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 32,
        "n_head": 2, "n_layer": 2, "n_positions": n_positions, "vocab_size": 300,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True}))
    (folder / "model.safetensors").write_bytes(b"")
    TextTokenizer.build_byte().save(folder / "tokenizer.json")
    return folder


def run_cli_tty(*args: str, home: Path, columns: int = 100, lines: int = 30,
                env: dict | None = None, timeout: float = 120) -> tuple[int, str]:
    """The real CLI with a pseudo-terminal of ``columns`` x ``lines`` as its stdin, stdout and
    stderr (what a user's terminal gives it): the exit code and everything it wrote."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    full_env = {**os.environ, "LLM_TRAINER_HOME": str(home), "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color", "COLUMNS": str(columns),
                "LINES": str(lines), **(env or {})}
    full_env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "llm_trainer", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=full_env, cwd=str(home),
                            close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def fake_run(home: Path, run_id: str, config: dict, *, model: str = "m",
             created_at: float = 1_800_000_000.0, train: tuple = (), evals: tuple = (),
             status: str = "completed", tokens_per_s: float | None = 1000.0,
             device: str = "cpu", kind: str = "train") -> str:
    """A finished run's records written straight to disk (no training): ``train`` and
    ``evals`` are (step, loss) pairs for metrics.jsonl; state.json gets the last values."""
    from llm_trainer.store.records import RunMeta, RunState
    from llm_trainer.store.runs import RunStore

    runs = RunStore(home)
    vals = [loss for _step, loss in evals]
    steps = [s for s, _ in (*train, *evals)]
    runs.create(
        RunMeta(run_id=run_id, created_at=created_at, kind=kind, config=config,
                model={"id": f"id-{model}", "name": model},
                selected_device={"selected": device, "name": device}),
        RunState(run_id=run_id, status=status, model_id=f"id-{model}", model_name=model,
                 created_at=created_at, started_at=created_at, ended_at=created_at + 60,
                 device=device, step=max(steps, default=0), tokens_per_s=tokens_per_s,
                 val_loss=vals[-1] if vals else None,
                 best_val_loss=min(vals) if vals else None))
    for step, loss in train:
        runs.append_metrics(run_id, {"kind": "train", "step": step, "loss": loss})
    for step, loss in evals:
        runs.append_metrics(run_id, {"kind": "eval", "step": step, "val_loss": loss})
    return run_id


def dry_run(home: Path, *args: str) -> dict:
    """``train --dry-run --json`` (or ``resume`` when the first argument is "resume") with
    TINY settings, through the real CLI; its parsed JSON."""
    import json

    command = ["resume", *args[1:]] if args[:1] == ("resume",) else ["train", *TINY, *args]
    proc = run_cli(*command, "--dry-run", "--json", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def home_contents(home: Path, folder: str) -> list[str]:
    """What ``home/folder`` holds (empty when it does not exist)."""
    path = home / folder
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


async def wait_until(pilot, predicate, timeout=60.0):
    """In a Textual pilot test: let the app run until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {predicate}")


def imported_model(src, block_size: int | None = None):
    """The model an ``--init-from`` run starts from: ``src`` (an inspected HF folder) read the
    way the trainer reads it, every tensor checked, in eval mode."""
    from llm_trainer.model.gpt import GPT
    from llm_trainer.model.hf_import import check_complete, load_hf_weights
    from llm_trainer.model.shape import ModelShape

    arch = src.arch | ({"block_size": block_size} if block_size else {})
    model = GPT(ModelShape(vocab_size=src.vocab_size, **arch))
    sd = load_hf_weights(src, arch["block_size"])
    check_complete(sd, model.state_dict(), src)
    model.load_state_dict(sd, strict=True)
    return model.eval()
