"""Sharing a CPU machine's cores between the runs that train on it at the same time.

Every torch process uses all cores by default; two of them on one CPU stall each other's
OpenMP barriers (measured: two runs together at well under half of one run's speed). So each
CPU run of a home registers itself in ``runs/.cpu-share/<run_id>.json`` (pid + process start
time, like every liveness check here) and trains with ``cores // runs`` threads, re-checked
every few seconds: a new run shrinks the others, a finished one gives its cores back. A run
whose config sets ``runtime.num_threads`` keeps it (and still counts for the others).

Other programs count too: the cores they keep busy (the machine's busy time less this home's
runs', between two readings) are not shared out. Measured on 2 cores busy with other work:
2 threads ran at 280-560 tok/s where 1 thread ran at 2,300-2,800, because each step waits
for its slowest thread at OpenMP's barrier. No torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

from llm_trainer import launcher
from llm_trainer.store.atomic import atomic_write_json, read_json


def _dir(home: Path) -> Path:
    return Path(home) / "runs" / ".cpu-share"


def register(home: Path, run_id: str, *, pid: int, create_time: float | None,
             processes: int = 1) -> None:
    atomic_write_json(_dir(home) / f"{run_id}.json",
                      {"run_id": run_id, "pid": pid, "create_time": create_time,
                       "processes": processes}, durable=False)


def unregister(home: Path, run_id: str) -> None:
    with contextlib.suppress(OSError):
        (_dir(home) / f"{run_id}.json").unlink()


IGNORE_LOAD_ENV = "LLM_TRAINER_IGNORE_LOAD"  # "1": share the cores as if nothing else ran
# a core counts as free while other programs use at most this much of it (the noise of an
# idle desktop must not cost a thread; a busy loop must)
FREE_CORE_SLACK = 0.25


def _live_entries(home: Path) -> list[dict]:
    """The entries of live CPU runs in this home; entries of dead runs are removed."""
    folder = _dir(home)
    if not folder.is_dir():
        return []
    live = []
    for path in folder.glob("*.json"):
        entry = read_json(path)
        if entry and launcher.process_alive(entry.get("pid"), entry.get("create_time")):
            live.append(entry)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return live


def active_processes(home: Path) -> int:
    """Training processes of live CPU runs in this home; entries of dead runs are removed."""
    return sum(int(entry.get("processes") or 1) for entry in _live_entries(home))


def threads_per_process(processes: int, cores: int | None = None, *,
                        others_busy: float = 0.0) -> int:
    """An even share of the cores that other programs leave free (at least one thread each).

    ``processes``: this home's training processes, this one included; ``others_busy``: the
    cores other programs keep busy (``LoadSampler.others_busy``). A thread only gets a core
    that is nearly free: on a busy one it stalls every step of its process."""
    cores = cores or os.cpu_count() or 1
    processes = max(1, processes)
    free = max(0.0, cores - max(0.0, others_busy))
    by_load = math.floor(free / processes + FREE_CORE_SLACK)
    return max(1, min(cores // processes, by_load))


class LoadSampler:
    """How many cores other programs keep busy: the machine's busy CPU time less that of
    this home's training processes, between the previous reading and now (no waiting, except
    for the first reading's ``min_interval``). ``LLM_TRAINER_IGNORE_LOAD=1`` reads 0: for
    measurements that set the load themselves and tests of the home's own share."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.ignore = os.environ.get(IGNORE_LOAD_ENV, "") == "1"
        self._last = self._read()

    def _read(self) -> tuple[float, float, float, dict[int, tuple[float, float]], float]:
        """(monotonic time, all cores' CPU seconds, their idle seconds, {pid: (CPU seconds,
        start time)} of this home's runs, wall-clock time)."""
        import psutil

        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        own: dict[int, tuple[float, float]] = {}
        for entry in _live_entries(self.home):
            with contextlib.suppress(psutil.Error, TypeError, ValueError, KeyError):
                c = psutil.Process(int(entry["pid"])).cpu_times()
                own[int(entry["pid"])] = (c.user + c.system, entry.get("create_time") or 0.0)
        return time.monotonic(), sum(t), idle, own, time.time()

    @staticmethod
    def _own_since(before, now) -> float:
        """This home's CPU seconds between two readings: a run seen before counts from its
        earlier reading, one that started in between from zero."""
        spent = 0.0
        for pid, (cpu, started) in now[3].items():
            if pid in before[3]:
                spent += cpu - before[3][pid][0]
            elif started >= before[4]:
                spent += cpu
        return spent

    def others_busy(self, min_interval: float = 0.25) -> float:
        """Cores busy with other programs since the last call (at least ``min_interval``
        seconds are sampled: the first call may wait that long)."""
        if self.ignore:
            return 0.0
        wait = self._last[0] + min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        before, now = self._last, self._read()
        self._last = now
        return others_busy_cores(cores=os.cpu_count() or 1, total=now[1] - before[1],
                                 idle=now[2] - before[2],
                                 own=self._own_since(before, now))


def others_busy_cores(*, cores: int, total: float, idle: float, own: float) -> float:
    """Cores kept busy by others: CPU seconds over ``total`` (all cores' time in the
    interval), less ``idle`` and this home's ``own``, as a number of cores."""
    if total <= 0:
        return 0.0
    wall = total / cores  # the interval, in seconds
    return max(0.0, (total - idle - own) / wall)
