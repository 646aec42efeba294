"""Experiment loggers (``runtime.loggers``): TensorBoard, CSV, W&B and MLflow behind one
small interface, fed by one callback.

A ``Logger`` is told the run once (``start``, which returns the id of the logger run it
writes to), then scalars (``log``) and text (``log_text``) at training steps, and ``close``
at the end. ``ExperimentLoggers`` turns the trainer's events into those calls; it runs on
rank 0 only, like the other reporting callbacks.

One model, one curve. The callback's state (the logger run ids, and how far each logger has
logged) is stored with every checkpoint (``TrainState.callbacks["loggers"]``), so a resume
finds the logger runs of the checkpoint it starts from and continues them: TensorBoard writes
into the same run folder, W&B resumes the same run id, MLflow the same run id, and CSV
appends to the model's one file. The checkpoint is the right home for them: it is what a
resume reads, it is written atomically together with the step the ids belong to, and it
outlives the run folders (which may be pruned).

Steps never go backwards. A run can return to an earlier step: a resume from a checkpoint
older than the last logged step (the previous run was killed), or a rollback after an
anomaly. Loggers whose data is ours to rewrite replace what was logged past that step
(TensorBoard through ``purge_step``, CSV by dropping those rows); W&B and MLflow runs only go
forward, so they keep what they were first sent and take nothing below the highest step
they already hold (``Logger.replaces``).

A third-party logger that fails to start fails the run (the user asked for it); one that
fails later is turned off for the rest of the run with a line in train.log, and training
goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_trainer.config import LOGGERS
from llm_trainer.errors import LLMTrainerError
from llm_trainer.training.callbacks import Callback

if TYPE_CHECKING:
    from llm_trainer.config import RuntimeConfig

# every scalar a logger is sent, in the CSV file's column order
SCALARS = ("train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm", "val/loss",
           "val/perplexity")
OPTION = {"tensorboard": "--tensorboard"}  # the flag named when a package is missing
DEFAULT_PROJECT = "llm-trainer"  # W&B project and MLflow experiment unless the env names one


def require_loggers(runtime: RuntimeConfig) -> None:
    """Refuse, in one line naming the extra, a logger whose package is not installed. Called
    when a launch is planned (a dry run too), so nothing starts without it. TensorBoard is
    imported (light, and a broken install is caught too); of W&B and MLflow, whose imports
    take seconds, only the package's presence is checked."""
    from llm_trainer.extras import require

    for name in runtime.active_loggers():
        if name != "csv":
            require(name, option=OPTION.get(name, f"runtime.loggers {name}"),
                    load=name == "tensorboard")


@dataclass(frozen=True)
class LoggerRun:
    """What a logger is told when the run starts."""

    home: Path
    run_id: str
    run_dir: Path  # runs/<run_id>/
    model_name: str
    model_dir: Path  # the model's folder (the CSV file lives there)
    config: dict[str, Any]  # the RunConfig as trained
    start_step: int  # the step the run starts from (0, or the checkpoint's)
    say: Callable[[str], None] = print  # a line for the run's log


