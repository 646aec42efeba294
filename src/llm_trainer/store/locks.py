"""The per-model training lock: an OS lock (``flock``) on ``checkpoints/<name>/.train.lock``.

The process that trains holds it for its whole life, and the kernel releases it when that
process ends, however it ends (exit, crash, kill -9): no stale locks to guess about, no
takeover race. The file's content names the holder (a run id, or an admin operation) for
messages only; whether the model is busy is what the kernel says.

Hand-over without a gap: the launcher takes the lock, and the worker gets the *same* open file
(same lock) before the launcher lets go of it:

- one process: the descriptor is inherited (``pass_fds``; its number in ``LOCK_FD_ENV``);
- torchrun: the agent does not pass descriptors on to the ranks, so rank 0 receives it over a
  Unix socket (``SCM_RIGHTS``) whose path is in ``LOCK_SOCKET_ENV``; the launcher waits for
  that, then closes its copy. Rank 0 is the process that writes checkpoints, so it is the
  one that holds the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from llm_trainer.errors import BusyError

LOCK_FILE = ".train.lock"
LOCK_FD_ENV = "LLM_TRAINER_LOCK_FD"
LOCK_SOCKET_ENV = "LLM_TRAINER_LOCK_SOCKET"
EXIT_GRACE_S = 5.0
"""How long a launch waits for a lock whose recorded holder has already died: a process
killed with SIGKILL shows as gone (or a zombie) as soon as its main thread has exited, but the
kernel releases its files, and so the lock, only once its last thread has (a rank's gloo and
torch threads can take a moment)."""

try:  # POSIX; on other systems the lock degrades to a no-op with the same interface
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def lock_path(model_dir: Path) -> Path:
    return Path(model_dir) / LOCK_FILE


class LockHeld(BusyError):
    """The lock is taken; ``holder`` is what its file says (None while it is being written)."""

    def __init__(self, holder: dict | None) -> None:
        super().__init__("the training lock is held")
        self.holder = holder


def read_holder(model_dir: Path) -> dict | None:
    """What the lock file says about its holder (may be stale once the lock is free)."""
    try:
        data = json.loads(lock_path(model_dir).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lock_holder(model_dir: Path) -> str | None:
    """The run id the lock file names (for display; may name a run that has ended)."""
    holder = read_holder(model_dir)
    return holder.get("run_id") if holder else None


class ModelLock:
    """An acquired training lock (an open file descriptor with an exclusive flock)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, model_dir: Path, *, grace: float = EXIT_GRACE_S,
                **holder: object) -> ModelLock:
        """Take the lock and record ``holder`` in it, or raise ``LockHeld``. A live holder is
        refused at once; one whose recorded process has died is waited for up to ``grace``
        seconds while the kernel finishes its exit."""
        deadline = time.monotonic() + grace
        while True:
            try:
                return cls._try(model_dir, **holder)
            except LockHeld as held:
                if time.monotonic() >= deadline or not _holder_exiting(held.holder):
                    raise
            time.sleep(0.02)

    @classmethod
    def _try(cls, model_dir: Path, **holder: object) -> ModelLock:
        path = lock_path(model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(read_holder(model_dir)) from None
        lock = cls(fd, path)
        lock.record(**holder)
        return lock

    @classmethod
    def adopt(cls, model_dir: Path) -> ModelLock | None:
        """The lock this process was handed by its launcher, if it was (checked to be an open
        descriptor of this model's lock file, not whatever else has that number)."""
        path = lock_path(model_dir)
        fd = _fd_from_env()
        if fd is None:
            return None
        try:
            mine, theirs = os.fstat(fd), os.stat(path)
        except OSError:
            return None
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None
        os.set_inheritable(fd, False)
        return cls(fd, path)

    def record(self, **holder: object) -> None:
        data = json.dumps({"pid": os.getpid(), "since": time.time(), **holder}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # the last descriptor of the open file: the lock goes
            self.fd = -1

    def __enter__(self) -> ModelLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder_exiting(holder: dict | None) -> bool:
    """Has the process the lock file names ended (or become a zombie) though its lock is not
    free yet? Every holder records itself (the launcher re-records the process it spawned
    before letting go), so a named process that is gone is one still being torn down."""
    from llm_trainer.launcher import process_alive

    pid = (holder or {}).get("pid")
    return isinstance(pid, int) and pid > 0 and not process_alive(pid, None)


def _fd_from_env() -> int | None:
    text = os.environ.get(LOCK_FD_ENV)
    if text and text.isdigit():
        return int(text)
    sock_path = os.environ.get(LOCK_SOCKET_ENV)
    if sock_path and int(os.environ.get("RANK", "0")) == 0:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(sock_path)
            _msg, fds, _flags, _addr = socket.recv_fds(s, 16, 1)
            return fds[0] if fds else None
    return None


class LockHandover:
    """Launcher side of the torchrun hand-over: serves the lock's descriptor to rank 0 once."""

    def __init__(self, lock: ModelLock) -> None:
        import tempfile

        self.lock = lock
        # a private (0700) folder in the temp dir: socket paths are limited to ~100 bytes
        self.dir = Path(tempfile.mkdtemp(prefix="llmt-"))
        self.path = self.dir / "lock.sock"
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(self.path))
        self.server.listen(1)

    def wait(self, timeout: float, alive) -> bool:
        """Hand the descriptor to the first process that asks; False if none did within
        ``timeout`` or ``alive()`` turned False first."""
        deadline = time.monotonic() + timeout
        self.server.settimeout(0.2)
        try:
            while time.monotonic() < deadline and alive():
                try:
                    conn, _ = self.server.accept()
                except TimeoutError:
                    continue
                with conn:
                    socket.send_fds(conn, [b"lock"], [self.lock.fd])
                return True
            return False
        finally:
            self.server.close()
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.dir.rmdir()
