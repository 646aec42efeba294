"""Spawning, signalling and liveness of detached worker processes. No torch.

A process is identified by its pid *and* its start time, so a pid reused by an unrelated
process after a crash or reboot is never mistaken for our worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.errors import UsageError

CREATE_TIME_TOLERANCE_S = 0.5


def process_start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_alive(pid: int | None, create_time: float | None) -> bool:
    """Is the process that had ``pid`` and started at ``create_time`` still running?"""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # a different start time: the pid now belongs to someone else
        return create_time is None or abs(proc.create_time() - float(create_time)) <= \
            CREATE_TIME_TOLERANCE_S
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, TypeError):
        return False


def worker_command(run_id: str, home: Path) -> list[str]:
    return [sys.executable, "-m", "llm_trainer.worker", run_id, "--home", str(home)]


def spawn_detached(cmd: list[str], *, log_path: Path, cwd: Path,
                   env: dict[str, str] | None = None,
                   pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start ``cmd`` in a new session (it survives the terminal or SSH session closing), with
    stdin from /dev/null and stdout+stderr appended to ``log_path``; ``pass_fds`` stay open
    in it (the training lock)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
        )


def send_signal(pid: int, create_time: float | None, sig: int) -> bool:
    """Signal the process (its whole session when it leads one) if it is still ours."""
    if not process_alive(pid, create_time):
        return False
    try:
        if os.getsid(pid) == pid:  # a detached worker leads its session: reach its children
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def request_stop(pid: int, create_time: float | None) -> bool:
    return send_signal(pid, create_time, signal.SIGTERM)


def kill_now(pid: int, create_time: float | None) -> bool:
    return send_signal(pid, create_time, signal.SIGKILL)


def wait_until_dead(pid: int, create_time: float | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid, create_time):
            return True
        time.sleep(0.05)
    return not process_alive(pid, create_time)


@dataclass(frozen=True)
class DistLaunch:
    """Processes per machine and machines, as torch.distributed.run (torchrun) takes them."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def enabled(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    def check(self) -> DistLaunch:
        if self.nproc < 1 or self.nnodes < 1:
            raise UsageError("--nproc and --nnodes must be 1 or more")
        if not 0 <= self.node_rank < self.nnodes:
            raise UsageError(f"--node-rank must be between 0 and {self.nnodes - 1}")
        if self.nnodes > 1 and not self.master_addr:
            raise UsageError("several machines need --master-addr HOST (node 0's address) and "
                             "--master-port PORT")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise UsageError(f"--master-port must be a TCP port (got {self.master_port})")
        return self

    def torchrun(self) -> list[str]:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={self.nproc}"]
        if self.nnodes == 1 and not self.master_addr:
            cmd.append("--standalone")  # a free local port, no rendezvous to set up
        else:
            cmd += [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
                    f"--master-addr={self.master_addr or '127.0.0.1'}",
                    f"--master-port={self.master_port or 29500}"]
        return [*cmd, "--max-restarts=0", "-m"]

    def to_json(self) -> dict[str, Any]:
        return {"nproc": self.nproc, "nnodes": self.nnodes, "node_rank": self.node_rank,
                "master_addr": self.master_addr, "master_port": self.master_port}
