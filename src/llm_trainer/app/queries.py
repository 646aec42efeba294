"""Run queries: typed views of runs, reconciled with process liveness. Reads only. No torch.

A run whose state says queued/running but whose process is gone has failed (or was stopped
with ``stop --now``: that intent is in the run's control.json, which only front ends write,
while state.json has one writer, the worker).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

from llm_trainer import launcher
from llm_trainer.data.spec import WIKITEXT_NAMES
from llm_trainer.errors import BusyError, NotFoundError, RecordError
from llm_trainer.store.atomic import JsonLines, read_json
from llm_trainer.store.locks import lock_holder, read_holder
from llm_trainer.store.models import ModelRecord, ModelStore
from llm_trainer.store.records import PHASE_FIELDS, RunKind, RunState, RunStatus
from llm_trainer.store.runs import RunStore
from llm_trainer.views import LossCurve, RecentDataset, RunDetail, RunView

QUEUED_GRACE_S = 60.0
# a run that ended this way is "continued" once a resume of its model follows it
CONTINUABLE = (RunStatus.PAUSED, RunStatus.STOPPED, RunStatus.FAILED)
CONTINUED = "continued"
UNREADABLE = "unreadable"  # RunView.status of a run whose state.json cannot be used
STOPPED_NOW = "killed without a checkpoint (--now)"


def busy_error(model: str, run: str, action: str) -> BusyError:
    """One message for "this model is training", whichever check found it."""
    if action in tuple(RunKind):  # a launch
        return BusyError(f"model {model} is already training in run {run}",
                         hint=f"follow it with `llm-trainer status {run}` or stop it with "
                              f"`llm-trainer stop {run}`")
    return BusyError(f"cannot {action} model {model}: it is training in run {run}",
                     hint=f"stop it first with `llm-trainer stop {run}`")


class RunQueries:
    def __init__(self, runs: RunStore, models: ModelStore) -> None:
        self.runs, self.models = runs, models

    def require_run(self, run_id: str) -> str:
        return self.runs.require(run_id)

    # ------------------------------------------------------------------ liveness
    def reconcile(self, state: RunState) -> RunState:
        if not state.status.active:
            return state
        control = self.runs.read_control(state.run_id)
        if state.status == RunStatus.RUNNING or state.pid:
            if launcher.process_alive(state.pid, state.create_time):
                return state
            if control.get("stop") == "now":
                return state.updated(status=RunStatus.STOPPED, error=STOPPED_NOW,
                                     ended_at=control.get("requested_at"), eta_seconds=None,
                                     finish_at=None)
            error = "process ended unexpectedly"
            if state.world_size:
                peers = sorted(self.runs.paths(state.run_id).dir.glob("rank-*.error"))
                details = [str((read_json(p) or {}).get("error")) for p in peers]
                if details:
                    error += f" (another rank failed: {details[0]})"
            return state.updated(status=RunStatus.FAILED, error=error, eta_seconds=None,
                                 finish_at=None)
        if control.get("start_error"):
            return state.updated(status=RunStatus.FAILED, error=control["start_error"])
        starter = control.get("starter_pid")
        if starter and not launcher.process_alive(starter, control.get("starter_create_time")):
            again = self.runs.read_state(state.run_id)  # its pid may have just been written
            if again is not None and again.pid:
                return self.reconcile(again)
            said = "see its train.log" if self.runs.log_tail(state.run_id, 1) else \
                "it wrote nothing to its train.log: killed?"
            return state.updated(status=RunStatus.FAILED, error="the training process ended "
                                 f"before it started training ({said})")
        if not starter and time.time() - float(state.created_at or 0) > QUEUED_GRACE_S:
            return state.updated(status=RunStatus.FAILED,
                                 error="the worker process never started (see its train.log)")
        return state

    def run_alive(self, run_id: str) -> bool:
        """``run_view(run_id).active`` from the run's state alone: no model or other run is
        read (callers poll it, once per model or every 20 ms while a lock changes hands)."""
        try:
            state = self.runs.read_state(run_id)
        except RecordError:  # unreadable: not active, as run_view says
            return False
        return state is not None and self.reconcile(state).status.active

    def training_run_of(self, rec: ModelRecord) -> str | None:
        """The run training ``rec`` now, for display and quick refusals (the lock itself is
        what keeps two trainings apart)."""
        holder = lock_holder(rec.path)
        return holder if holder and self.runs.exists(holder) and self.run_alive(holder) \
            else None

    def lock_holder_run(self, rec: ModelRecord, holder: dict | None) -> str:
        """The run holding a lock we just failed to take. Its launcher writes its run id right
        after taking the lock: wait briefly for that rather than name a finished run the
        file still mentions."""
        deadline = time.monotonic() + 2.0
        while True:
            holder = holder or {}
            if holder.get("operation") and launcher.process_alive(holder.get("pid"), None):
                return f"(none: being changed by `{holder['operation']}`)"
            run = holder.get("run_id")
            if run and (not self.runs.exists(run) or self.run_alive(run)):
                return run
            if time.monotonic() > deadline:
                return run or "(unknown)"
            time.sleep(0.02)
            holder = read_holder(rec.path)

    # ------------------------------------------------------------------ views
    def _models_by_id(self) -> dict[str, ModelRecord]:
        return {m.id: m for m in self.models.list()}

    def _model_of(self, run_id: str, state: RunState) -> str:
        """The id of the run's model. A run recorded before runs named it (no ``model_id``)
        is matched once (``ModelStore.owner_of_legacy_run``) and the answer written into its
        meta.json and state.json, so a later rename or a new model of the same name cannot
        change it. Only a finished run is written (state.json is its worker's while it
        runs; every run since ids has one anyway)."""
        if state.model_id:
            return state.model_id
        try:
            meta = self.runs.read_meta(run_id)
        except Exception:  # unreadable: match by the state's name, write nothing
            meta = None
        mid = (meta.model or {}).get("id") if meta is not None else None
        name = state.model_name or ((meta.model or {}).get("name") if meta else None)
        mid = mid or self.models.owner_of_legacy_run(run_id, name, state.created_at)
        if meta is not None and not state.status.active:
            with contextlib.suppress(OSError):
                self.runs.write_meta(meta.updated(model={**(meta.model or {}), "id": mid,
                                                         "name": name}))
                self.runs.write_state(state.updated(model_id=mid, model_name=name))
        return mid

    def run_view(self, run_id: str, models: dict[str, ModelRecord] | None = None,
                 continued: dict[str, str] | None = None) -> RunView:
        """One run as lists show it. Its model is found by id: the model's name now, and
        the checkpoint in the model's folder now (a rename moved it); a run whose model was
        deleted says so, and names no checkpoint. ``continued``: run id -> the run that
        continued it (``continuations``), worked out here when not given."""
        try:
            raw = self.runs.read_state(run_id)
        except RecordError as exc:  # this run only: the others are listed as usual
            return RunView(run_id=run_id, model="?", model_id=None, status=UNREADABLE,
                           error=str(exc))
        if raw is None:
            return RunView(run_id=run_id, model="?", model_id=None, status=UNREADABLE,
                           error=f"{self.runs.paths(run_id).state} is missing")
        state = self.reconcile(raw)
        models = models if models is not None else self._models_by_id()
        model_id = self._model_of(run_id, state)
        rec = models.get(model_id)
        if rec is not None:
            model, checkpoint = rec.name, state.checkpoint and \
                str(rec.path / Path(state.checkpoint).name)
        else:
            model, checkpoint = f"{state.model_name or '?'} (deleted)", None
        if continued is None and state.status in CONTINUABLE:
            continued = self.continuations()
        continued_by = (continued or {}).get(run_id) if state.status in CONTINUABLE else None
        active = state.status.active
        started = state.started_at or state.created_at
        elapsed = None
        if started:
            end = state.ended_at if not active else None
            elapsed = (end or (time.time() if active else state.updated_at or time.time())) \
                - started
        tele = state.telemetry or {}
        in_phase = state.status == RunStatus.RUNNING and state.phase is not None
        phase = {k: getattr(state, k) if in_phase else None for k in PHASE_FIELDS}
        return RunView(
            run_id=run_id, model=model, model_id=model_id,
            status=CONTINUED if continued_by else state.status.value,
            continued_by=continued_by, epoch=state.epoch,
            step=state.step, total_steps=state.total_steps, loss=state.loss,
            val_loss=state.val_loss, best_val_loss=state.best_val_loss,
            device=state.device or state.requested_device,
            eta_seconds=state.eta_seconds if active else None,
            finish_at=state.finish_at if active else None, elapsed_s=elapsed,
            tokens_per_s=state.tokens_per_s, lr=state.lr, grad_norm=state.grad_norm,
            anomalies=state.anomalies, rollbacks=state.rollbacks,
            last_anomaly=state.last_anomaly, last_sample=state.last_sample,
            gpu_util_pct=tele.get("gpu_util_pct"), pid=state.pid, error=state.error,
            reason=state.reason, checkpoint=checkpoint, created_at=state.created_at,
            started_at=state.started_at, ended_at=state.ended_at, telemetry=tele or None,
            estimated_step_s=(state.estimate or {}).get("step_time_s"),
            actual_step_s=state.actual_step_time_s, estimate_error=state.estimate_error,
            **phase)

    def continuations(self) -> dict[str, str]:
        """Run id -> the run that resumed its model next: a resume continues the model's
        run before it, so that run's pause (or stop, or failure) is history, not something
        left to do. Read from meta.json (kind, model id, start), in start order."""
        last: dict[str, str] = {}  # model id -> its latest run so far
        out: dict[str, str] = {}
        for run_id in reversed(self.runs.run_ids()):  # oldest first
            try:
                meta = self.runs.read_meta(run_id)
            except Exception:  # unreadable: `status` says so on its own row
                continue
            mid = (meta.model or {}).get("id")
            if not mid:
                continue
            if meta.kind == RunKind.RESUME and mid in last:
                out[last[mid]] = run_id
            last[mid] = run_id
        return out

    def list_runs(self, *, active_only: bool = False,
                  include_continued: bool = False) -> list[RunView]:
        """Running first, then newest first; a run a resume continued only with
        ``include_continued`` (its model's newer run is the one that matters)."""
        models, continued = self._models_by_id(), self.continuations()
        views = [self.run_view(r, models, continued) for r in self.runs.run_ids()]
        if active_only:
            views = [v for v in views if v.active]
        if not include_continued:
            views = [v for v in views if v.continued_by is None]
        return sorted(views, key=lambda v: (not v.active, -(v.created_at or 0), v.run_id))

    def run_detail(self, run_id: str, log_lines: int = 10) -> RunDetail:
        """One run in full; a record it cannot read (damaged, not ours to read, or from a
        newer release) is an error here (``RecordError``: one line), where the list only
        marks it unreadable."""
        run_id = self.runs.require(run_id)
        self.runs.read_state(run_id)  # raises RecordError for a file it cannot use
        view = self.run_view(run_id)
        meta = self.runs.read_meta(run_id).to_json()
        return RunDetail(**dataclasses.asdict(view),
                         meta={k: v for k, v in meta.items() if k != "config"},
                         config=meta.get("config"),
                         log_tail=self.runs.log_tail(run_id, log_lines),
                         log_path=str(self.runs.paths(run_id).log),
                         bad_metric_lines=self._metric_lines(run_id).bad)

    def _metric_lines(self, run_id: str) -> JsonLines:
        """metrics.jsonl; one that cannot be read at all reads as no lines (its run's state
        and log still show), as a damaged line reads as a skipped one."""
        try:
            return self.runs.metric_lines(run_id)
        except RecordError:
            return JsonLines()

    def metrics(self, run_id: str, tail: int | None = None) -> list[dict[str, Any]]:
        return self.runs.read_metrics(run_id, tail=tail)

    def loss_curve(self, run_id: str) -> LossCurve:
        """Train and val loss by step from the run's metrics (what the plots draw), and how
        many of its lines were skipped as bad."""
        lines = self._metric_lines(self.runs.require(run_id))
        curve = LossCurve(bad_lines=lines.bad)
        for m in lines.records:
            step = m.get("step")
            if step is None:
                continue
            if m.get("kind") == "train" and m.get("loss") is not None:
                curve.train_steps.append(step)
                curve.train_loss.append(float(m["loss"]))
            elif m.get("kind") == "eval" and m.get("val_loss") is not None:
                curve.val_steps.append(step)
                curve.val_loss.append(float(m["val_loss"]))
        return curve

    # ------------------------------------------------------------------ datasets
    def recent_datasets(self) -> list[RecentDataset]:
        """The datasets this home has trained on, most recently used first, one entry each.

        A run counts once its worker has read the data (its meta.json names the dataset it
        resolved, after any fallback): a run that failed on a mistyped path suggests nothing.
        The models' own records add what their runs no longer show (runs deleted by hand).
        Two spellings of one local path are one dataset, shown as the latest run spelled it.
        """
        home = self.runs.root.parent
        names = {mid: m.name for mid, m in self._models_by_id().items()}
        found: dict[str, dict[str, Any]] = {}

        def key_of(spec: str) -> tuple[str, Path | None]:
            """One key per dataset; a local one as its absolute path, which is also what
            the picker offers (a path recorded relative to the home means nothing elsewhere)."""
            local = _local_path(spec, home)
            return (str(local.resolve()) if local is not None else spec), local

        for run_id in self.runs.run_ids():  # newest first: the first use seen is the latest
            try:
                meta = self.runs.read_meta(run_id)
            except (RecordError, NotFoundError):  # `status` says why
                continue
            dataset = meta.dataset or {}
            if not dataset.get("spec"):
                continue
            key, local = key_of(str(dataset["spec"]))
            spec = key if local is not None else str(dataset["spec"])
            entry = found.setdefault(key, {"spec": spec, "when": meta.created_at, "models": [],
                                           "runs": 0, "tokens": None, "local": local})
            entry["runs"] += 1
            if (meta.created_at or 0) > (entry["when"] or 0):  # ids sort by time; be sure
                entry.update(spec=spec, when=meta.created_at, local=local)
            if entry["tokens"] is None:
                entry["tokens"] = dataset.get("train_tokens")
            model = meta.model or {}
            name = names.get(model.get("id") or "")  # a deleted model is none of these
            if name and name not in entry["models"]:
                entry["models"].append(name)
        # models whose runs are gone: their record still names what they were trained on
        for rec in sorted(self.models.list(),
                          key=lambda m: -(m.last_trained_at or m.created_at or 0)):
            for d in rec.datasets:
                if not d.get("spec"):
                    continue
                key, local = key_of(str(d["spec"]))
                entry = found.setdefault(key, {"spec": key, "models": [], "runs": 0,
                                               "when": rec.last_trained_at or rec.created_at,
                                               "tokens": None, "local": local})
                if rec.name not in entry["models"]:
                    entry["models"].append(rec.name)

        out = [RecentDataset(spec=e["spec"], last_used_at=e["when"], models=e["models"],
                             runs=e["runs"], train_tokens=e["tokens"],
                             missing=e["local"] is not None and not e["local"].exists())
               for e in found.values()]
        return sorted(out, key=lambda r: -(r.last_used_at or 0))


def _local_path(spec: str, home: Path) -> Path | None:
    """Where a local dataset spec points (workers run in the home: a relative path is relative
    to it); None for the built-in and Hugging Face datasets."""
    if spec in WIKITEXT_NAMES or spec.startswith(("builtin:", "hf:")):
        return None
    path = Path(spec).expanduser()
    return path if path.is_absolute() else home / path
