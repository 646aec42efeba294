"""The launch planner: what a `train`, `train --model` (continue) or `resume` request means,
decided before anything is written or started. It returns a ``LaunchPlan``; process control
carries it out. One pipeline for the three: a base config (a preset / file, or a checkpoint's
config), the user's overrides with the rules that go with them, the checks. No torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from llm_trainer.app.admin import ModelAdmin
from llm_trainer.app.options import LaunchOptions, launch_overrides, parse_lora
from llm_trainer.config import (
    RunConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    load_yaml,
    preset_path,
)
from llm_trainer.data.spec import BUILTIN_PYDOCS, DatasetKind, DatasetSpec, check_dataset_spec
from llm_trainer.errors import NotFoundError, UsageError
from llm_trainer.launcher import DistLaunch
from llm_trainer.profiles import Profile, load_profile
from llm_trainer.store.atomic import read_json
from llm_trainer.store.checkpoints import CheckpointInfo, plan_finished
from llm_trainer.store.models import ModelRecord, slug, validate_name
from llm_trainer.store.records import InitFrom, InitMode, RunKind
from llm_trainer.store.runs import RunStore
from llm_trainer.views import BatchChoiceView, ProfileValueView, ProfileView


@dataclass
class TrainRequest:
    options: LaunchOptions = field(default_factory=LaunchOptions)  # the user's options
    sets: dict[str, Any] = field(default_factory=dict)  # --set section.key=value, as typed
    config_file: str | None = None
    preset: str | None = None
    profile: str | None = None  # --profile: a use-case overlay (configs/profiles/NAME.yaml)
    name: str | None = None  # name of a new model
    model: str | None = None  # continue this existing model instead
    data_from: str | None = None  # train on the dataset model B was trained on
    init_from: str | None = None  # hf:FOLDER: a new model from a Hugging Face folder
    foreground: bool = False
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    dist: DistLaunch | None = None
    auto_batch: bool = False  # --batch-size auto: the largest micro-batch that fits
    final_sample: int = 0  # with foreground: tokens the worker samples when the run completes
    standby: Any = None  # with foreground: a launcher.StandbyWorker started ahead, to use

    @cached_property
    def overrides(self) -> dict[str, Any]:
        """The config values the user set: the options, then ``--set`` (it wins); worked
        out once (the request is not changed after it is made)."""
        return launch_overrides(self.options, self.sets)


@dataclass
class LaunchPlan:
    """Everything process control needs to start a run."""

    kind: RunKind
    config: RunConfig
    model: ModelRecord | None  # the existing model it trains (None: a new one)
    new_model_name: str | None  # for a new model: its name (None: generated from the base)
    new_model_base: str  # the base of a generated name
    init: InitFrom | None  # the checkpoint it starts from, and how
    dataset_explicit: bool
    foreground: bool
    command: list[str]
    dist: DistLaunch | None
    notes: list[str] = field(default_factory=list)
    batch_choice: BatchChoiceView | None = None  # set when --batch-size auto chose one
    final_sample: int = 0  # foreground: the worker's sample at the end (FINAL_SAMPLE_ENV)
    standby: Any = None  # foreground: the worker started ahead (launcher.StandbyWorker)
    profile: ProfileView | None = None  # --profile: its values, reasons and what overrode them

    def __post_init__(self) -> None:
        """A plan exists only with its loggers' packages (a dry run is refused too)."""
        from llm_trainer.training.loggers import require_loggers

        require_loggers(self.config.runtime)


# peak learning rates when fine-tuning an imported model and --lr is not given: pretrained
# weights want far smaller steps than training from scratch (1e-3 here); adapters start at
# zero and take larger ones
FINETUNE_LR = 5e-5
LORA_LR = 2e-4


