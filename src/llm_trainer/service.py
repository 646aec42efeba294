"""The application layer both front ends (CLI and TUI) call. No torch at import time.

Starting training always goes the same way: a run record is written, the model's training
lock is taken, and ``python -m llm_trainer.worker`` is spawned (in its own session when
detached; attached to the terminal with ``--foreground``, where the CLI follows the same
files the TUI reads).
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer import launcher
from llm_trainer.config import RunConfig, apply_overrides, load_config, load_yaml, preset_path
from llm_trainer.data.sources import check_dataset_spec
from llm_trainer.errors import BusyError, NotFoundError, UsageError
from llm_trainer.store.atomic import read_json
from llm_trainer.store.checkpoints import (
    CheckpointInfo,
    inspect_checkpoint,
    list_checkpoints,
    plan_finished,
    resolve_checkpoint,
)
from llm_trainer.store.locks import acquire_model_lock, lock_holder, lock_path
from llm_trainer.store.models import ModelRecord, ModelStore, slug, validate_name
from llm_trainer.store.runs import ACTIVE, RunStore

QUEUED_GRACE_S = 60.0
ARCH_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "activation")


def resolve_home(home: str | os.PathLike | None) -> Path:
    """``--home`` > ``LLM_TRAINER_HOME`` > the current folder."""
    return Path(home or os.environ.get("LLM_TRAINER_HOME") or ".").expanduser().resolve()


@dataclass
class TrainRequest:
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys the user set
    config_file: str | None = None
    preset: str | None = None
    name: str | None = None  # name of a new model
    model: str | None = None  # continue this existing model instead
    data_from: str | None = None  # train on the dataset model B was trained on
    foreground: bool = False
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    dist: DistLaunch | None = None


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


class Service:
    def __init__(self, home: str | os.PathLike | None = None) -> None:
        self.home = resolve_home(home)
        self.runs = RunStore(self.home)
        self.models = ModelStore(self.home)
        self._verified: dict[tuple, CheckpointInfo] = {}
        self._children: list[subprocess.Popen] = []  # detached workers this process started
        self._telemetry = None

    def reap(self) -> None:
        """Collect exited workers this (long-lived, e.g. TUI) process started: no zombies."""
        self._children = [p for p in self._children if p.poll() is None]

    def system_snapshot(self, runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Host telemetry plus the time until every active run is done (None: no active run;
        runs train side by side, so that is the longest remaining time, not a sum)."""
        from llm_trainer.telemetry import Telemetry

        if self._telemetry is None:
            self._telemetry = Telemetry()
        snap = self._telemetry.sample()
        views = runs if runs is not None else self.list_runs(active_only=True)
        active = [v for v in views if v["status"] in ACTIVE]
        etas = [v["eta_seconds"] for v in active if v["eta_seconds"] is not None]
        snap["active_runs"] = len(active)
        snap["remaining_s"] = max(etas) if etas else None
        return snap

    # =================================================================== run liveness
    def run_alive(self, run_id: str) -> bool:
        return self.run_view(run_id)["status"] in ACTIVE

    def _reconcile(self, state: dict[str, Any]) -> dict[str, Any]:
        """A run that says it is queued/running but whose process is gone failed."""
        status = state.get("status")
        if status not in ACTIVE:
            return state
        pid, ctime = state.get("pid"), state.get("create_time")
        if status == "running" or pid:
            if launcher.process_alive(pid, ctime):
                return state
            error = "process ended unexpectedly"
            if state.get("world_size"):
                peers = sorted(self.runs.paths(state["run_id"]).dir.glob("rank-*.error"))
                details = [str((read_json(p) or {}).get("error")) for p in peers]
                if details:
                    error += f" (another rank failed: {details[0]})"
            return {**state, "status": "failed", "error": error, "eta_seconds": None,
                    "finish_at": None}
        age = time.time() - float(state.get("created_at") or 0)
        if age > QUEUED_GRACE_S:
            return {**state, "status": "failed",
                    "error": "the worker process never started (see its train.log)"}
        return state

    # =================================================================== views
    def _model_names(self) -> dict[str, str]:
        return {m.id: m.name for m in self.models.list()}

    def run_view(self, run_id: str, names: dict[str, str] | None = None) -> dict[str, Any]:
        state = self._reconcile(self.runs.read_state(run_id))
        names = names if names is not None else self._model_names()
        model_id = state.get("model_id")
        started = state.get("started_at") or state.get("created_at")
        end = state.get("ended_at") if state.get("status") not in ACTIVE else None
        elapsed = None
        if started:
            elapsed = (end or (time.time() if state.get("status") in ACTIVE else
                               state.get("updated_at") or time.time())) - started
        tele = state.get("telemetry") or {}
        return {
            "run_id": run_id,
            "model": names.get(model_id, state.get("model_name") or "?"),
            "model_id": model_id,
            "status": state.get("status", "unknown"),
            "epoch": state.get("epoch"),
            "step": state.get("step"),
            "total_steps": state.get("total_steps"),
            "loss": state.get("loss"),
            "val_loss": state.get("val_loss"),
            "best_val_loss": state.get("best_val_loss"),
            "device": state.get("device") or state.get("requested_device"),
            "eta_seconds": state.get("eta_seconds") if state.get("status") in ACTIVE else None,
            "finish_at": state.get("finish_at") if state.get("status") in ACTIVE else None,
            "elapsed_s": elapsed,
            "tokens_per_s": state.get("tokens_per_s"),
            "lr": state.get("lr"),
            "grad_norm": state.get("grad_norm"),
            "anomalies": state.get("anomalies") or 0,
            "rollbacks": state.get("rollbacks") or 0,
            "last_anomaly": state.get("last_anomaly"),
            "last_sample": state.get("last_sample"),
            "gpu_util_pct": tele.get("gpu_util_pct"),
            "pid": state.get("pid"),
            "error": state.get("error"),
            "reason": state.get("reason"),
            "checkpoint": state.get("checkpoint"),
            "created_at": state.get("created_at"),
            "started_at": state.get("started_at"),
            "ended_at": state.get("ended_at"),
            "telemetry": tele or None,
        }

    def list_runs(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """Running first, then newest first."""
        self.reap()
        names = self._model_names()
        views = [self.run_view(r, names) for r in self.runs.run_ids()]
        if active_only:
            views = [v for v in views if v["status"] in ACTIVE]
        return sorted(views, key=lambda v: (v["status"] not in ACTIVE,
                                            -(v["created_at"] or 0), v["run_id"]))

    def run_detail(self, run_id: str, log_lines: int = 10) -> dict[str, Any]:
        run_id = self.runs.require(run_id)
        view = self.run_view(run_id)
        meta = self.runs.read_meta(run_id)
        view.update({
            "meta": {k: v for k, v in meta.items() if k != "config"},
            "config": meta.get("config"),
            "log_tail": self.runs.log_tail(run_id, log_lines),
            "log_path": str(self.runs.paths(run_id).log),
        })
        return view

    def metrics(self, run_id: str, tail: int | None = None) -> list[dict[str, Any]]:
        return self.runs.read_metrics(run_id, tail=tail)

    # =================================================================== model lookups
    def resolve_model(self, name: str | None) -> ModelRecord:
        """A named model, else the active one, else the latest trained."""
        if name:
            return self.models.get(name)
        rec = self.models.active() or self.models.latest_trained()
        if rec is None:
            raise NotFoundError("no model selected and none trained yet",
                                hint="train one with `llm-trainer train`, or name one with "
                                     "--model NAME")
        return rec

    def training_run_of(self, rec: ModelRecord) -> str | None:
        holder = lock_holder(rec.path)
        return holder if holder and self.runs.exists(holder) and self.run_alive(holder) \
            else None

    def require_idle(self, rec: ModelRecord, action: str) -> None:
        run = self.training_run_of(rec)
        if run:
            raise BusyError(f"cannot {action} model {rec.name}: it is training in run {run}",
                            hint=f"stop it first with `llm-trainer stop {run}`")

    def checkpoint_of(self, rec: ModelRecord, which: str = "latest",
                      notes: list[str] | None = None) -> CheckpointInfo:
        """The newest checkpoint matching ``which`` that passes its manifest check."""
        if _is_path(which):
            return self._checkpoint_at(which)
        skipped: list[str] = []
        info = resolve_checkpoint(rec.path, which, warn=skipped.append)
        if notes is not None:
            notes.extend(skipped)
        if info is None:
            have = [c.step for c in list_checkpoints(rec.path, verify=True) if c.valid]
            what = {"latest": "no usable checkpoint", "best": "no checkpoint with a val loss"}
            raise NotFoundError(
                f"model {rec.name} has {what.get(which, f'no usable checkpoint at step {which}')}"
                + (f" ({'; '.join(skipped)})" if skipped else ""),
                hint=(f"available steps: {', '.join(map(str, have))}" if have else
                      "its first run ended before saving one: delete it with `llm-trainer "
                      f"models delete {rec.name}` and train it again"))
        return info

    # =================================================================== training
    def _spawn(self, rec: ModelRecord, cfg: RunConfig, *, kind: str, init: dict | None,
               dataset_explicit: bool, foreground: bool, command: list[str],
               created_model: bool, notes: list[str],
               dist: DistLaunch | None = None) -> Launch:
        if cfg.runtime.tensorboard:
            from llm_trainer.extras import require

            require("tensorboard", option="--tensorboard")
        run_id = self.runs.new_run_id(rec.name)
        now = time.time()
        meta = {
            "created_at": now, "kind": kind, "command": command,
            "model": {"id": rec.id, "name": rec.name}, "config": cfg.to_dict(),
            "requested_device": cfg.runtime.device, "init": init,
            "dataset_explicit": dataset_explicit, "created_model": created_model,
            "foreground": foreground, "home": str(self.home),
            "distributed": dist.to_json() if dist and dist.enabled else None,
        }
        state = {"status": "queued", "model_id": rec.id, "model_name": rec.name,
                 "created_at": now, "requested_device": cfg.runtime.device, "step": 0}
        self.runs.create(run_id, meta, state)
        try:
            acquire_model_lock(rec.path, run_id, rec.name, self.run_alive)
        except BusyError:
            self.runs.write_state(run_id, {**state, "status": "failed",
                                           "error": "model was busy"})
            raise
        paths = self.runs.paths(run_id)
        cmd = launcher.worker_command(run_id, self.home) + (["--foreground"] if foreground
                                                            else [])
        if dist is not None and dist.enabled:  # torchrun starts one worker per process
            cmd = [*dist.torchrun(), *cmd[2:]]
        try:
            if foreground:
                with open(paths.log, "ab") as log:
                    proc = subprocess.Popen(cmd, cwd=str(self.home), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
            else:
                proc = launcher.spawn_detached(cmd, log_path=paths.log, cwd=self.home)
        except OSError as exc:
            lock_path(rec.path).unlink(missing_ok=True)
            self.runs.write_state(run_id, {**state, "status": "failed",
                                           "error": f"could not start the worker: {exc}"})
            raise UsageError(f"could not start the training process: {exc}") from None
        if not foreground:
            self._children.append(proc)
        return Launch(run_id, proc.pid, rec.name, rec.id, foreground, proc, notes,
                      init["checkpoint"] if init else None)

    def _base_config(self, req: TrainRequest) -> RunConfig:
        return load_config(config_file=req.config_file, preset=req.preset,
                           overrides=req.overrides, home=self.home)

    def _file_values(self, req: TrainRequest) -> dict[str, Any]:
        """Values from an explicitly given --config/--preset, flattened (for continuing)."""
        if not (req.config_file or req.preset):
            return {}
        path = Path(req.config_file) if req.config_file else preset_path(req.preset, self.home)
        data = load_yaml(path)
        return {f"{s}.{k}": v for s, sec in (data or {}).items() if isinstance(sec, dict)
                for k, v in sec.items()}

    def _dataset_explicit(self, req: TrainRequest) -> bool:
        """Did the user name the dataset (a flag, --set, or their own --config file)? Presets
        only carry the default, which may fall back to the built-in corpus when offline."""
        if "data.dataset" in req.overrides:
            return True
        return bool(req.config_file) and "data.dataset" in self._file_values(req)

    @staticmethod
    def _arch_changes(ckpt_cfg: dict[str, Any], cfg: RunConfig) -> list[str]:
        old = ckpt_cfg.get("model", {})
        return [f"{k}: checkpoint {old.get(k)!r}, requested {getattr(cfg.model, k)!r}"
                for k in ARCH_KEYS if k in old and old.get(k) != getattr(cfg.model, k)]

    def _checkpoint_config(self, info: CheckpointInfo) -> dict[str, Any]:
        data = read_json(info.path / "config.json")
        if not data or "config" not in data:
            raise NotFoundError(f"checkpoint {info.path} has no readable config.json")
        return data["config"]

    def _checkpoint_at(self, path_text: str) -> CheckpointInfo:
        path = Path(path_text).expanduser()
        if not path.is_dir():
            raise NotFoundError(f"checkpoint {path_text!r} not found",
                                hint="use latest, best, a step number, or a checkpoint folder")
        info = inspect_checkpoint(path)
        if not info.valid:
            raise NotFoundError(f"checkpoint {info.problem}",
                                hint="use another checkpoint: latest, best or a step")
        return info

    def train(self, req: TrainRequest) -> Launch:
        notes: list[str] = []
        if req.model:
            return self._continue_model(req, notes)
        if req.data_from:
            raise UsageError("--data-from needs --model: it trains an existing model on "
                             "another model's dataset",
                             hint="e.g. llm-trainer train --model A --data-from B")
        cfg = self._base_config(req)
        if req.name is not None:
            validate_name(req.name)
        check_dataset_spec(cfg.data.dataset)
        dist = req.dist.check() if req.dist else None
        rec = self.models.create(req.name, default_base=_default_base(cfg, req))
        try:
            return self._spawn(rec, cfg, kind="train", init=None,
                               dataset_explicit=self._dataset_explicit(req),
                               foreground=req.foreground, command=req.command,
                               created_model=True, notes=notes, dist=dist)
        except BaseException:
            self.models.delete(rec.name)
            raise

    def _continue_model(self, req: TrainRequest, notes: list[str]) -> Launch:
        if req.name:
            raise UsageError("--name names a new model; with --model the existing model keeps "
                             "its name", hint="rename it with `llm-trainer models rename`")
        rec = self.models.get(req.model)
        self.require_idle(rec, "train")
        info = self.checkpoint_of(rec, "latest", notes)
        ckpt_cfg = self._checkpoint_config(info)
        overrides = {**self._file_values(req), **req.overrides}
        if req.data_from:
            if "data.dataset" in req.overrides:
                raise UsageError("use either --dataset or --data-from, not both")
            other = self.models.get(req.data_from)
            other_cfg = self._checkpoint_config(self.checkpoint_of(other, "latest", notes))
            overrides.update({"data.dataset": other_cfg["data"]["dataset"],
                              "data.text_column": other_cfg["data"].get("text_column"),
                              "data.val_fraction": other_cfg["data"]["val_fraction"]})
        # keep the model's own tokenizer; a fresh schedule over the requested epochs
        overrides.pop("data.tokenizer", None)
        if "data.dataset" in overrides:
            check_dataset_spec(str(overrides["data.dataset"]))
        cfg = apply_overrides(RunConfig.from_dict(ckpt_cfg, source=str(info.path)), overrides,
                              source="option")
        if "train.epochs" in req.overrides and "train.max_steps" not in req.overrides:
            cfg = cfg.replace(**{"train.max_steps": None})
        changes = self._arch_changes(ckpt_cfg, cfg)
        if changes:
            raise UsageError(f"model {rec.name} has a different architecture: "
                             f"{'; '.join(changes)}",
                             hint="drop the model.* options, or train a new model with --name")
        init = {"checkpoint": str(info.path), "mode": "continue", "more_epochs": None,
                "restart_schedule": False, "data_from": req.data_from}
        return self._spawn(rec, cfg, kind="continue", init=init,
                           dataset_explicit=True, foreground=req.foreground,
                           command=req.command, created_model=False, notes=notes,
                           dist=req.dist.check() if req.dist else None)

    def resume(self, target: str | None, *, checkpoint: str = "latest",
               more_epochs: int | None = None, restart_schedule: bool = False,
               overrides: dict[str, Any] | None = None, foreground: bool = False,
               command: list[str] | None = None, dist: DistLaunch | None = None) -> Launch:
        notes: list[str] = []
        dist = dist.check() if dist else None
        rec = self._resume_target(target)
        self.require_idle(rec, "resume")
        if more_epochs is not None and more_epochs < 1:
            raise UsageError(f"--more-epochs must be 1 or more (got {more_epochs})")
        info = self.checkpoint_of(rec, checkpoint, notes)
        ckpt_cfg = self._checkpoint_config(info)
        cfg = apply_overrides(RunConfig.from_dict(ckpt_cfg, source=str(info.path)),
                              dict(overrides or {}), source="option")
        changes = self._arch_changes(ckpt_cfg, cfg)
        if changes:
            raise UsageError(f"checkpoint {info.path.name} of {rec.name} has a different "
                             f"architecture: {'; '.join(changes)}",
                             hint="resume with the model's own settings (drop model.* options)")
        finished = plan_finished(read_json(info.path / "trainer.json") or {})
        if more_epochs is None and finished:
            raise UsageError(
                f"model {rec.name} already {finished} at {info.path.name}",
                hint=f"train further with `llm-trainer resume {rec.name} --more-epochs N`")
        init = {"checkpoint": str(info.path), "mode": "resume", "more_epochs": more_epochs,
                "restart_schedule": restart_schedule}
        return self._spawn(rec, cfg, kind="resume", init=init, dataset_explicit=True,
                           foreground=foreground, command=command or list(sys.argv),
                           created_model=False, notes=notes, dist=dist)

    def _resume_target(self, target: str | None) -> ModelRecord:
        if target is None:
            return self.resolve_model(None)
        if self.models.exists(target):
            return self.models.get(target)
        try:
            run_id = self.runs.require(target)
        except NotFoundError:
            close = difflib.get_close_matches(
                target, self.models.names() + self.runs.run_ids()[:200], n=3, cutoff=0.5)
            raise NotFoundError(f"no model or run named {target!r}",
                                hint=(f"did you mean: {', '.join(close)}?" if close else
                                      "see `llm-trainer models list` and `llm-trainer status`")
                                ) from None
        model_id = self.runs.read_meta(run_id).get("model", {}).get("id")
        rec = self.models.find_by_id(model_id) if model_id else None
        if rec is None:
            raise NotFoundError(f"the model of run {run_id} no longer exists")
        return rec

    def stop(self, run_id: str, *, now: bool = False, wait: bool = True,
             timeout: float = 300.0) -> dict[str, Any]:
        """Ask a run to pause (SIGTERM: it checkpoints and exits) or kill it (``now``)."""
        run_id = self.runs.require(run_id)
        view = self.run_view(run_id)
        if view["status"] not in ACTIVE:
            return {"run_id": run_id, "was_running": False, "status": view["status"]}
        state = self.runs.read_state(run_id)
        pid, ctime = state.get("pid"), state.get("create_time")
        if not pid:
            raise BusyError(f"run {run_id} is still starting", hint="try again in a moment")
        if now:
            agent, agent_ctime = state.get("agent_pid"), state.get("agent_create_time")
            if agent and launcher.process_alive(agent, agent_ctime):
                launcher.kill_now(agent, agent_ctime)  # torchrun and every rank with it
            launcher.kill_now(pid, ctime)
            launcher.wait_until_dead(pid, ctime, 10.0)
            state.pop("schema_version", None)
            self.runs.write_state(run_id, {**state, "status": "stopped", "ended_at": time.time(),
                                           "error": "killed without a checkpoint (--now)",
                                           "eta_seconds": None, "finish_at": None},
                                  durable=True)
            rec = self.models.find_by_id(view["model_id"]) if view["model_id"] else None
            if rec is not None and lock_holder(rec.path) == run_id:
                lock_path(rec.path).unlink(missing_ok=True)
            return {"run_id": run_id, "was_running": True, "status": "stopped"}
        launcher.request_stop(pid, ctime)
        if wait:
            launcher.wait_until_dead(pid, ctime, timeout)
        return {"run_id": run_id, "was_running": True,
                "status": self.run_view(run_id)["status"]}

    def follow(self, run_id: str, *, poll: float = 0.2,
               process: subprocess.Popen | None = None) -> RunFollower:
        """The events of a run until it ends (see ``RunFollower``)."""
        return RunFollower(self, run_id, poll=poll, process=process)

    # =================================================================== models
    def model_status(self, rec: ModelRecord, training_run: str | None = None
                     ) -> tuple[str, str | None]:
        """ready | training | corrupted | archived | new, and a reason for corrupted.
        ``training_run``: the caller's ``training_run_of(rec)``, to avoid asking twice."""
        if training_run or (training_run is None and self.training_run_of(rec)):
            return "training", None
        if rec.archived:
            return "archived", None
        ckpts = list_checkpoints(rec.path)
        if not ckpts:
            return "new", None
        newest = ckpts[-1]
        key = (str(newest.path), newest.created_at, _mtime_ns(newest.path / "model.safetensors"))
        checked = self._verified.get(key)
        if checked is None:
            checked = inspect_checkpoint(newest.path, verify=True)
            self._verified[key] = checked
        if not checked.valid:
            return "corrupted", checked.problem
        return "ready", None

    def model_view(self, rec: ModelRecord) -> dict[str, Any]:
        training_run = self.training_run_of(rec) or ""
        status, problem = self.model_status(rec, training_run)
        data = rec.to_json()
        data.update({"status": status, "problem": problem, "disk_bytes": rec.disk_bytes(),
                     "path": str(rec.path), "training_run": training_run or None})
        return data

    def list_models(self, *, include_archived: bool = False) -> list[dict[str, Any]]:
        return [self.model_view(m) for m in self.models.list(include_archived=include_archived)]

    def rename_model(self, old: str, new: str) -> ModelRecord:
        rec = self.models.get(old)
        self.require_idle(rec, "rename")
        return self.models.rename(old, new)

    def archive_model(self, name: str, archived: bool = True) -> ModelRecord:
        rec = self.models.get(name)
        self.require_idle(rec, "archive" if archived else "unarchive")
        return self.models.set_archived(name, archived)

    def delete_model(self, name: str) -> Path:
        rec = self.models.get(name)
        self.require_idle(rec, "delete")
        return self.models.delete(name)

    def activate_model(self, name: str) -> ModelRecord:
        rec = self.models.get(name)
        if rec.archived:
            raise UsageError(f"model {name} is archived",
                             hint=f"unarchive it first: `llm-trainer models unarchive {name}`")
        return self.models.set_active(name)

    def export_model(self, name: str | None, out: str, fmt: str, *, checkpoint: str = "latest",
                     overwrite: bool = False) -> tuple[Path, CheckpointInfo, list[str]]:
        from llm_trainer.inference.export import export
        from llm_trainer.training.checkpoint import read_checkpoint

        notes: list[str] = []
        info = self.checkpoint_of(self.resolve_model(name), checkpoint, notes)
        return export(read_checkpoint(info.path), Path(out), fmt, overwrite=overwrite), info, \
            notes

    def generator(self, model: str | None = None, checkpoint: str | None = None,
                  device: str = "auto"):
        """A TextGenerator for a model's checkpoint (imports torch), and notes for the user."""
        from llm_trainer.inference.generate import TextGenerator
        from llm_trainer.training.device import probe_devices, select_device

        notes: list[str] = []
        if checkpoint and not model and _is_path(checkpoint):
            info = self._checkpoint_at(checkpoint)
        else:
            info = self.checkpoint_of(self.resolve_model(model), checkpoint or "latest", notes)
        choice = select_device(device, probe_devices())
        if choice.warning:
            notes.append(f"warning: {choice.warning}")
        return TextGenerator.from_checkpoint(info.path, choice.device), info, notes


def _is_path(which: str) -> bool:
    return which not in ("latest", "best") and not which.removeprefix("step-").isdigit()


def _default_base(cfg: RunConfig, req: TrainRequest) -> str:
    """``wikitext-2-default``, ``tinyshakespeare-shakespeare-char``..."""
    ds = cfg.data.dataset
    ds = Path(ds).stem if (os.sep in ds or Path(ds).suffix) else ds.removeprefix("hf:")
    return f"{slug(ds, 24)}-{req.preset or ('custom' if req.config_file else 'default')}"


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class RunFollower:
    """Events of a run until it ends: ("log", line), ("state", view), ("end", view).

    Iterate it again after an interruption (Ctrl-C lands in the middle of a poll) and it goes
    on where it stopped: no log line is shown twice."""

    def __init__(self, service: Service, run_id: str, *, poll: float = 0.2,
                 process: subprocess.Popen | None = None) -> None:
        self.service, self.run_id, self.poll, self.process = service, run_id, poll, process
        self.offset = 0
        self.last_state: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        svc, process = self.service, self.process
        path = svc.runs.paths(self.run_id).log
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
            view = svc.run_view(self.run_id)
            if view != self.last_state:
                self.last_state = view
                yield "state", view
            ended = view["status"] not in ACTIVE
            if ended and (process is None or not alive):
                yield "end", view
                return
            if process is not None and not alive and not ended:
                time.sleep(self.poll)
                yield "end", svc.run_view(self.run_id)
                return
            time.sleep(self.poll)
