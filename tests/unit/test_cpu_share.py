"""The CPU share registry: live runs count, dead ones are dropped, cores are split evenly."""

import os
import subprocess
import sys
import time

import psutil
import pytest

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


def test_cores_other_programs_keep_busy_are_not_shared_out():
    # 2 cores, both busy with a competing load: one thread, never two stalling each other
    assert cpu_share.threads_per_process(1, cores=2, others_busy=2.0) == 1
    assert cpu_share.threads_per_process(1, cores=2, others_busy=1.0) == 1
    # an idle desktop's noise costs no thread
    assert cpu_share.threads_per_process(1, cores=2, others_busy=0.2) == 2
    assert cpu_share.threads_per_process(1, cores=8, others_busy=3.0) == 5
    assert cpu_share.threads_per_process(2, cores=8, others_busy=3.0) == 2
    assert cpu_share.threads_per_process(2, cores=8, others_busy=0.0) == 4
    assert cpu_share.threads_per_process(1, cores=8, others_busy=40.0) == 1


def test_busy_cores_are_the_machines_less_this_homes_runs():
    # 2 cores for 1 s: 2 CPU seconds, 0.5 idle, 0.5 of them this home's runs
    assert cpu_share.others_busy_cores(cores=2, total=2.0, idle=0.5, own=0.5) == 1.0
    assert cpu_share.others_busy_cores(cores=2, total=2.0, idle=0.0, own=2.0) == 0.0
    assert cpu_share.others_busy_cores(cores=2, total=0.0, idle=0.0, own=0.0) == 0.0


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_a_busy_run_of_this_home_is_not_counted_as_load(tmp_path):
    """Two samplers read the same machine over the same interval; the one whose home holds a
    busy run leaves that run's CPU time out of the load."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        proc = psutil.Process(spin.pid)
        cpu_share.register(tmp_path / "mine", "spin", pid=spin.pid,
                           create_time=proc.create_time())
        mine = cpu_share.LoadSampler(tmp_path / "mine")
        empty = cpu_share.LoadSampler(tmp_path / "empty")
        own_before = sum(proc.cpu_times()[:2])
        time.sleep(0.5)
        with_run, without = mine.others_busy(), empty.others_busy()
        spent = sum(proc.cpu_times()[:2]) - own_before
        assert spent > 0.1  # the spinner ran
        assert without - with_run > 0.5 * spent / 0.6  # its share of the interval, left out
    finally:
        spin.kill()
        spin.wait()


def test_the_load_can_be_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_share.IGNORE_LOAD_ENV, "1")
    assert cpu_share.LoadSampler(tmp_path).others_busy() == 0.0