def user_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The rules that come with the user's options: an explicit ``train.epochs`` without
    ``train.max_steps`` clears a preset's or checkpoint's ``max_steps`` (epochs asked for win)."""
    return TrainConfig.epochs_clear_max_steps(
        {k: v for k, v in overrides.items() if v is not None})


def _arch_value(value: Any) -> str:
    """A model.* value in a refusal: an option left unset (its default) says so."""
    return "unset" if value is None else repr(value)


def check_optimizer(cfg: RunConfig) -> None:
    """Muon trains full block matrices; LoRA adapters stay with AdamW."""
    from llm_trainer.training.optim import lora_refusal  # no torch at import

    if cfg.train.optimizer == "muon" and cfg.finetune.lora_r:
        raise UsageError(lora_refusal())


class LaunchPlanner:
    def __init__(self, home: Path, runs: RunStore, admin: ModelAdmin) -> None:
        self.home, self.runs, self.admin = home, runs, admin

    # ------------------------------------------------------------------ requests
    def plan_train(self, req: TrainRequest) -> LaunchPlan:
        """A new model, or (with ``req.model``) an existing one continued on new data."""
        notes: list[str] = []
        dist = req.dist.check() if req.dist else None
        if req.profile is not None:
            load_profile(req.profile, self.home)  # an unknown name first: it is the typo
            if not req.init_from:
                raise UsageError(f"--profile {req.profile} sets up a fine-tune (LoRA adapters, "
                                 "their learning rate): it needs --init-from, the weights to "
                                 "start from", hint=f"e.g. llm-trainer train --init-from "
                                 f"hf:FOLDER --profile {req.profile} --dataset chats.jsonl")
        if req.init_from:
            return self._plan_import(req, notes, dist)
        if req.model:
            return self._plan_continue(req, notes, dist)
        if req.data_from:
            raise UsageError("--data-from needs --model: it trains an existing model on "
                             "another model's dataset",
                             hint="e.g. llm-trainer train --model A --data-from B")
        overrides = user_overrides(req.overrides)
        if req.auto_batch and "train.batch_size" in overrides:
            raise UsageError("--batch-size auto chooses the micro-batch: do not also set "
                             "train.batch_size")
        cfg = load_config(config_file=req.config_file, preset=req.preset, overrides=overrides,
                          home=self.home)
        if req.name is not None:
            validate_name(req.name)
        cfg = self._local_paths_absolute(cfg)
        if cfg.finetune.lora_r or cfg.finetune.freeze_layers:
            raise UsageError("LoRA and frozen layers fine-tune a pretrained model: they need "
                             "--init-from", hint="e.g. llm-trainer train --init-from "
                                                 "hf:FOLDER --lora r=8 --dataset my.txt")
        explicit = self._dataset_explicit(req)
        if not explicit:
            cfg = self._default_dataset(cfg, notes)
        return LaunchPlan(RunKind.TRAIN, cfg, None, req.name, _default_base(cfg, req), None,
                          explicit, req.foreground, req.command, dist, notes)

    def _default_dataset(self, cfg: RunConfig, notes: list[str]) -> RunConfig:
        """A run that names no dataset trains on the built-in corpus when WikiText-2 cannot
        be had. Decided here, before the new model is named, so that the model is named
        after what it trains on (``python-docs-default-1``, not ``wikitext-2-default-1``);
        the worker then loads that corpus without asking again."""
        from llm_trainer.data.sources import fallback_notice, wikitext_unavailable

        if DatasetSpec.parse(cfg.data.dataset).kind is not DatasetKind.WIKITEXT:
            return cfg
        why = wikitext_unavailable(self.home / "data")
        if why is None:
            return cfg
        notes.append(fallback_notice(why))
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                 dataset=BUILTIN_PYDOCS))

    def plan_resume(self, target: str | None, *, checkpoint: str = "latest",
                    more_epochs: int | None = None, or_more_epochs: int | None = None,
                    restart_schedule: bool = False, overrides: dict[str, Any] | None = None,
                    foreground: bool = False, command: list[str] | None = None,
                    dist: DistLaunch | None = None) -> LaunchPlan:
        """Continue exactly where a checkpoint stopped. ``or_more_epochs``: when its plan is
        already finished, train that many more epochs instead of refusing."""
        notes: list[str] = []
        dist = dist.check() if dist else None
        for value, flag in ((more_epochs, "--more-epochs"), (or_more_epochs, "epochs")):
            if value is not None and value < 1:
                raise UsageError(f"{flag} must be 1 or more (got {value})")
        rec = self._resume_target(target)
        self.admin.require_idle(rec, "resume")
        info = self.admin.checkpoint_of(rec, checkpoint, notes)
        cfg = self._from_checkpoint(rec, info, user_overrides(overrides or {}), what=(
            f"checkpoint {info.path.name} of {rec.name}"),
            hint="resume with the model's own settings (drop model.* options)", exact=True)
        finished = plan_finished(read_json(info.path / "trainer.json") or {})
        if finished and more_epochs is None:
            more_epochs = or_more_epochs
            if more_epochs is None:
                raise UsageError(
                    f"model {rec.name} already {finished} at {info.path.name}",
                    hint=f"train further with `llm-trainer resume {rec.name} --more-epochs N`")
        init = InitFrom(info.path, InitMode.RESUME, more_epochs=more_epochs,
                        restart_schedule=restart_schedule)
        return LaunchPlan(RunKind.RESUME, cfg, rec, None, rec.name, init, True, foreground,
                          command or list(sys.argv), dist, notes)

    # ------------------------------------------------------------------ pipeline parts
    def _plan_import(self, req: TrainRequest, notes: list[str],
                     dist: DistLaunch | None) -> LaunchPlan:
        """A new model whose weights, architecture and tokenizer come from a Hugging Face
        folder (GPT-2, or a Llama / Qwen3 that maps onto this GPT; ``model.hf_import``) or
        from a model of this home (its latest checkpoint) or a checkpoint folder; the preset
        or config file gives the training settings."""
        from llm_trainer.model.hf_import import arch_changes

        for given, flag in ((req.model, "--model"), (req.data_from, "--data-from")):
            if given:
                raise UsageError(f"--init-from starts a new model; {flag} trains an existing "
                                 "one: use one of them")
        src = self._init_source(req.init_from, notes)
        overrides = user_overrides(req.overrides)
        own_file = self._file_values(req) if req.config_file else {}
        changes = arch_changes(src, {**own_file, **overrides})
        if changes:
            raise UsageError(f"--init-from takes the architecture from {src.name}: "
                             f"{changes[0]}", hint="drop the model.* options (a shorter "
                                                   "--seq-len is allowed)")
        if "data.tokenizer" in overrides:
            raise UsageError("--init-from keeps the folder's tokenizer: drop data.tokenizer")
        profile = self._profile_for(req.profile, src) if req.profile else None
        arch = {f"model.{k}": v for k, v in src.arch.items()}
        shorter = {k: v for k, v in own_file.items() if k == "model.block_size"}
        if profile is not None and profile.get("model.block_size"):
            # the profile's context (cut to the model's) sits above the file's and the folder's
            arch.pop("model.block_size")
            shorter = {}
        forced = {**arch, **shorter, **overrides, "data.tokenizer": str(src.tokenizer),
                  "finetune.init_from": src.spec}
        cfg = load_config(config_file=req.config_file, preset=req.preset, overrides=forced,
                          home=self.home, profile=profile)
        # a preset's lr is meant for training from scratch; the user's own value (or the
        # profile's) wins
        if ("train.lr" not in overrides and "train.lr" not in own_file
                and not (profile and profile.get("train.lr"))):
            cfg = cfg.replace(**{"train.lr": LORA_LR if cfg.finetune.lora_r else FINETUNE_LR})
        check_optimizer(cfg)
        if cfg.finetune.lora_r:
            from llm_trainer.extras import require

            require("lora", option="--lora", load=False)  # planning imports no torch
        most = src.arch["n_layer"] - (1 if cfg.finetune.lora_r else 0)
        if cfg.finetune.freeze_layers > most:
            raise UsageError(f"--freeze-layers {cfg.finetune.freeze_layers}: {src.name} "
                             f"has {src.arch['n_layer']} blocks" + (
                                 "; with --lora at least one must keep its adapters"
                                 if cfg.finetune.lora_r else ""))
        if req.name is not None:
            validate_name(req.name)
        cfg = self._local_paths_absolute(cfg)
        base = f"{slug(src.name, 24)}-{'lora' if cfg.finetune.lora_r else 'ft'}"
        init = InitFrom(src.path, InitMode.IMPORT)
        view = profile_view(profile, cfg, req) if profile is not None else None
        if (profile is not None and profile.get("train.lr") and not cfg.finetune.lora_r
                and "train.lr" not in overrides):
            notes.append(f"profile {profile.name}'s learning rate {cfg.train.lr:g} is meant "
                         f"for LoRA adapters; a full fine-tune usually wants about "
                         f"{FINETUNE_LR:g} (--lr)")
        return LaunchPlan(RunKind.TRAIN, cfg, None, req.name, base, init,
                          self._dataset_explicit(req), req.foreground, req.command, dist, notes,
                          profile=view)

    def _profile_for(self, name: str, src) -> Profile:
        """The profile, its context cut to what the weights have positions for."""
        profile = load_profile(name, self.home)
        context = profile.get("model.block_size")
        if context is not None and context.value > src.n_positions:
            profile = profile.with_value(
                "model.block_size", src.n_positions,
                f"cut from {context.value} to the {src.n_positions} positions of {src.name}")
        return profile

    def _init_source(self, spec: str, notes: list[str]):
        """``--init-from``: ``hf:PATH`` or ``hf:OWNER/NAME[@REVISION]`` (downloaded from the
        Hub, or found in its cache: ``hub``), a checkpoint folder, or a model name (its latest
        usable checkpoint; a model being trained gives the newest one it has saved)."""
        from llm_trainer.hub import PREFIX, HubModel, download_model, parse_model_spec
        from llm_trainer.model.hf_import import check_before_weights, inspect_hf_folder
        from llm_trainer.store.checkpoints import MANIFEST, inspect_own_checkpoint

        if spec.startswith(PREFIX):
            where = parse_model_spec(spec)
            if isinstance(where, HubModel):  # the commit is recorded (not a warning)
                snap = download_model(where, check=check_before_weights)
                return inspect_hf_folder(f"{PREFIX}{snap.path}", hub=snap.pinned)
            return inspect_hf_folder(f"{PREFIX}{where}")
        path = Path(spec).expanduser()
        if (path / MANIFEST).is_file():
            info = self.admin.checkpoint_at(spec)
            return inspect_own_checkpoint(info.path, label=str(info.path.resolve()))
        if path.is_dir() and (path / "config.json").is_file():
            raise UsageError(f"--init-from {spec!r}: a Hugging Face folder is given as "
                             f"hf:{spec}", hint=f"--init-from hf:{spec}")
        if not self.admin.models.exists(spec):
            close = difflib.get_close_matches(spec, self.admin.models.names(), n=3)
            raise UsageError(f"--init-from {spec!r} is not a model of this home, a checkpoint "
                             "folder or hf:PATH to a Hugging Face folder",
                             hint=f"models like it: {', '.join(close)}" if close else
                             "e.g. --init-from my-model, or --init-from hf:~/models/distilgpt2")
        rec = self.admin.resolve_model(spec)
        info = self.admin.checkpoint_of(rec, "latest", notes)
        return inspect_own_checkpoint(info.path, label=f"{rec.name} ({info.path.name})")

    @staticmethod
    def _local_paths_absolute(cfg: RunConfig) -> RunConfig:
        """The dataset checked, and it and a tokenizer file as absolute paths: the training
        process runs in the home, not in the folder the command was given in."""
        from llm_trainer.data.spec import tokenizer_kind

        changes: dict[str, Any] = {"data.dataset": check_dataset_spec(cfg.data.dataset)}
        if tokenizer_kind(cfg.data.tokenizer) == "file":
            changes["data.tokenizer"] = str(Path(cfg.data.tokenizer).expanduser().resolve())
        return cfg.replace(**changes)

    def _plan_continue(self, req: TrainRequest, notes: list[str],
                       dist: DistLaunch | None) -> LaunchPlan:
        if req.name:
            raise UsageError("--name names a new model; with --model the existing model keeps "
                             "its name", hint="rename it with `llm-trainer models rename`")
        rec = self.admin.get(req.model)
        self.admin.require_idle(rec, "train")
        info = self.admin.checkpoint_of(rec, "latest", notes)
        overrides = user_overrides({**self._file_values(req), **req.overrides})
        if "train.epochs" in req.overrides and "train.max_steps" not in req.overrides:
            overrides["train.max_steps"] = None  # a file's max_steps loses to --epochs too
        if req.data_from:
            if "data.dataset" in req.overrides:
                raise UsageError("use either --dataset or --data-from, not both")
            other = self.admin.get(req.data_from)
            other_cfg = self.admin.checkpoint_config(self.admin.checkpoint_of(other, "latest",
                                                                              notes))
            spec = other_cfg["data"]["dataset"]
            recorded = Path(spec).expanduser()  # a local path recorded relative to the home
            if not recorded.is_absolute() and (self.home / recorded).exists():
                spec = str(self.home / recorded)
            overrides.update({"data.dataset": spec,
                              "data.text_column": other_cfg["data"].get("text_column"),
                              "data.val_fraction": other_cfg["data"]["val_fraction"]})
        overrides.pop("data.tokenizer", None)  # the model keeps its own tokenizer
        if "data.dataset" in overrides:
            overrides["data.dataset"] = check_dataset_spec(str(overrides["data.dataset"]))
        cfg = self._from_checkpoint(rec, info, overrides, what=f"model {rec.name}",
                                    hint="drop the model.* options, or train a new model "
                                         "with --name")
        init = InitFrom(info.path, InitMode.CONTINUE, data_from=req.data_from)
        return LaunchPlan(RunKind.CONTINUE, cfg, rec, None, rec.name, init, True, req.foreground,
                          req.command, dist, notes)

    def _from_checkpoint(self, rec: ModelRecord, info: CheckpointInfo,
                         overrides: dict[str, Any], *, what: str, hint: str,
                         exact: bool = False) -> RunConfig:
        """The checkpoint's config with ``overrides``; the architecture must not change."""
        ckpt_cfg = self.admin.checkpoint_config(info)
        saved = RunConfig.from_dict(ckpt_cfg, source=str(info.path))
        cfg = apply_overrides(saved, overrides, source="option")
        # a key the checkpoint's config lacks (older than the option) has its default
        old, new = saved.model.shape(0), cfg.model.shape(0)  # vocab: the checkpoint's, both
        changes = [f"{k}: checkpoint {_arch_value(getattr(old, k))}, requested "
                   f"{_arch_value(getattr(new, k))}" for k in old.changes(new, every_key=True)]
        # a LoRA model's adapters are part of its shape (rank, scale, targets); a resume
        # also keeps the frozen layers (the optimizer state holds the trainable ones)
        old_ft = {"lora_r": 0, "freeze_layers": 0, "lora_use_rslora": False,
                  "lora_use_dora": False, **ckpt_cfg.get("finetune", {})}
        keys = ["lora_r", *(("lora_alpha", "lora_targets", "lora_use_rslora", "lora_use_dora")
                            if old_ft["lora_r"] else ()),
                *(("freeze_layers",) if exact else ())]
        for k in keys:
            was, now = old_ft.get(k), getattr(cfg.finetune, k)
            same = set(was) == set(now) if k == "lora_targets" else was == now
            if not same:
                changes.append(f"finetune.{k}: checkpoint {was!r}, requested {now!r}")
        if changes:
            raise UsageError(f"{what} has a different architecture: {'; '.join(changes)}",
                             hint=hint)
        # the optimizer state of a resume belongs to one kind of optimizer
        was = ckpt_cfg.get("train", {}).get("optimizer", "adamw")
        if exact and cfg.train.optimizer != was:
            from llm_trainer.training.optim import resume_refusal

            raise UsageError(resume_refusal(what, was, cfg.train.optimizer),
                             hint="drop train.optimizer, or continue with a fresh optimizer: "
                                  f"llm-trainer train --model {rec.name}")
        check_optimizer(cfg)
        return cfg

    def _resume_target(self, target: str | None) -> ModelRecord:
        """A model name, a run id (its model), or the active / latest model."""
        models = self.admin.models
        if target is None:
            return self.admin.resolve_model(None)
        if models.exists(target):
            return models.get(target)
        try:
            run_id = self.runs.require(target)
        except NotFoundError:
            close = difflib.get_close_matches(
                target, models.names() + self.runs.run_ids()[:200], n=3, cutoff=0.5)
            raise NotFoundError(f"no model or run named {target!r}",
                                hint=(f"did you mean: {', '.join(close)}?" if close else
                                      "see `llm-trainer models list` and `llm-trainer status`")
                                ) from None
        model_id = self.runs.read_meta(run_id).model.get("id")
        rec = models.find_by_id(model_id) if model_id else None
        if rec is None:
            raise NotFoundError(f"the model of run {run_id} no longer exists")
        return rec

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


