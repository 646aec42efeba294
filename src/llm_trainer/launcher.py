"""Spawning, signalling and liveness of detached worker processes. No torch at import time.

A process is identified by its pid *and* its start time, so a pid reused by an unrelated
process after a crash or reboot is never mistaken for our worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.errors import UsageError

CREATE_TIME_TOLERANCE_S = 0.5
# a --foreground command's request to its worker: sample this many tokens when the run
# completes, for the command to print (inference.samples.FinalSample)
FINAL_SAMPLE_ENV = "LLM_TRAINER_FINAL_SAMPLE"
# "1": a --foreground run on one process trains in the command's own process (service.Service)
IN_PROCESS_ENV = "LLM_TRAINER_IN_PROCESS"


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


class StandbyWorker:
    """A ``--foreground`` worker started before its run exists: ``python -m
    llm_trainer.worker --standby`` imports torch and the training code while the command
    parses and plans (on two cores the two overlap: ~0.3 s of a 1-step run), then ``hand``
    gives it the run over a socket pair on its stdin: run id, home, environment, and the
    training lock's and the run log's descriptors (``SCM_RIGHTS``), which it makes its own as
    a worker spawned then would have them (cwd the home, stdout and stderr the log, stdin
    /dev/null). Closed unused (``close``, or this process ending), it exits at once."""

    def __init__(self) -> None:
        import socket

        ours, theirs = socket.socketpair()
        try:
            self.process: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", "llm_trainer.worker", "--standby"], stdin=theirs,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError:
            self.process = None
        finally:
            theirs.close()
        self.sock = ours

    def hand(self, run_id: str, home: Path, *, env: dict[str, str], lock_fd: int,
             log_path: Path) -> subprocess.Popen | None:
        """The worker, now training ``run_id``; None if it is gone (spawn one instead)."""
        import json
        import socket

        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            self.close()
            return None
        job = json.dumps({"run_id": run_id, "home": str(home), "env": env}).encode()
        try:
            with open(log_path, "ab") as log:
                socket.send_fds(self.sock, [job], [lock_fd, log.fileno()])
        except OSError:
            proc.kill()
            proc.wait()
            return None
        finally:
            self.close()
        return proc

    def close(self) -> None:
        """Unused: the standby sees the end of its stdin and exits (as soon as its import in
        progress lets go of the interpreter; this command does not wait for it)."""
        with contextlib.suppress(OSError):
            self.sock.close()
        self.process = None


def receive_job() -> tuple[dict[str, Any], list[int]] | None:
    """The standby's side of ``StandbyWorker.hand``: wait for the run on stdin (the job and
    its two descriptors). None: the command closed it unused."""
    import json
    import socket

    sock = socket.socket(fileno=os.dup(0))
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 2)
    except OSError:
        return None
    finally:
        sock.close()
    if not msg or len(fds) != 2:
        return None
    return json.loads(msg), fds


def adopt_job(job: dict[str, Any], fds: list[int]) -> tuple[str, Path]:
    """Make the handed run's descriptors, environment and folder this process's, as a worker
    spawned for it would have them; its run id and home."""
    from llm_trainer.store.locks import LOCK_FD_ENV

    lock_fd, log_fd = fds
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd in (1, 2):
        os.dup2(log_fd, fd)
    os.close(log_fd)
    os.environ.update(job["env"])
    os.environ[LOCK_FD_ENV] = str(lock_fd)
    os.chdir(job["home"])
    return job["run_id"], Path(job["home"])


@dataclass(frozen=True)
class FinishedProcess:
    """A worker that ran in this process and has returned: read like a ``Popen`` whose
    child has exited (``poll()`` and ``returncode``)."""

    pid: int
    returncode: int

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def run_in_process(run_id: str, home: Path, *, log_path: Path, lock_fd: int,
                   env: dict[str, str] | None = None) -> FinishedProcess:
    """``python -m llm_trainer.worker RUN_ID --foreground`` without the child process:
    ``run_worker`` in this process, in the home, its output appended to ``log_path``, the
    training lock ``lock_fd`` handed over as a child inherits it (a duplicate descriptor named
    in the environment), ``env`` added to the environment. What a child would have changed
    only for itself is put back afterwards: signal handlers, the working folder, the
    environment, torch's thread count and random state. Training happens before this
    returns (a debugger or profiler sees it)."""
    from llm_trainer.store.locks import LOCK_FD_ENV
    from llm_trainer.worker import run_worker

    handed = os.dup(lock_fd)  # the worker adopts it and closes it when it is done
    try:
        with _as_a_child(home, log_path, {**(env or {}), LOCK_FD_ENV: str(handed)}):
            code = run_worker(run_id, home, foreground=True)
    finally:
        _close_if_same_file(handed, lock_fd)  # the worker failed before taking it
    return FinishedProcess(os.getpid(), code)


@contextlib.contextmanager
def _as_a_child(home: Path, log_path: Path, env: dict[str, str]) -> Iterator[None]:
    import torch  # the worker imports it anyway; read its settings before the run

    sigs = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
    handlers = {s: signal.getsignal(s) for s in sigs}
    cwd, environ = os.getcwd(), dict(os.environ)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    os.environ.update(env)
    os.chdir(home)
    try:
        with open(log_path, "a", encoding="utf-8", buffering=1) as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        for sig, handler in handlers.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(sig, handler)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)


def _close_if_same_file(fd: int, other: int) -> None:
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(fd), os.fstat(other)):
            os.close(fd)


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
