"""Sharing a CPU machine's cores between the runs that train on it at the same time.

Every torch process uses all cores by default; two of them on one CPU stall each other's
OpenMP barriers (measured: two runs together at well under half of one run's speed). So each
CPU run of a home registers itself in ``runs/.cpu-share/<run_id>.json`` (pid + process start
time, like every liveness check here) and trains with ``cores // runs`` threads, re-checked
every few seconds: a new run shrinks the others, a finished one gives its cores back. A run
whose config sets ``runtime.num_threads`` keeps it (and still counts for the others). No torch.
"""

from __future__ import annotations

import contextlib
import os
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


def active_processes(home: Path) -> int:
    """Training processes of live CPU runs in this home; entries of dead runs are removed."""
    total = 0
    folder = _dir(home)
    if not folder.is_dir():
        return 0
    for path in folder.glob("*.json"):
        entry = read_json(path)
        if entry and launcher.process_alive(entry.get("pid"), entry.get("create_time")):
            total += int(entry.get("processes") or 1)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return total


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """An even share of the cores (at least one thread each)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, processes))
