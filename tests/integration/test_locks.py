"""The model's training lock is an OS lock held by the training process: concurrent launches
race for it through the real CLI, and the kernel frees it when the holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from llm_trainer.store.runs import RunStore
from tests.helpers import TINY, TINY_ALL_CORES, corpus_text, run_cli, stop_all_runs, wait_for

pytestmark = pytest.mark.slow  # real training processes


@pytest.fixture
def trained(tmp_path):
    """A home with model `m` trained for a few steps (it has a checkpoint)."""
    home = tmp_path / "h"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(40_000))
    run_cli("train", "--foreground", *TINY, "--dataset", "corpus.txt", "--name", "m",
            "--max-steps", "10", "--sample", "0", home=home, check=True)
    yield home
    stop_all_runs(home)


def _cli(home, *args):
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "llm_trainer", *args], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_twenty_simultaneous_launches_start_exactly_one_run(trained):
    before = set(RunStore(trained).run_ids())
    launches = [_cli(trained, "train", "--model", "m", "--max-steps", "100000")
                if i % 2 else _cli(trained, "resume", "m", "--more-epochs", "500")
                for i in range(20)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in launches]
    started = [out for code, out, _ in results if code == 0]
    assert len(started) == 1, results
    winner = _started_run(started[0])
    refused = [err for code, _, err in results if code != 0]
    assert len(refused) == 19
    for err in refused:
        assert err.splitlines()[0] == f"error: model m is already training in run {winner}"
    assert set(RunStore(trained).run_ids()) - before == {winner}  # no failed leftovers


def _started_run(stdout: str) -> str:
    """The id in "started run <id> (pid ...)"."""
    return next(ln.split()[2] for ln in stdout.splitlines() if ln.startswith("started run"))


def _kill_and_resume_at_once(home, run_id, *resume_args):
    store = RunStore(home)
    state = wait_for(lambda: (s := store.read_state(run_id)).step > 5 and s,
                     timeout=120)
    os.kill(state.pid, signal.SIGKILL)
    wait_for(lambda: not _alive(state.pid), timeout=10)
    again = run_cli("resume", "m", *resume_args, home=home)  # no waiting, no stale lock
    assert again.returncode == 0, again.stderr
    assert _started_run(again.stdout) != run_id


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie (not reaped yet) is dead for us
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_kill_9_of_the_worker_frees_the_model_at_once(trained):
    proc = run_cli("resume", "m", "--more-epochs", "500", home=trained, check=True)
    _kill_and_resume_at_once(trained, _started_run(proc.stdout), "--more-epochs", "500")


def test_kill_9_of_rank_0_of_a_torchrun_run_frees_the_model_at_once(trained):
    proc = run_cli("resume", "m", "--more-epochs", "500", "--nproc", "2", "--set",
                   "runtime.dist_timeout=20", home=trained, check=True)
    _kill_and_resume_at_once(trained, _started_run(proc.stdout), "--more-epochs", "500")


def test_a_second_run_shares_the_cores_and_the_first_makes_room(trained):
    cores = os.cpu_count() or 1
    idle = {"LLM_TRAINER_IGNORE_LOAD": "1"}  # the home's share alone, however busy CI is
    first = run_cli("train", *TINY_ALL_CORES, "--dataset", "corpus.txt", "--name", "wide",
                    "--max-steps", "100000", home=trained, check=True, env=idle)
    first_id = _started_run(first.stdout)
    log = RunStore(trained).paths(first_id).log
    wait_for(lambda: f"CPU threads: {cores} of {cores} cores" in log.read_text(), timeout=120)
    second = run_cli("train", "--foreground", *TINY_ALL_CORES, "--dataset", "corpus.txt",
                     "--name", "narrow", "--max-steps", "1500", "--sample", "0", home=trained,
                     check=True, process=True, env=idle)  # two training processes
    half = max(1, cores // 2)
    assert f"CPU threads: {half} of {cores} cores (1 other training process in this home)" \
        in second.stdout
    # the first run shrank while the second trained, and grows back once it is gone
    text = log.read_text()
    assert f"CPU threads: {half} of {cores} cores (1 other training process" in text
    wait_for(lambda: log.read_text().count(f"CPU threads: {cores} of {cores} cores") >= 2,
             timeout=60)