def profile_view(profile: Profile, cfg: RunConfig, req: TrainRequest) -> ProfileView:
    """The profile's values beside what the run uses; a value an option or ``--set`` changed
    names that option (an option given with the profile's own value overrides nothing)."""
    given: dict[str, str] = {}
    for opt, value in req.options.given():
        keys = parse_lora(value) if opt.name == "lora" else [opt.config_key]
        given.update(dict.fromkeys(keys, opt.flag))
    given.update(dict.fromkeys(req.sets, "--set"))
    rows = []
    for v in profile.values:
        used = cfg.get(v.key)
        same = set(used) == set(v.value) if isinstance(used, tuple) else used == v.value
        by = None if same else given.get(v.key, "--init-from")  # only the weights force keys
        rows.append(ProfileValueView(key=v.key, value=_plain(v.value), why=v.why,
                                     used=_plain(used), note=v.note, overridden_by=by))
    return ProfileView(name=profile.name, description=profile.description,
                       path=str(profile.path), values=rows)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _default_base(cfg: RunConfig, req: TrainRequest) -> str:
    """``wikitext-2-default``, ``python-docs-default``, ``tinyshakespeare-shakespeare-char``..."""
    ds = cfg.data.dataset
    ds = Path(ds).stem if (os.sep in ds or Path(ds).suffix) else \
        ds.removeprefix("hf:").removeprefix("builtin:")
    return f"{slug(ds, 24)}-{req.preset or ('custom' if req.config_file else 'default')}"
