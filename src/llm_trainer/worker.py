"""The training worker: ``python -m llm_trainer.worker RUN_ID --home DIR``.

Reads the job from ``runs/<id>/meta.json``, trains, and keeps ``state.json``,
``metrics.jsonl``, ``train.log`` and the model's ``model.json`` current. Every run is this
process: detached runs in a session of their own, ``--foreground`` runs attached to the
terminal while the CLI follows the same files. Signal handlers only set a flag: the loop
finishes its step, writes a checkpoint and exits ``paused``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from llm_trainer.errors import BusyError, LLMTrainerError, PrepareStopped, os_error_line
from llm_trainer.progress import format_duration
from llm_trainer.render import prepare_line
from llm_trainer.store.atomic import atomic_write_json
from llm_trainer.store.locks import LockHeld, ModelLock
from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import PHASE_FIELDS, PREPARING_DATA, RunMeta, RunState
from llm_trainer.store.runs import RunStore
from llm_trainer.telemetry import Telemetry
from llm_trainer.training import events
from llm_trainer.training.callbacks import Callback, CpuShare
from llm_trainer.training.device import tune_allocator

TELEMETRY_EVERY_S = 2.0
PROGRESS_LOG_EVERY_S = 15.0  # a progress line in train.log (for `tail -f`), not every step
PHASE_WRITE_EVERY_S = 0.5  # state.json during data preparation: at most two writes a second
NO_PHASE = dict.fromkeys(PHASE_FIELDS)  # state.json once training starts


class StopFlag:
    """Set from a signal handler: a plain attribute, no locks."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    def set(self, signum: int | None = None) -> None:
        self.requested = True
        self.signal = signum

    def is_set(self) -> bool:
        return self.requested


