"""`data prepare`: a real preparation through the CLI, its JSON, the cache a second call and
`train` then find; a stop while data is prepared (a training run's `stop`, a Ctrl-C of the
command) answered within 2 s; and a preparation killed with SIGKILL that resumes from its
finished shards to the very tokens of an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from llm_trainer.store.runs import RunStore
from llm_trainer.views import PreparedData
from tests.helpers import TINY, corpus_text, run_cli, stop_all_runs, wait_for

SMALL_SHARDS = {"LLM_TRAINER_SHARD_TOKENS": "40000"}  # a train and a val shard at least
STOP_WITHIN_S = 2.0


def prepare(home: Path, *args: str, env: dict | None = None) -> dict:
    proc = run_cli("data", "prepare", *args, "--json", home=home, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow  # a real training process
def test_prepare_then_a_second_call_and_train_read_the_cache(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(300_000), encoding="utf-8")
    first = prepare(home, "corpus.txt", "--preset", "tiny", env=SMALL_SHARDS)
    assert set(first) == {f.name for f in fields(PreparedData)}
    assert first["spec"] == str(home / "corpus.txt")  # absolute, as train records it
    assert (first["from_cache"], first["resumed_shards"], first["dtype"]) == \
        (False, 0, "uint16")
    assert first["tokenizer"]["kind"] == "char"  # the tiny preset's, as train would use
    assert first["shards"] >= 2 and first["train_tokens"] > 200_000
    assert first["train_documents"] > 0 and first["val_documents"] > 0
    assert first["hold_out"]["val_fraction"] == 0.1 and first["mb_per_s"] > 0
    manifest = json.loads((Path(first["cache_dir"]) / "manifest.json").read_text())
    assert len(manifest["shards"]) == first["shards"]
    assert sum(s["tokens"] for s in manifest["shards"]) == \
        first["train_tokens"] + first["val_tokens"]

    again = run_cli("data", "prepare", "corpus.txt", "--preset", "tiny", home=home,
                    env=SMALL_SHARDS)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already prepared: corpus.txt")
    assert f"  cache:      {first['cache_dir']}" in again.stdout
    assert "tokenizing" not in again.stderr
    cached = prepare(home, "corpus.txt", "--preset", "tiny", env=SMALL_SHARDS)
    assert cached["from_cache"] and cached["mb_per_s"] is None
    assert {k: v for k, v in cached.items() if k not in ("from_cache", "seconds", "mb_per_s")} \
        == {k: v for k, v in first.items() if k not in ("from_cache", "seconds", "mb_per_s")}

    proc = run_cli("train", *TINY, "--dataset", "corpus.txt", "--max-steps", "2",
                   "--foreground", "--sample", "0", home=home, env=SMALL_SHARDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run_id] = RunStore(home).run_ids()
    log = RunStore(home).paths(run_id).log.read_text()
    assert f"{first['train_tokens']:,} training and {first['val_tokens']:,} validation " \
           "tokens (char tokenizer, vocab" in log
    assert "cached)" in log and "tokenizing" not in log
    state = RunStore(home).read_state(run_id)
    assert state.status == "completed" and state.phase is None  # cleared once it trained


# --------------------------------------------------------------------------- stops and kills


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A plain-text corpus of ~48 MB: seconds of tokenizing with two processes here."""
    path = tmp_path_factory.mktemp("big") / "big.txt"
    block = corpus_text(1_500_000, seed=3)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(32):  # blocks told apart so that no two shards are the same
            fh.write(f"Part {i}.\n\n{block}\n\n")
    return path


def child(home: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``llm-trainer ARGS`` in a real child process (its own process group: a signal meant
    for it reaches it alone), stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "llm_trainer", *args], cwd=home, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "LLM_TRAINER_HOME": str(home), "HF_HUB_OFFLINE": "1",
             "PYTHONUNBUFFERED": "1", **(env or {})})


