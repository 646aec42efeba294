"""Process control: start a planned run (model record, training lock, run record, worker
process), stop one, follow one. No torch.

Starting always goes the same way: take the model's training lock, write the run record,
spawn ``python -m llm_trainer.worker`` (in its own session when detached, attached with
``--foreground``, or hand the run to the worker the command started ahead,
``launcher.StandbyWorker``; through torchrun for several processes) and hand the lock to
it. With ``in_process``, a one-process foreground run calls the same worker in this process
instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer import launcher
from llm_trainer.app.planner import LaunchPlan
from llm_trainer.app.queries import RunQueries, busy_error
from llm_trainer.errors import BusyError, UsageError
from llm_trainer.store.locks import (
    LOCK_FD_ENV,
    LOCK_SOCKET_ENV,
    LockHandover,
    LockHeld,
    ModelLock,
)
from llm_trainer.store.models import ModelRecord, ModelStore
from llm_trainer.store.records import RunMeta, RunState, RunStatus
from llm_trainer.store.runs import RunStore
from llm_trainer.views import BatchChoiceView, StopResult


@dataclass
class Launch:
    run_id: str
    pid: int
    model_name: str
    model_id: str
    foreground: bool
    process: subprocess.Popen | None = None
    notes: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    batch_choice: BatchChoiceView | None = None


class ProcessControl:
    def __init__(self, home: Path, runs: RunStore, models: ModelStore,
                 queries: RunQueries, *, in_process: bool = False) -> None:
        self.home, self.runs, self.models, self.queries = home, runs, models, queries
        self.in_process = in_process  # foreground, one process: no child (see start)
        self._children: list[subprocess.Popen] = []  # detached workers this process started

    def reap(self) -> None:
        """Collect exited workers this (long-lived, e.g. TUI) process started: no zombies."""
        self._children = [p for p in self._children if p.poll() is None]

    # ------------------------------------------------------------------ start
    def start(self, plan: LaunchPlan) -> Launch:
        if plan.model is not None:
            return self._start(plan, plan.model, created=False)
        rec = self.models.create(plan.new_model_name, default_base=plan.new_model_base)
        try:
            return self._start(plan, rec, created=True)
        except BaseException:
            self.models.delete(rec.name)
            raise

    def _start(self, plan: LaunchPlan, rec: ModelRecord, *, created: bool) -> Launch:
        run_id = self.runs.new_run_id(rec.name)
        try:
            lock = ModelLock.acquire(rec.path, run_id=run_id)
        except LockHeld as held:
            self.runs.discard(run_id)
            raise busy_error(rec.name, self.queries.lock_holder_run(rec, held.holder),
                             plan.kind) from None
        except BaseException:  # the lock file could not be written (a full disk)
            self.runs.discard(run_id)
            raise
        with lock:  # the worker gets its own hold on it; ours ends here
            return self._spawn(plan, rec, lock, run_id, created)

    def _spawn(self, plan: LaunchPlan, rec: ModelRecord, lock: ModelLock, run_id: str,
               created: bool) -> Launch:
        cfg, dist, now = plan.config, plan.dist, time.time()
        try:  # a full disk: no half-made run folder stays behind
            self.runs.create(
                RunMeta(run_id=run_id, created_at=now, kind=plan.kind, command=plan.command,
                        model={"id": rec.id, "name": rec.name}, config=cfg.to_dict(),
                        requested_device=cfg.runtime.device, init=plan.init,
                        dataset_explicit=plan.dataset_explicit, created_model=created,
                        foreground=plan.foreground, home=str(self.home),
                        distributed=dist.to_json() if dist and dist.enabled else None,
                        batch_choice=plan.batch_choice.to_json() if plan.batch_choice else None),
                RunState(run_id=run_id, status=RunStatus.QUEUED, model_id=rec.id,
                         model_name=rec.name, created_at=now,
                         requested_device=cfg.runtime.device))
            self.name_starter(run_id, os.getpid())  # until the worker exists
        except BaseException:
            shutil.rmtree(self.runs.paths(run_id).dir, ignore_errors=True)
            raise
        paths = self.runs.paths(run_id)
        cmd = launcher.worker_command(run_id, self.home) + (["--foreground"]
                                                            if plan.foreground else [])
        handover = None
        if dist is not None and dist.enabled:  # torchrun starts one worker per process
            cmd = [*dist.torchrun(), *cmd[2:]]
            handover = LockHandover(lock)  # rank 0 fetches the lock over a socket
            env, fds = {LOCK_SOCKET_ENV: str(handover.path)}, ()
        else:
            env, fds = {LOCK_FD_ENV: str(lock.fd)}, (lock.fd,)  # inherited by the worker
        asks = {launcher.FINAL_SAMPLE_ENV: str(plan.final_sample)} \
            if plan.foreground and plan.final_sample > 0 else {}
        env.update(asks)
        try:
            if plan.foreground and self.in_process and handover is None:
                proc = launcher.run_in_process(run_id, self.home, log_path=paths.log,
                                               lock_fd=lock.fd, env=asks)
            elif plan.foreground:
                proc = plan.standby.hand(run_id, self.home, env=env, lock_fd=lock.fd,
                                         log_path=paths.log) \
                    if plan.standby is not None and handover is None else None
                if proc is None:  # none started ahead, or it is gone
                    with open(paths.log, "ab") as log:
                        proc = subprocess.Popen(cmd, cwd=str(self.home),
                                                stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT,
                                                env={**os.environ, **env}, pass_fds=fds)
            else:
                proc = launcher.spawn_detached(cmd, log_path=paths.log, cwd=self.home, env=env,
                                               pass_fds=fds)
        except OSError as exc:
            self.runs.write_control(run_id, start_error=f"could not start the worker: {exc}")
            raise UsageError(f"could not start the training process: {exc}") from None
        if proc.pid != os.getpid():  # it holds the lock now: name it, not this command
            lock.record(run_id=run_id, pid=proc.pid)
            self.name_starter(run_id, proc.pid)
        if handover is not None and not handover.wait(120.0, lambda: proc.poll() is None):
            plan.notes.append("rank 0 did not take over the training lock within 120 s")
        if not plan.foreground:
            self._children.append(proc)
        return Launch(run_id, proc.pid, rec.name, rec.id, plan.foreground, proc, plan.notes,
                      str(plan.init.checkpoint) if plan.init else None, plan.batch_choice)

    def name_starter(self, run_id: str, pid: int) -> None:
        """Record which process is bringing the run up until its worker writes its own pid
        into state.json: this command, then the process it spawned. Once that process is
        gone, a run still without a pid will never start (``RunQueries.reconcile``)."""
        self.runs.write_control(run_id, starter_pid=pid,
                                starter_create_time=launcher.process_start_time(pid))

    # ------------------------------------------------------------------ stop
    def stop(self, run_id: str, *, now: bool = False, wait: bool = True,
             timeout: float = 300.0, on_asked: Callable[[str], None] | None = None
             ) -> StopResult:
        """Ask a run to pause (SIGTERM: it checkpoints and exits) or kill it (``now``; the
        intent goes to control.json, which views combine with the worker's state).
        ``on_asked(run_id)``: after a pause was asked for, before waiting for it (a front
        end says what is going on then, and says nothing of a pause to a finished run)."""
        run_id = self.runs.require(run_id)
        view = self.queries.run_view(run_id)
        if not view.active:
            return StopResult(run_id, was_running=False, status=view.status)
        state = self.runs.read_state(run_id)
        if state is None or not state.pid:
            raise BusyError(f"run {run_id} is still starting", hint="try again in a moment")
        pid, ctime = state.pid, state.create_time
        if now:
            self.runs.write_control(run_id, stop="now", requested_at=time.time())
            if state.agent_pid and launcher.process_alive(state.agent_pid,
                                                          state.agent_create_time):
                launcher.kill_now(state.agent_pid, state.agent_create_time)  # and its ranks
            launcher.kill_now(pid, ctime)
            launcher.wait_until_dead(pid, ctime, 10.0)
            return StopResult(run_id, was_running=True,
                              status=self.queries.run_view(run_id).status)
        launcher.request_stop(pid, ctime)
        if on_asked is not None:
            on_asked(run_id)
        if wait:
            launcher.wait_until_dead(pid, ctime, timeout)
        return StopResult(run_id, was_running=True, status=self.queries.run_view(run_id).status)

    # ------------------------------------------------------------------ follow
    def follow(self, run_id: str, *, poll: float = 0.2,
               process: subprocess.Popen | None = None) -> RunFollower:
        return RunFollower(self.runs, self.queries, run_id, poll=poll, process=process)


class RunFollower:
    """Events of a run until it ends: ("log", line), ("state", RunView), ("end", RunView).

    Iterate it again after an interruption (Ctrl-C lands in the middle of a poll) and it goes
    on where it stopped: no log line is shown twice."""

    def __init__(self, runs: RunStore, queries: RunQueries, run_id: str, *, poll: float = 0.2,
                 process: subprocess.Popen | None = None) -> None:
        self.runs, self.queries, self.run_id = runs, queries, run_id
        self.poll, self.process = poll, process
        self.offset = 0
        self.last_state = None

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        process = self.process
        path = self.runs.paths(self.run_id).log
        while True:
            alive = process.poll() is None if process is not None else None
            try:
                with open(path, "rb") as fh:
                    fh.seek(self.offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                cut = chunk.rfind(b"\n") + 1
                self.offset += cut
                for line in chunk[:cut].decode("utf-8", errors="replace").splitlines():
                    yield "log", line
            view = self.queries.run_view(self.run_id)
            if view != self.last_state:
                self.last_state = view
                yield "state", view
            ended = not view.active
            if ended and (process is None or not alive):
                yield "end", view
                return
            if process is not None and not alive and not ended:
                time.sleep(self.poll)
                yield "end", self.queries.run_view(self.run_id)
                return
            if process is None:
                time.sleep(self.poll)
            else:  # back as soon as the worker exits (a whole poll later costs start-up)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(self.poll)