def install_signal_handlers(flag: StopFlag, *, foreground: bool) -> None:
    def on_signal(signum, _frame):
        flag.set(signum)
        if signum == signal.SIGINT:  # a second Ctrl-C aborts at once (Python's default)
            signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGHUP"):  # detached: ignore the terminal closing; attached: pause
        signal.signal(signal.SIGHUP, on_signal if foreground else signal.SIG_IGN)


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("llm-trainer", "torch", "tokenizers", "datasets", "safetensors", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class RunReporter(Callback):
    """Turns training events into run-store writes, log lines and model-record updates."""

    def __init__(self, run_id: str, runs: RunStore, models: ModelStore, model_id: str,
                 state: RunState) -> None:
        self.run_id = run_id
        self.runs = runs
        self.models = models
        self.model_id = model_id
        self.state = state
        self.telemetry: Telemetry | None = None
        self.last_sample = 0.0
        self.last_progress_line = 0.0
        self.start_info: events.StartInfo | None = None
        self.phase_written: float | None = None  # monotonic time of the last phase write
        self.phase_logged: float | None = None  # ... and of its last line in train.log
        self._log = open(runs.paths(run_id).log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    # -------------------------------------------------------------- plumbing
    def close(self) -> None:
        self._log.close()

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self._log.write(f"{stamp} {line}\n")

    on_log = log

    def write_state(self, *, durable: bool = False, **changes: Any) -> None:
        """state.json has one writer: this process."""
        self.state = self.state.updated(**changes, updated_at=time.time())
        self.runs.write_state(self.state, durable=durable)

    def _sample(self, force: bool = False) -> dict[str, Any] | None:
        now = time.monotonic()
        if self.telemetry is None or (not force and now - self.last_sample < TELEMETRY_EVERY_S):
            return None
        self.last_sample = now
        snap = self.telemetry.sample()
        self.state.telemetry = snap
        return snap

    # -------------------------------------------------------------- before training
    def on_prepare(self, p) -> None:
        """A ``data.prepare.PrepareProgress``: the run is preparing its data. Written to
        state.json at most every PHASE_WRITE_EVERY_S (the first report, a new stage and the
        finished preparation always are), and a line in train.log every
        PROGRESS_LOG_EVERY_S."""
        now = time.monotonic()
        if self.phase_logged is None:
            self.phase_logged = now
        elif now - self.phase_logged >= PROGRESS_LOG_EVERY_S:  # for `tail -f` of a long one
            self.phase_logged = now
            self.log(f"preparing data: {prepare_line(p)}")
        fraction = p.fraction
        if not (self.phase_written is None or p.stage != self.state.phase_stage
                or (fraction is not None and fraction >= 1.0)
                or now - self.phase_written >= PHASE_WRITE_EVERY_S):
            return
        self.phase_written = now
        self.write_state(phase=PREPARING_DATA, phase_stage=p.stage, phase_progress=fraction,
                         phase_mb_per_s=p.mb_per_s, phase_eta_s=p.eta_s)

    # -------------------------------------------------------------- Callback protocol
    def on_start(self, trainer, info: events.StartInfo) -> None:
        self.start_info = info
        dev = info.device["selected"]
        self.telemetry = Telemetry(gpu_index=int(dev.split(":")[1]) if dev.startswith("cuda:")
                                   else 0)
        meta = self.runs.read_meta(self.run_id).updated(
            selected_device=info.device, precision=info.precision, config=info.config,
            parameters=info.parameters, architecture=info.architecture,
            dataset=info.dataset.to_json(), global_batch=info.global_batch,
            world_size=info.world_size, tokens_per_step=info.tokens_per_step,
            steps_per_epoch=info.steps_per_epoch, versions=package_versions())
        self.runs.write_meta(meta)
        self._sample(force=True)
        self.write_state(durable=True, step=info.start_step, start_step=info.start_step,
                         total_steps=info.total_steps, device=dev,
                         steps_per_epoch=info.steps_per_epoch, **NO_PHASE)
        rec = self.models.find_by_id(self.model_id)
        if rec is not None:
            ds = info.dataset
            if not any(d.get("fingerprint") == ds.fingerprint for d in rec.datasets):
                rec.datasets.append({"spec": ds.spec, "fingerprint": ds.fingerprint,
                                     "epochs": 0.0, "first_run": self.run_id})
            if self.run_id not in rec.runs:
                rec.runs.append(self.run_id)
                init = meta.init  # the meta read (and rewritten) above
                rec.lineage.append({
                    "run_id": self.run_id, "kind": meta.kind, "dataset": ds.spec,
                    "from_checkpoint": str(init.checkpoint) if init else None,
                    "data_from": init.data_from if init else None,
                    "start_step": info.start_step, "started_at": time.time()})
            rec.architecture = info.architecture
            rec.tokenizer = info.tokenizer
            rec.config = info.config
            self.models.save(rec)

    def on_progress(self, trainer, p: events.Progress) -> None:
        snap = self._sample()
        self.write_state(step=p.step, total_steps=p.total_steps, epoch=p.epoch, loss=p.loss,
                         lr=p.lr, grad_norm=p.grad_norm, tokens_per_s=p.tokens_per_s,
                         elapsed_s=p.elapsed_s, eta_seconds=p.eta_seconds,
                         finish_at=p.finish_at, step_time_s=p.step_time_s)
        record = {"time": time.time(), "kind": "train", "step": p.step, "epoch": p.epoch,
                  "loss": p.loss, "lr": p.lr, "grad_norm": p.grad_norm,
                  "tokens_per_s": p.tokens_per_s, "elapsed_s": p.elapsed_s,
                  "eta_seconds": p.eta_seconds}
        if snap is not None:
            record["telemetry"] = {k: v for k, v in snap.items() if k not in ("gpus", "na")}
        self.runs.append_metrics(self.run_id, record)
        now = time.monotonic()
        if now - self.last_progress_line >= PROGRESS_LOG_EVERY_S or p.step >= p.total_steps:
            self.last_progress_line = now
            eta = format_duration(p.eta_seconds)
            self.log(f"step {p.step}/{p.total_steps} epoch {p.epoch:.2f} loss {p.loss:.4f} "
                     f"lr {p.lr:.2e} {p.tokens_per_s:,.0f} tok/s ETA {eta}")

    def on_eval(self, trainer, r: events.EvalDone) -> None:
        self.write_state(val_loss=r.val_loss, best_val_loss=r.best_val_loss,
                         perplexity=r.perplexity)
        self.runs.append_metrics(self.run_id, {
            "time": time.time(), "kind": "eval", "step": r.step, "epoch": r.epoch,
            "val_loss": r.val_loss, "perplexity": r.perplexity, "seconds": r.seconds})
        self.log(f"step {r.step}: val loss {r.val_loss:.4f} "
                 f"(perplexity {r.perplexity:.2f}, best {r.best_val_loss:.4f})")

    def on_sample(self, trainer, s: events.Sample) -> None:
        record = {"time": time.time(), "step": s.step, "prompt": s.prompt, "text": s.text,
                  **({"final": True} if s.final else {})}
        self.runs.append_sample(self.run_id, record)
        self.write_state(last_sample=record)
        self.log(f"step {s.step}: sample written to samples.jsonl")

    def on_anomaly(self, trainer, e: events.Anomaly) -> None:
        self.runs.append_metrics(self.run_id, {"time": time.time(), "kind": "anomaly",
                                               **e.to_json()})
        what = {"rollback": f"rolling back (rollback {e.rollbacks} of {e.max_rollbacks})",
                "exhausted": f"no rollbacks left (train.max_rollbacks {e.max_rollbacks})",
                "stop": "stopping (train.on_anomaly stop, or no checkpoint yet)"}[e.action]
        self.log(f"anomaly at step {e.step}: {e.reason}; {what}")
        self.write_state(durable=True, anomalies=self.state.anomalies + 1,
                         rollbacks=e.rollbacks,
                         last_anomaly=f"step {e.step}: {e.reason} ({e.action})")

    def on_checkpoint(self, trainer, r: events.CheckpointSaved) -> None:
        self.write_state(durable=True, checkpoint=r.path)
        self.runs.append_metrics(self.run_id, {"time": time.time(), "kind": "checkpoint",
                                               "step": r.step, "path": r.path,
                                               "seconds": r.seconds})
        rec = self.models.find_by_id(self.model_id)
        if rec is not None:
            fingerprint = self.start_info.dataset.fingerprint if self.start_info else None
            for d in rec.datasets:
                if d.get("fingerprint") == fingerprint:
                    d["epochs"] = r.epoch
                    d["last_step"] = r.step
            rec.steps_completed = r.step
            rec.epochs_completed = round(sum(float(d.get("epochs") or 0) for d in rec.datasets),
                                         4)
            if r.val_loss is not None:
                rec.latest_val_loss = r.val_loss
            if r.best_val_loss is not None:
                rec.best_val_loss = (r.best_val_loss if rec.best_val_loss is None
                                     else min(rec.best_val_loss, r.best_val_loss))
            rec.last_trained_at = time.time()
            self.models.save(rec)
        self.log(f"checkpoint saved: {r.path}")


def run_peer(run_id: str, home: Path, rank: int, *, foreground: bool) -> int:
    """A rank other than 0: train, and on failure leave ``runs/<id>/rank-N.error`` for rank 0
    and ``status`` to report."""
    from llm_trainer.training.parts import TrainingJob
    from llm_trainer.training.trainer import train

    runs, models = RunStore(home), ModelStore(home)
    meta = runs.read_meta(run_id)
    flag = StopFlag()
    install_signal_handlers(flag, foreground=foreground)
    rec = models.find_by_id(meta.model["id"])
    try:
        if rec is None:  # never the folder of its old name: another model may have it now
            raise LLMTrainerError(f"model {meta.model['name']} no longer exists")
        model_dir = rec.path
        # rank 0 alone writes state, metrics and checkpoints; this rank only reports failure
        train(TrainingJob.from_meta(meta, home=home, model_dir=model_dir, stop=flag))
        return 0
    except BaseException as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, LLMTrainerError) and exc.hint:
            message += f" ({exc.hint})"
        atomic_write_json(runs.paths(run_id).dir / f"rank-{rank}.error",
                          {"rank": rank, "pid": os.getpid(), "time": time.time(),
                           "error": f"{type(exc).__name__}: {message}"})
        traceback.print_exc()
        return getattr(exc, "exit_code", 1)


def run_worker(run_id: str, home: Path, *, foreground: bool = False,
               stop: StopFlag | None = None) -> int:
    """Train the run described by ``runs/<run_id>/meta.json``. Returns a process exit code."""
    home = Path(home).resolve()
    tune_allocator()
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        return run_peer(run_id, home, rank, foreground=foreground)
    runs, models = RunStore(home), ModelStore(home)
    meta = runs.read_meta(run_id)
    state = runs.read_state(run_id) or RunState(run_id=run_id)
    import psutil

    me = psutil.Process()
    flag = stop or StopFlag()
    install_signal_handlers(flag, foreground=foreground)
    reporter = RunReporter(run_id, runs, models, meta.model["id"], state)
    extra = {}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the torchrun agent that started us
        agent = me.parent()
        extra = {"agent_pid": agent.pid, "agent_create_time": agent.create_time(),
                 "world_size": int(os.environ["WORLD_SIZE"])}
    reporter.write_state(durable=True, status="running", pid=os.getpid(),
                         create_time=me.create_time(), started_at=time.time(), error=None,
                         **extra)
    reporter.log(f"run {run_id}: training model {meta.model['name']} "
                 f"(pid {os.getpid()}{', foreground' if foreground else ''})")
    code = 1
    lock: ModelLock | None = None
    try:
        rec = models.find_by_id(meta.model["id"])
        if rec is None:
            raise LLMTrainerError(f"model {meta.model['name']} no longer exists")
        lock = hold_training_lock(rec.path, run_id, rec.name)
        _train_run(meta, home, rec, reporter, flag)
        code = 0
    except PrepareStopped as exc:  # a stop while the data was prepared: nothing to save
        reporter.log(str(exc))
        reporter.write_state(durable=True, status="stopped", ended_at=time.time(),
                             reason="stopped while preparing data", eta_seconds=None,
                             finish_at=None)
        code = exc.exit_code
    except LLMTrainerError as exc:
        message = str(exc) + (f" ({exc.hint})" if exc.hint else "")
        reporter.log(f"error: {message}")
        reporter.write_state(durable=True, status="failed", ended_at=time.time(), error=message,
                             eta_seconds=None, finish_at=None)
        code = exc.exit_code
    except KeyboardInterrupt:
        reporter.log("aborted (second Ctrl-C): no checkpoint written for the current step")
        reporter.write_state(durable=True, status="stopped", ended_at=time.time(),
                             error="aborted by a second Ctrl-C", eta_seconds=None,
                             finish_at=None)
        code = 130
    except BaseException as exc:  # the run must end in a terminal status whatever happened
        reporter.log("".join(traceback.format_exception(exc)).rstrip())
        reporter.write_state(durable=True, status="failed", ended_at=time.time(),
                             error=_failure(exc, runs, run_id), eta_seconds=None,
                             finish_at=None)
        code = 1
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
    finally:
        _drop_empty_model(models, meta, reporter, code)
        reporter.close()
        if lock is not None:
            lock.release()  # the kernel would too, at exit
    return code


def _train_run(meta: RunMeta, home: Path, rec, reporter: RunReporter, flag: StopFlag) -> None:
    """The job of ``meta`` trained with the run's callbacks; the end written to the run."""
    from llm_trainer.inference.samples import FinalSample, Sampler
    from llm_trainer.training.estimate import EstimateCheck
    from llm_trainer.training.parts import TrainingJob
    from llm_trainer.training.trainer import train

    job = TrainingJob.from_meta(meta, home=home, model_dir=rec.path, stop=flag)
    job.on_prepare = reporter.on_prepare  # the phase in state.json while the data is prepared
    runtime = job.config.runtime
    final_sample = FinalSample.from_env()  # before the others' on_end (loggers close)
    callbacks: list[Callback] = [reporter, *([final_sample] if final_sample else []), CpuShare(
        home, meta.run_id, fixed_threads=runtime.num_threads),
        EstimateCheck(lambda **fields: reporter.write_state(durable=True, **fields))]
    sampler = Sampler.from_config(job.config.train)
    if sampler is not None:
        callbacks.append(sampler)
    if runtime.active_loggers():
        from llm_trainer.training.loggers import ExperimentLoggers, LoggerRun

        callbacks.append(ExperimentLoggers.from_names(runtime.active_loggers(), LoggerRun(
            home=home, run_id=meta.run_id, run_dir=reporter.runs.paths(meta.run_id).dir,
            model_name=rec.name, model_dir=rec.path, config=meta.config, start_step=0,
            say=reporter.log)))
    result = train(job, callbacks)
    status = result.status
    if status == "paused":
        reporter.log(f"paused at step {result.step} after a stop request; continue with "
                     f"`llm-trainer resume {rec.name}`")
    else:
        reporter.log(f"completed: step {result.step}, {result.reason}; val loss "
                     f"{_fmt_loss(result.val_loss)}")
    reporter.write_state(durable=True, status=status, ended_at=time.time(),
                         reason=result.reason, step=result.step, epoch=result.epoch,
                         eta_seconds=0.0 if status == "completed" else None,
                         finish_at=None, checkpoint=str(result.checkpoint)
                         if result.checkpoint else reporter.state.checkpoint)


def _failure(exc: BaseException, runs: RunStore, run_id: str) -> str:
    """An unexpected failure in one line: a dead peer, an out-of-memory, or the error."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    peers = peer_errors(runs, run_id)
    if peers:  # a collective failed because another rank died: say which and why
        return f"{peers[0]}; rank 0 then stopped ({type(exc).__name__})"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and _is_collective_error(exc):
        return f"a peer process died or stopped answering ({first or type(exc).__name__})"
    if isinstance(exc, OSError) and exc.errno is not None:  # a full disk, a lost mount...
        return os_error_line(exc)
    kind = "out of memory" if isinstance(exc, MemoryError) or "out of memory" in str(
        exc).lower() else f"internal error ({type(exc).__name__})"
    return f"{kind}: {first}"


def hold_training_lock(model_dir: Path, run_id: str, model_name: str) -> ModelLock:
    """The model's training lock, held until this process ends: the one the launcher handed
    over, or taken here (a worker started by hand)."""
    lock = ModelLock.adopt(model_dir)
    if lock is None:
        try:
            lock = ModelLock.acquire(model_dir, run_id=run_id)
        except LockHeld as held:
            raise BusyError(f"model {model_name} is already training in run "
                            f"{(held.holder or {}).get('run_id', '(unknown)')}") from None
    lock.record(run_id=run_id)
    return lock


def peer_errors(runs: RunStore, run_id: str) -> list[str]:
    """Failures other ranks of a multi-process run left behind, as 'rank N: error'."""
    from llm_trainer.store.atomic import read_json

    out = []
    for path in sorted(runs.paths(run_id).dir.glob("rank-*.error")):
        data = read_json(path)
        if data:
            out.append(f"rank {data.get('rank')}: {data.get('error')}")
    return out


def _is_collective_error(exc: BaseException) -> bool:
    """A failed collective of torch.distributed: its own error types, or the RuntimeError a
    backend raises with its name in the message (gloo's "[.../gloo/transport/...] Connection
    closed by peer"). Ordinary messages that merely contain "peer" or "socket" do not count."""
    import re

    try:
        import torch.distributed as dist

        if isinstance(exc, getattr(dist, "DistError", ())):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and re.search(
        r"\b(gloo|nccl|c10d|ProcessGroup\w*)\b", str(exc)) is not None


def _drop_empty_model(models: ModelStore, meta: RunMeta, reporter: RunReporter, code: int) -> None:
    """A new model whose first run failed before any checkpoint is not a model: remove it."""
    if code == 0 or not meta.created_model:
        return
    rec = models.find_by_id(meta.model["id"])
    if rec is not None and not models.has_checkpoints(rec):
        models.delete(rec.name)
        reporter.log(f"removed the empty model {rec.name} (no checkpoint was written)")


def _fmt_loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_trainer.worker",
                                     description="Run one training job (started by llm-trainer).")
    parser.add_argument("run_id", nargs="?")
    parser.add_argument("--home", default=os.environ.get("LLM_TRAINER_HOME", "."))
    parser.add_argument("--foreground", action="store_true",
                        help="attached to a terminal: SIGHUP pauses instead of being ignored")
    parser.add_argument("--standby", action="store_true",
                        help="started ahead by a --foreground command: the run comes on stdin")
    args = parser.parse_args(argv)
    if args.standby:
        return standby()
    if args.run_id is None:
        parser.error("the run id is required")
    return run_worker(args.run_id, Path(args.home), foreground=args.foreground)


def standby() -> int:
    """``--standby`` (``launcher.StandbyWorker``): import what training needs while the
    command plans the run, then train the run it hands over (a foreground one). Closed
    unused, it leaves at once, imports unfinished."""
    import threading

    from llm_trainer import launcher

    handed: list = []

    def receive() -> None:  # blocked in recvmsg (no GIL) while the imports go on
        job = launcher.receive_job()
        if job is None:
            os._exit(0)
        handed.append(job)

    waiter = threading.Thread(target=receive, daemon=True)
    waiter.start()
    import torch._dynamo  # noqa: F401  (torch, and what the first optimizer imports)

    from llm_trainer.inference import samples  # noqa: F401
    from llm_trainer.training import estimate, trainer  # noqa: F401

    waiter.join()
    run_id, home = launcher.adopt_job(*handed[0])
    return run_worker(run_id, home, foreground=True)


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown (freeing torch's modules, threads and
    caches: ~0.5-1 s on a small CPU run). Everything that matters is on disk by now: state,
    metrics, the log and checkpoints are written and closed, and the lock is released."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