def wait_line(stream, wanted: str, timeout: float = 60.0) -> list[str]:
    """The lines of ``stream`` up to the first that contains ``wanted``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if wanted in line:
            return seen
    raise AssertionError(f"no line with {wanted!r} in:\n" + "\n".join(seen))


@pytest.mark.slow  # seconds of tokenizing in real processes
def test_stop_of_a_run_preparing_its_data_answers_within_2s(tmp_path, big):
    from llm_trainer.service import Service

    home = tmp_path / "h"
    home.mkdir()
    try:
        proc = run_cli("train", "--preset", "tiny", "--dataset", str(big), "--name", "prep",
                       home=home)
        assert proc.returncode == 0, proc.stderr
        [run_id] = RunStore(home).run_ids()
        state = wait_for(lambda: (s := RunStore(home).read_state(run_id)).phase_stage ==
                         "tokenizing" and s, timeout=120)
        shown = run_cli("status", home=home, check=True).stdout
        assert "preparing data" in shown  # the run's state in the table
        assert state.status == "running" and state.phase == "preparing_data"
        asked = time.monotonic()
        # what `stop` does, waiting 10 s at most (not its 300) so that a hang fails quickly
        result = Service(home).stop(run_id, timeout=10)
        answered = time.monotonic() - asked
        assert answered < STOP_WITHIN_S, f"stop took {answered:.2f} s ({result.status})"
        assert result.status == "stopped"
        state = RunStore(home).read_state(run_id)
        assert state.status == "stopped" and "preparing data" in (state.reason or "")
        view = Service(home).run_view(run_id)
        assert view.phase is None  # a stopped run shows no phase
    finally:
        stop_all_runs(home)


@pytest.mark.slow  # seconds of tokenizing in real processes
def test_ctrl_c_stops_data_prepare_within_2s_and_keeps_the_finished_shards(tmp_path, big):
    home = tmp_path / "h"
    home.mkdir()
    proc = child(home, "data", "prepare", str(big), "--tokenizer", "char", "--num-proc", "2",
                 env={"LLM_TRAINER_SHARD_TOKENS": "2000000"})
    try:
        wait_line(proc.stderr, "tokenizing", timeout=120)
        progress = wait_for(lambda: next(iter((home / "data" / "tokens").glob(
            "*/progress.json")), None), timeout=60)  # a shard is committed
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        asked = time.monotonic()
        code = proc.wait(timeout=30)
        answered = time.monotonic() - asked
    finally:
        proc.kill()
    rest = proc.stderr.read()
    assert code == 130, rest
    assert answered < STOP_WITHIN_S, f"Ctrl-C took {answered:.2f} s"
    kept = len(json.loads(progress.read_text())["shards"])
    assert f"stopped; {kept} of about " in rest and \
        "shards kept; run the same command to resume" in rest
    assert not (progress.parent / "manifest.json").exists()


@pytest.mark.slow  # seconds of tokenizing in real processes
def test_ctrl_c_of_a_foreground_train_while_it_prepares_and_the_same_command_resumes(
        tmp_path, big):
    home = tmp_path / "h"
    home.mkdir()
    args = ("train", "--preset", "tiny", "--dataset", str(big), "--name", "fg", "--max-steps",
            "2", "--foreground", "--sample", "0")
    shards = {"LLM_TRAINER_SHARD_TOKENS": "2000000"}
    proc = child(home, *args, env=shards)
    try:
        tokens = home / "data" / "tokens"
        wait_for(lambda: next(iter(tokens.glob("*/progress.json")), None), timeout=120)
        [run_id] = RunStore(home).run_ids()
        assert RunStore(home).read_state(run_id).phase == "preparing_data"
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        asked = time.monotonic()
        try:  # reading both pipes while it ends: a full pipe must not look like a hang
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("no exit 30 s after Ctrl-C; its processes: " + subprocess.run(
                ["ps", "-o", "pid,pgid,stat,wchan:20,args", "-s", str(proc.pid)],
                capture_output=True, text=True).stdout + "\nthe run's log:\n"
                + RunStore(home).paths(run_id).log.read_text())
        answered = time.monotonic() - asked
        code = proc.returncode
    finally:
        proc.kill()
    assert code == 130, out + err
    assert answered < STOP_WITHIN_S, f"Ctrl-C took {answered:.2f} s"
    assert "stopping the data preparation: its finished shards are kept" in out
    assert out.rstrip().endswith("stopped while preparing data; the finished data shards are "
                                 "kept: run the same command to resume from them")
    again = run_cli(*args, home=home, env=shards)
    assert again.returncode == 0, again.stdout + again.stderr
    second = max(RunStore(home).run_ids())  # ids sort by time
    assert "resuming after" in RunStore(home).paths(second).log.read_text()


def stream_sha256(cache_dir: str) -> dict[str, tuple[int, str]]:
    """Each split's tokens end to end, shard after shard: (bytes, sha256)."""
    manifest = json.loads((Path(cache_dir) / "manifest.json").read_text())
    out = {}
    for split in ("train", "val"):
        h, n = hashlib.sha256(), 0
        for rec in manifest["shards"]:
            if rec["split"] == split:
                data = (Path(cache_dir) / rec["file"]).read_bytes()
                h.update(data)
                n += len(data)
        out[split] = (n, h.hexdigest())
    return out


@pytest.mark.slow  # seconds of tokenizing in real processes
def test_a_killed_preparation_resumes_to_the_tokens_of_an_uninterrupted_one(tmp_path, big):
    shards = {"LLM_TRAINER_SHARD_TOKENS": "2000000"}
    home = tmp_path / "h"
    home.mkdir()
    proc = child(home, "data", "prepare", str(big), "--tokenizer", "char", "--num-proc", "2",
                 env=shards)
    try:
        record = wait_for(lambda: next(iter((home / "data" / "tokens").glob(
            "*/progress.json")), None), timeout=120)
        kept = wait_for(lambda: (n := len(json.loads(record.read_text())["shards"])) >= 3
                        and n, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert not (record.parent / "manifest.json").exists()  # it was killed before the end

    resumed = prepare(home, str(big), "--tokenizer", "char", "--num-proc", "2", env=shards)
    assert not resumed["from_cache"]
    assert resumed["resumed_shards"] >= kept  # those it had, and any committed after a look

    other = tmp_path / "other"
    other.mkdir()
    straight = prepare(other, str(big), "--tokenizer", "char", "--num-proc", "2", env=shards)
    assert straight["resumed_shards"] == 0
    assert (resumed["train_tokens"], resumed["val_tokens"], resumed["train_documents"],
            resumed["val_documents"]) == (straight["train_tokens"], straight["val_tokens"],
                                          straight["train_documents"],
                                          straight["val_documents"])
    assert stream_sha256(resumed["cache_dir"]) == stream_sha256(straight["cache_dir"])