class Logger:
    """The interface. ``start`` returns the id of the logger run it writes to; given the id
    a previous run returned (``resume_id``), it continues that one."""

    kind = ""
    replaces = False  # True: a step logged again replaces the old value (see the module doc)

    def start(self, run: LoggerRun, resume_id: str | None) -> str:
        raise NotImplementedError

    def last_step(self) -> int:
        """The highest step the logger run already holds, when the backend can say (-1: none
        known); forward-only loggers send nothing up to it again."""
        return -1

    def log(self, step: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def log_text(self, step: int, tag: str, text: str) -> None:
        pass

    def rewind(self, step: int) -> None:
        """The run went back to ``step`` (a rollback): drop what was logged after it. Only
        called on loggers that ``replace``."""

    def flush(self) -> None:
        pass

    def close(self, status: str) -> None:
        """``status``: completed, paused, stopped or failed."""


# ============================================================================ TensorBoard


class TensorBoardLogger(Logger):
    """Event files through ``torch.utils.tensorboard`` in ``runs/<id>/tensorboard/`` of the
    run that started the curve; its id is that run's id. A resume writes a new event file in
    the same folder with ``purge_step``, so TensorBoard drops what an earlier life logged past
    the resumed step and shows one line."""

    kind = "tensorboard"
    replaces = True

    def __init__(self) -> None:
        self.writer = None
        self.log_dir: Path | None = None

    def start(self, run: LoggerRun, resume_id: str | None) -> str:
        from llm_trainer.store.runs import RunStore

        runs = RunStore(run.home)
        owner = run.run_id
        if resume_id and resume_id != run.run_id:
            if runs.paths(resume_id).dir.is_dir():
                owner = resume_id
            else:
                run.say(f"tensorboard: the folder of run {resume_id} is gone; this run's "
                        "curve starts a new TensorBoard run")
        self.log_dir = runs.paths(owner).tensorboard
        self._open(run.start_step)
        return owner

    def _open(self, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=step + 1 if step else None)

    def log(self, step, scalars) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_text(self, step, tag, text) -> None:
        body = "\n".join("    " + line for line in text.splitlines())  # markdown: verbatim
        self.writer.add_text(tag, body or "    (empty)", step)

    def rewind(self, step) -> None:
        self.writer.close()
        self._open(step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ============================================================================ CSV


class CsvLogger(Logger):
    """``metrics.csv`` in the model's folder: one file per model, a row per logged step and
    kind (train or eval), the header once. A model's steps only grow (a resume or a
    continued run counts on from its checkpoint), so one file holds the model's whole curve.

    Appends are single ``write`` calls of whole lines to a file opened ``O_APPEND``; a line a
    crash cut short is dropped at the next start. Going back to a step (a resume from an
    older checkpoint, a rollback) rewrites the file without the rows past it, atomically."""

    kind = "csv"
    replaces = True
    FILE = "metrics.csv"

    def __init__(self) -> None:
        self.path: Path | None = None
        self.fd: int | None = None
        self.columns: list[str] = []
        self.run_id = ""

    def start(self, run: LoggerRun, resume_id: str | None) -> str:
        self.path = Path(run.model_dir) / self.FILE
        self.run_id = run.run_id
        self.columns = ["step", "time", "run_id", *SCALARS]
        lines = self._lines()
        if lines:
            header = next(csv.reader([lines[0]]), None)
            if header and header[0] == "step":
                self.columns = header  # the file's own columns: the header stays the one
        self._rewrite_past(run.start_step, lines)
        self._open()
        return self.FILE

    def _lines(self) -> list[str]:
        """The file's whole lines (a last one without its newline was cut by a crash)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()
        return lines

    def _rewrite_past(self, step: int, lines: list[str]) -> None:
        """Keep the header and the rows up to ``step``; rewrite only when that changes the
        file."""
        from llm_trainer.store.atomic import atomic_write_text

        if not lines:
            return
        keep = lines[:1] + [ln for ln in lines[1:] if self._step_of(ln) <= step]
        if keep != lines or not self.path.read_text(encoding="utf-8").endswith("\n"):
            atomic_write_text(self.path, "".join(keep))

    @staticmethod
    def _step_of(line: str) -> int:
        try:
            return int(line.split(",", 1)[0])
        except ValueError:
            return -1  # not a row of ours: kept

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if os.fstat(self.fd).st_size == 0:
            self._write(self.columns)

    def _write(self, row: list[Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row)
        os.write(self.fd, buf.getvalue().encode("utf-8"))

    def log(self, step, scalars) -> None:
        values = {"step": step, "time": f"{time.time():.3f}", "run_id": self.run_id,
                  **{k: f"{v:.8g}" for k, v in scalars.items()}}
        self._write([values.get(c, "") for c in self.columns])

    def rewind(self, step) -> None:
        os.close(self.fd)
        self._rewrite_past(step, self._lines())
        self._open()

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self, status) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ============================================================================ W&B


class WandbLogger(Logger):
    """A W&B run named after the model, in the project ``$WANDB_PROJECT`` (default
    llm-trainer); its files under ``runs/<id>/wandb/``. ``WANDB_MODE=offline`` works without
    an account (``wandb sync`` uploads later). A resume continues the run id with
    ``resume="allow"``. W&B takes steps in increasing order only."""

    kind = "wandb"

    def __init__(self) -> None:
        self.run = None
        self.resumed_step = -1

    def start(self, run: LoggerRun, resume_id: str | None) -> str:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, name=run.model_name,
            id=resume_id, resume="allow", dir=str(run.run_dir),
            config=None if resume_id else run.config,
            settings=wandb.Settings(console="off", quiet=True, silent=True))
        if resume_id and self.run.step:  # online: the server's next step
            self.resumed_step = self.run.step - 1
        return self.run.id

    def last_step(self) -> int:
        return self.resumed_step

    def log(self, step, scalars) -> None:
        self.run.log(dict(scalars), step=step)

    def log_text(self, step, tag, text) -> None:
        import html

        import wandb

        self.run.log({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)

    def close(self, status) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if status == "failed" else 0)
            self.run = None


# ============================================================================ MLflow


class MlflowLogger(Logger):
    """An MLflow run named after the model, in the experiment ``$MLFLOW_EXPERIMENT_NAME``
    (default llm-trainer), at ``$MLFLOW_TRACKING_URI`` or else a file store in
    ``<home>/mlruns`` (``mlflow ui --backend-store-uri <home>/mlruns``). Through
    ``MlflowClient`` rather than the module-level active run: no global state to leak. A
    resume sets the same run id RUNNING again (what ``mlflow.start_run(run_id=...)`` does)."""

    kind = "mlflow"
    STATUS = {"completed": "FINISHED", "failed": "FAILED"}  # paused / stopped: KILLED

    def __init__(self) -> None:
        self.client = None
        self.run_id = ""
        self.resumed_step = -1

    def start(self, run: LoggerRun, resume_id: str | None) -> str:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path(run.home) / "mlruns").as_uri()
            # mlflow 3 keeps the file store but asks for this opt-in; a database URI in
            # MLFLOW_TRACKING_URI needs none
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        if resume_id:
            try:
                self.client.update_run(resume_id, status="RUNNING")
                self.run_id = resume_id
                self.resumed_step = max(
                    (m.step for key in ("train/loss", "val/loss")
                     for m in self.client.get_metric_history(resume_id, key)), default=-1)
            except MlflowException:
                run.say(f"mlflow: run {resume_id} is not in {uri}; starting a new MLflow run")
        if not self.run_id:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
            self.run_id = self.client.create_run(experiment, run_name=run.model_name,
                                                 tags={"llm_trainer.run": run.run_id}
                                                 ).info.run_id
            self._params(run.config)
        return self.run_id

    def _params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(f"{section}.{key}", str(value)[:500])
                  for section, values in config.items() for key, value in values.items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def last_step(self) -> int:
        return self.resumed_step

    def log(self, step, scalars) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step)
                                                    for k, v in scalars.items()])

    def log_text(self, step, tag, text) -> None:
        self.client.log_text(self.run_id, text, f"{tag}/step-{step:08d}.txt")

    def close(self, status) -> None:
        if self.client is not None and self.run_id:
            self.client.set_terminated(self.run_id, self.STATUS.get(status, "KILLED"))
            self.client = None


BACKENDS: dict[str, type[Logger]] = {"tensorboard": TensorBoardLogger, "csv": CsvLogger,
                                     "wandb": WandbLogger, "mlflow": MlflowLogger}
assert tuple(BACKENDS) == LOGGERS


# ============================================================================ the callback


class ExperimentLoggers(Callback):
    """Sends the trainer's events to each logger, keeps their ids and how far each logged
    (in every checkpoint, see the module doc), and keeps steps from going backwards."""

    name = "loggers"

    def __init__(self, loggers: list[Logger], run: LoggerRun) -> None:
        self.loggers = list(loggers)
        self.run = run
        self.ids: dict[str, str] = {}
        # forward-only loggers: the lowest step each still takes (steps below are held
        # already; the step itself may take another kind of scalar, e.g. val after train)
        self.high: dict[str, int] = {}
        self.started: list[Logger] = []

    @classmethod
    def from_names(cls, names: tuple[str, ...], run: LoggerRun) -> ExperimentLoggers:
        return cls([BACKENDS[n]() for n in names], run)

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"ids": dict(self.ids), "high": dict(self.high)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ids = {str(k): str(v) for k, v in (state.get("ids") or {}).items()}
        self.high = {str(k): int(v) for k, v in (state.get("high") or {}).items()}

    # -------------------------------------------------------------- plumbing
    def _guarded(self, logger: Logger, what: str, call: Callable[[Logger], None]) -> bool:
        """``call(logger)``; a failure turns that logger off (with a line) and says False."""
        try:
            call(logger)
            return True
        except Exception as exc:  # a logger must not end the training it reports on
            self.started.remove(logger)
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.run.say(f"{logger.kind}: {what} failed ({type(exc).__name__}: {first}); "
                         f"{logger.kind} logging is off for the rest of this run")
            return False

    def _each(self, what: str, call: Callable[[Logger], None], step: int | None = None
              ) -> None:
        for logger in list(self.started):
            forward_only = step is not None and not logger.replaces
            if forward_only and step < self.high.get(logger.kind, -1):
                continue  # below what this forward-only run already holds
            if self._guarded(logger, what, call) and forward_only:
                self.high[logger.kind] = max(self.high.get(logger.kind, -1), step)

    def _scalars(self, step: int, values: dict[str, float | None]) -> None:
        scalars = {k: float(v) for k, v in values.items()
                   if v is not None and math.isfinite(v)}
        if scalars:
            self._each("logging", lambda lg: lg.log(step, scalars), step)

    # -------------------------------------------------------------- Callback protocol
    def on_start(self, trainer, info) -> None:
        run = self.run = dataclasses.replace(self.run, start_step=info.start_step,
                                             config=info.config)
        for logger in self.loggers:
            try:
                self.ids[logger.kind] = logger.start(run, self.ids.get(logger.kind))
            except Exception as exc:
                for started in self.started:
                    started.close("failed")
                self.started = []
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise LLMTrainerError(f"runtime.loggers {logger.kind}: could not start "
                                      f"({first})") from exc
            self.started.append(logger)
            if not logger.replaces and logger.last_step() >= 0:  # it holds that step
                self.high[logger.kind] = max(self.high.get(logger.kind, -1),
                                             logger.last_step() + 1)
        if self.started:
            kinds = ", ".join(f"{k} {v}" for k, v in self.ids.items())
            self.run.say(f"loggers: {kinds}" + (f" (continued at step {info.start_step})"
                                                if info.start_step else ""))

    def on_progress(self, trainer, p) -> None:
        self._scalars(p.step, {"train/loss": p.loss, "train/lr": p.lr,
                               "train/tokens_per_s": p.tokens_per_s,
                               "train/grad_norm": p.grad_norm})

    def on_eval(self, trainer, r) -> None:
        self._scalars(r.step, {"val/loss": r.val_loss, "val/perplexity": r.perplexity})

    def on_sample(self, trainer, s) -> None:
        self._each("a sample", lambda lg: lg.log_text(s.step, "samples", s.prompt + s.text),
                   s.step)

    def on_anomaly(self, trainer, e) -> None:
        self._each("an anomaly", lambda lg: lg.log_text(e.step, "anomalies",
                                                        f"{e.reason} -> {e.action}"), e.step)
        good = getattr(trainer, "last_good", None)
        if e.action == "rollback" and good is not None:  # the trainer returns to good.step
            for logger in [lg for lg in self.started if lg.replaces]:
                self._guarded(logger, "a rollback", lambda lg: lg.rewind(good.step))

    def on_checkpoint(self, trainer, r) -> None:
        self._each("flushing", lambda lg: lg.flush())

    def on_end(self, trainer, result) -> None:
        status = "failed" if result is None else result.status
        for logger in self.started:
            try:
                logger.close(status)
            except Exception as exc:
                self.run.say(f"{logger.kind}: closing failed ({exc})")
        self.started = []
