"""The CPU share registry: live runs count, dead ones are dropped, cores are split evenly."""

import os
import subprocess
import sys

import psutil

from llm_trainer import cpu_share


def test_live_runs_count_and_dead_ones_are_dropped(tmp_path):
    me = psutil.Process()
    cpu_share.register(tmp_path, "a", pid=me.pid, create_time=me.create_time())
    cpu_share.register(tmp_path, "ddp", pid=me.pid, create_time=me.create_time(), processes=2)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    cpu_share.register(tmp_path, "dead", pid=gone.pid, create_time=123.0)
    assert cpu_share.active_processes(tmp_path) == 3
    assert not (tmp_path / "runs" / ".cpu-share" / "dead.json").exists()
    cpu_share.unregister(tmp_path, "a")
    assert cpu_share.active_processes(tmp_path) == 2
    assert cpu_share.active_processes(tmp_path / "nowhere") == 0


def test_cores_are_shared_evenly_with_at_least_one_thread_each():
    assert cpu_share.threads_per_process(1, cores=8) == 8
    assert cpu_share.threads_per_process(2, cores=8) == 4
    assert cpu_share.threads_per_process(3, cores=2) == 1
    assert cpu_share.threads_per_process(0) == (os.cpu_count() or 1)
