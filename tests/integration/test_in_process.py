"""A --foreground run in this process (``Service(in_process=True)``, what tests.helpers.run_cli
uses): the same worker and records as a child's, and this process as it was afterwards."""

from __future__ import annotations

import os
import signal

import torch

from llm_trainer.store.locks import ModelLock
from llm_trainer.store.runs import RunStore
from tests.helpers import TINY, run_cli

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def process_state() -> dict:
    return {"handlers": {s: signal.getsignal(s) for s in SIGNALS}, "cwd": os.getcwd(),
            "threads": torch.get_num_threads(), "rng": torch.get_rng_state(),
            "fds": sorted(os.listdir("/proc/self/fd")), "env": dict(os.environ)}


def test_a_foreground_run_in_process_trains_and_puts_the_process_back(tmp_path, corpus):
    home = tmp_path / "h"
    home.mkdir()
    before = process_state()
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--max-steps", "5", "--name",
                   "here", "--foreground", "--sample", "0", home=home, check=True)
    after = process_state()
    assert f"(pid {os.getpid()})" in proc.stdout  # this process trained it
    assert "completed: model here at step 5" in proc.stdout
    [run_id] = RunStore(home).run_ids()
    assert RunStore(home).read_state(run_id).status == "completed"
    assert f"pid {os.getpid()}, foreground" in RunStore(home).paths(run_id).log.read_text()
    assert torch.equal(after.pop("rng"), before.pop("rng"))
    assert after == before  # handlers, folder, threads, descriptors (the lock's), environment
    ModelLock.acquire(home / "checkpoints" / "here").release()  # nobody holds it any more
