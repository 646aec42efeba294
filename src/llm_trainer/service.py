"""The façade both front ends (CLI and TUI) call. No torch at import time.

It composes the application layer (``llm_trainer.app``): run queries, the launch planner,
process control and model administration, and returns typed views (``llm_trainer.views``).
Front ends parse and format; every rule lives behind this class.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llm_trainer.app.admin import ModelAdmin
from llm_trainer.app.chat import Chat
from llm_trainer.app.compare import RunComparison
from llm_trainer.app.control import Launch, ProcessControl, RunFollower
from llm_trainer.app.options import DataOptions, LaunchOptions, launch_overrides, parse_lora
from llm_trainer.app.planner import TrainRequest
from llm_trainer.app.queries import RunQueries
from llm_trainer.inference.settings import GenerationSettings
from llm_trainer.launcher import IN_PROCESS_ENV, DistLaunch
from llm_trainer.store.checkpoints import CheckpointInfo
from llm_trainer.store.models import ModelRecord, ModelStore
from llm_trainer.store.runs import RunStore
from llm_trainer.views import (
    CompareView,
    DatasetChoices,
    DryRunReport,
    EvalResult,
    ExportResult,
    LossCurve,
    ModelDetail,
    ModelView,
    PreparedData,
    PresetDefaults,
    ProfileDefaults,
    PushResult,
    RecentDataset,
    RerunCommand,
    RunDetail,
    RunView,
    StopResult,
    SystemView,
)

__all__ = ["DistLaunch", "Generation", "GenerationSettings", "Launch", "LaunchOptions",
           "Service", "TrainRequest", "parse_lora", "resolve_home"]


class Generation:
    """A model loaded to generate text: the checkpoint, the notes of loading it (a device
    fallback...), and the text it writes after a prompt, piece by piece."""

    def __init__(self, generator: Any, settings: GenerationSettings, checkpoint: CheckpointInfo,
                 notes: list[str]) -> None:
        self._generator, self.settings = generator, settings
        self.checkpoint, self.notes = checkpoint, notes

    def stream(self, prompt: str, *, on_note: Callable[[str], None] | None = None
               ) -> Iterator[str]:
        """The continuation of ``prompt``; ``on_note``: what to say about the prompt (a
        prompt longer than the context is cut)."""
        return self._generator.stream(prompt, self.settings, on_note=on_note)


def resolve_home(home: str | os.PathLike | None) -> Path:
    """``--home`` > ``LLM_TRAINER_HOME`` > the current folder."""
    return Path(home or os.environ.get("LLM_TRAINER_HOME") or ".").expanduser().resolve()




class Service:
    def __init__(self, home: str | os.PathLike | None = None, *,
                 in_process: bool | None = None) -> None:
        """``in_process``: a ``--foreground`` run on one process trains in this process
        (the same worker, no child: for a debugger, a profiler, or tests); default: the
        ``LLM_TRAINER_IN_PROCESS=1`` environment variable, else a child process."""
        from llm_trainer.app.planner import LaunchPlanner

        if in_process is None:
            in_process = os.environ.get(IN_PROCESS_ENV, "") == "1"
        self.home = resolve_home(home)
        runs, models = RunStore(self.home), ModelStore(self.home)
        self.queries = RunQueries(runs, models)
        self.admin = ModelAdmin(models, self.queries)
        self.planner = LaunchPlanner(self.home, runs, self.admin)
        self.control = ProcessControl(self.home, runs, models, self.queries,
                                      in_process=in_process)
        self.comparison = RunComparison(self.queries, self.home)
        self._telemetry = None

    # ================================================================== runs
    def require_run(self, run_id: str) -> str:
        """The run id if it exists (NotFoundError with the closest ids otherwise)."""
        return self.queries.require_run(run_id)

    def list_runs(self, *, active_only: bool = False,
                  include_continued: bool = False) -> list[RunView]:
        """Running first, then newest first; runs that a resume continued only with
        ``include_continued``."""
        self.control.reap()
        return self.queries.list_runs(active_only=active_only,
                                      include_continued=include_continued)

    def run_view(self, run_id: str) -> RunView:
        return self.queries.run_view(run_id)

    def run_detail(self, run_id: str, log_lines: int = 10) -> RunDetail:
        return self.queries.run_detail(run_id, log_lines)

    def metrics(self, run_id: str, tail: int | None = None) -> list[dict[str, Any]]:
        return self.queries.metrics(run_id, tail)

    def loss_curve(self, run_id: str) -> LossCurve:
        """Train and val loss by step, for plots."""
        return self.queries.loss_curve(run_id)

    def compare(self, targets: list[str]) -> CompareView:
        """2-8 runs (a model name: its latest run): differing config keys, results, best."""
        return self.comparison.compare(targets)

    def rerun_command(self, target: str) -> RerunCommand:
        """The `llm-trainer train ...` command that reproduces a run's config."""
        return self.comparison.rerun_command(target)

    def system_snapshot(self, runs: list[RunView] | None = None) -> SystemView:
        """Host telemetry plus the time until every active run is done (None: no active run;
        runs train side by side, so that is the longest remaining time, not a sum)."""
        from llm_trainer.telemetry import Telemetry

        if self._telemetry is None:
            self._telemetry = Telemetry()
        views = runs if runs is not None else self.list_runs(active_only=True)
        active = [v for v in views if v.active]
        etas = [v.eta_seconds for v in active if v.eta_seconds is not None]
        return SystemView(telemetry=self._telemetry.sample(), active_runs=len(active),
                          remaining_s=max(etas) if etas else None)

    # ================================================================== training
    def train(self, req: TrainRequest) -> Launch:
        """A new model, or ``req.model`` continued (new data, fresh optimizer)."""
        plan = self.planner.plan_train(req)
        if req.auto_batch or plan.config.train.auto_batch:
            plan = self._auto_batch(plan)
        plan.final_sample, plan.standby = req.final_sample, req.standby
        return self.control.start(plan)

    def estimate(self, req: TrainRequest, *, timed_steps: int | None = None
                 ) -> DryRunReport:
        """What ``train(req)`` would do, resolved without training or writing a run or
        checkpoint: config, data, model, steps, memory and (``timed_steps`` > 0, default 5
        after 2 warm-up steps) the time, measured on this machine. Imports torch."""
        plan = self.planner.plan_train(req)
        return self._estimate(plan, timed_steps,
                              auto_batch=req.auto_batch or plan.config.train.auto_batch)

    def estimate_resume(self, target: str | None, *, timed_steps: int | None = None,
                        **kwargs: Any) -> DryRunReport:
        """``estimate`` for ``resume(target, **kwargs)``."""
        return self._estimate(self._plan_resume(target, **kwargs), timed_steps,
                              auto_batch=False)

    def _plan_resume(self, target: str | None, *, options: LaunchOptions | None = None,
                     sets: dict[str, Any] | None = None, **kwargs: Any):
        return self.planner.plan_resume(
            target, overrides=launch_overrides(options or LaunchOptions(), sets), **kwargs)

    def _estimate(self, plan, timed_steps: int | None, *, auto_batch: bool) -> DryRunReport:
        from llm_trainer.training.estimate import TIMED_STEPS, estimate_run

        timed = TIMED_STEPS if timed_steps is None else timed_steps
        out = estimate_run(self._job_of(plan), timed=timed, auto_batch=auto_batch)
        name = plan.model.name if plan.model is not None else plan.new_model_name
        notes = list(plan.notes)
        if plan.dist is not None and plan.dist.enabled:
            notes.append("estimated for one process on this machine: with several, the "
                         "global batch, steps per epoch and time per step differ")
        return dataclasses.replace(out, kind=str(plan.kind), model=name, notes=notes,
                                   profile=plan.profile)

    def _job_of(self, plan):
        """The ``TrainingJob`` a launch plan would give the worker, for measuring it (no run
        record; the estimator points ``model_dir`` at a temporary folder)."""
        from llm_trainer.training.parts import TrainingJob

        return TrainingJob(config=plan.config, home=self.home, model_dir=self.home,
                           run_id="estimate", init=plan.init,
                           dataset_explicit=plan.dataset_explicit)

    def _auto_batch(self, plan):
        """--batch-size auto (train.auto_batch): measure, then train with the chosen
        micro-batch and a raised accumulation (same global batch); the choice goes into the
        run's meta.json and its config keeps the numbers (a resume does not measure again)."""
        from llm_trainer.training.estimate import choose_batch_for

        choice = choose_batch_for(self._job_of(plan))
        plan.config = plan.config.replace(**{"train.batch_size": choice.batch_size,
                                             "train.grad_accum": choice.grad_accum,
                                             "train.auto_batch": False})
        plan.batch_choice = choice
        return plan

    def resume(self, target: str | None, *, checkpoint: str = "latest",
               more_epochs: int | None = None, or_more_epochs: int | None = None,
               restart_schedule: bool = False, options: LaunchOptions | None = None,
               sets: dict[str, Any] | None = None, foreground: bool = False,
               command: list[str] | None = None, dist: DistLaunch | None = None,
               final_sample: int = 0, standby: Any = None) -> Launch:
        """Continue exactly where a checkpoint stopped (``more_epochs``: N beyond it;
        ``or_more_epochs``: N more only if its plan is already finished). ``options``: the
        launch options given (device, precision...), then ``sets`` (--set).
        ``final_sample``, ``standby``: as in ``TrainRequest``."""
        plan = self._plan_resume(
            target, checkpoint=checkpoint, more_epochs=more_epochs,
            or_more_epochs=or_more_epochs, restart_schedule=restart_schedule, options=options,
            sets=sets, foreground=foreground, command=command, dist=dist)
        plan.final_sample, plan.standby = final_sample, standby
        return self.control.start(plan)

    def presets(self) -> list[str]:
        """The built-in presets and this home's own, by name."""
        from llm_trainer.config import list_presets

        return list_presets(self.home)

    def preset_defaults(self, preset: str) -> PresetDefaults:
        """The dataset, batch size and context a preset trains with (ConfigError if its
        file is wrong)."""
        from llm_trainer.config import load_config

        cfg = load_config(preset=preset, home=self.home)
        return PresetDefaults(preset=preset, dataset=cfg.data.dataset,
                              batch_size=cfg.train.batch_size, seq_len=cfg.model.block_size)

    def profiles(self) -> list[str]:
        """The use-case profiles (`train --profile`), the home's own included, by name."""
        from llm_trainer.profiles import list_profiles

        return list_profiles(self.home)

    def profile_defaults(self, profile: str) -> ProfileDefaults:
        """What a profile is for, and its epochs and context (the train panel's fields)."""
        from llm_trainer.profiles import load_profile

        prof = load_profile(profile, self.home)
        epochs, context = prof.get("train.epochs"), prof.get("model.block_size")
        return ProfileDefaults(name=prof.name, description=prof.description,
                               epochs=epochs.value if epochs else None,
                               seq_len=context.value if context else None)

    def panel_request(self, options: LaunchOptions, *, preset: str, model: str | None = None,
                      name: str | None = None, init_from: str | None = None,
                      profile: str | None = None,
                      command: list[str] | None = None) -> TrainRequest:
        """The request of the dashboard's train panel: `llm-trainer train` with the same
        options. Its Dataset field starts as the preset's, so the dataset counts as named
        (and is not replaced by the built-in corpus when it cannot be fetched) only when it
        differs from the preset's, or when it trains an existing model (which takes no
        preset and keeps its architecture: no --seq-len). A profile fills the Epochs and Seq
        len fields with its own values: left so, they are the profile's, not options over it
        (its context is then cut to the model's, as on the command line)."""
        if model is not None:
            options = options.replace(seq_len=None)
        elif options.dataset == self.preset_defaults(preset).dataset:
            options = options.replace(dataset=None)
        if profile is not None:
            own = self.profile_defaults(profile)
            if own.epochs is not None and options.epochs == own.epochs:
                options = options.replace(epochs=None)
            if own.seq_len is not None and options.seq_len == own.seq_len:
                options = options.replace(seq_len=None)
        return TrainRequest(options=options, preset=None if model else preset, name=name,
                            model=model, init_from=init_from, profile=profile,
                            command=command or ["llm-trainer", "tui"])

    def stop(self, run_id: str, *, now: bool = False, wait: bool = True,
             timeout: float = 300.0, on_asked: Callable[[str], None] | None = None
             ) -> StopResult:
        """Pause (or with ``now`` kill) a running run; ``on_asked(run_id)`` once a pause was
        asked for, before the wait (a run that is not running is asked nothing)."""
        return self.control.stop(run_id, now=now, wait=wait, timeout=timeout,
                                 on_asked=on_asked)

    # ------------------------------------------------------------------ data
    def inspect_data(self, spec: str | None, *, preset: str | None = None,
                     config_file: str | None = None, tokenizer: str | None = None,
                     vocab_size: int | None = None, seq_len: int | None = None,
                     text_column: str | None = None, sets: dict[str, Any] | None = None,
                     full: bool = False, sample_bytes: int | None = None,
                     init_from: str | None = None):
        """A DataReport of ``spec`` (default: the config's dataset), read with the settings
        training would use: the preset or file, the options given, then ``sets`` (--set).
        A split larger than ``sample_bytes`` (default: data.inspect.SAMPLE_BYTES) is
        sampled unless ``full``. ``init_from`` (hf:FOLDER): the tokenizer and chat template
        of a model imported from that folder."""
        from llm_trainer.data.inspect import SAMPLE_BYTES, inspect_dataset

        cfg, folder = self._inspect_config(spec, preset, config_file, tokenizer, vocab_size,
                                           seq_len, text_column, sets, init_from)
        d = cfg.data
        return inspect_dataset(d.dataset, tokenizer=d.tokenizer, vocab_size=d.vocab_size,
                               val_fraction=d.val_fraction, text_column=d.text_column,
                               seq_len=cfg.model.block_size, data_dir=self.home / "data",
                               full=full, sample_bytes=sample_bytes or SAMPLE_BYTES,
                               data_format=d.format, loss_on=cfg.train.loss_on,
                               on_bad_rows=d.on_bad_rows, truncate=d.truncate,
                               model_folder=folder)

    def template_examples(self, spec: str | None, n: int, *, preset: str | None = None,
                          config_file: str | None = None, tokenizer: str | None = None,
                          vocab_size: int | None = None, text_column: str | None = None,
                          sets: dict[str, Any] | None = None, sample_bytes: int | None = None,
                          init_from: str | None = None):
        """The first ``n`` conversations of chat data ``spec`` as training renders them, the
        trained text marked (``data inspect --show-template``; a TemplateView)."""
        from llm_trainer.data.inspect import SAMPLE_BYTES, template_examples

        cfg, folder = self._inspect_config(spec, preset, config_file, tokenizer, vocab_size,
                                           None, text_column, sets, init_from)
        d = cfg.data
        return template_examples(d.dataset, n, tokenizer=d.tokenizer, vocab_size=d.vocab_size,
                                 val_fraction=d.val_fraction, text_column=d.text_column,
                                 data_dir=self.home / "data", data_format=d.format,
                                 loss_on=cfg.train.loss_on,
                                 sample_bytes=sample_bytes or SAMPLE_BYTES,
                                 model_folder=folder)

    def _inspect_config(self, spec, preset, config_file, tokenizer, vocab_size, seq_len,
                        text_column, sets, init_from=None):
        """The config ``data inspect`` reads with, and the Hugging Face folder ``init_from``
        names (None without it): its tokenizer.json replaces data.tokenizer, as
        ``train --init-from`` does."""
        from llm_trainer.config import load_config
        from llm_trainer.errors import UsageError

        folder = None
        if init_from is not None:
            if not init_from.startswith("hf:"):
                raise UsageError(f"data inspect --init-from takes hf:FOLDER or hf:OWNER/NAME "
                                 f"(got {init_from!r})",
                                 hint="a Hugging Face model folder: its tokenizer and chat "
                                      "template are what training would use")
            if tokenizer is not None:
                raise UsageError("--init-from uses the folder's tokenizer: drop --tokenizer")
            from llm_trainer.hub import HubModel, download_model, parse_model_spec

            folder = parse_model_spec(init_from)
            if isinstance(folder, HubModel):  # a Hub id: its snapshot, as train would take
                folder = download_model(folder).path
            if not (folder / "tokenizer.json").is_file():
                raise UsageError(f"--init-from: {folder} has no tokenizer.json",
                                 hint="save the fast tokenizer too: "
                                      "tokenizer.save_pretrained(FOLDER)")
            tokenizer = str(folder / "tokenizer.json")
        given = {"data.tokenizer": tokenizer, "data.vocab_size": vocab_size,
                 "model.block_size": seq_len, "data.text_column": text_column}
        values = {k: v for k, v in {**given, **(sets or {})}.items() if v is not None}
        if spec is not None:
            values["data.dataset"] = spec
        return load_config(config_file=config_file, preset=preset, overrides=values,
                           home=self.home), folder

    def prepare_data(self, spec: str, *, preset: str | None = None,
                     config_file: str | None = None, options: DataOptions | None = None,
                     sets: dict[str, Any] | None = None, num_proc: int | None = None,
                     progress: Callable[[Any], None] | None = None,
                     stop: Callable[[], bool] | None = None,
                     log: Callable[[str], None] | None = None) -> PreparedData:
        """``spec`` tokenized into the token cache with the settings `train` would use (the
        preset or file, the options given, then ``sets``), or found there; see
        ``app.datasets.prepare_dataset`` for ``progress``, ``stop`` and ``log``."""
        from llm_trainer.app.datasets import prepare_dataset
        from llm_trainer.config import load_config

        values = {**(options or DataOptions()).overrides(), **(sets or {}), "data.dataset": spec}
        cfg = load_config(config_file=config_file, preset=preset, overrides=values,
                          home=self.home)
        return prepare_dataset(cfg.data, home=self.home, num_proc=num_proc, progress=progress,
                               stop=stop, log=log, config=cfg)

    def follow(self, run_id: str, *, poll: float = 0.2, process=None) -> RunFollower:
        return self.control.follow(run_id, poll=poll, process=process)

    # ================================================================== models
    def resolve_model(self, name: str | None) -> ModelRecord:
        return self.admin.resolve_model(name)

    def checkpoint_of(self, rec: ModelRecord, which: str = "latest",
                      notes: list[str] | None = None) -> CheckpointInfo:
        return self.admin.checkpoint_of(rec, which, notes)

    def list_models(self, *, include_archived: bool = False) -> list[ModelView]:
        return self.admin.list_models(include_archived=include_archived)

    def model_detail(self, name: str) -> ModelDetail:
        return self.admin.model_detail(name)

    def model_for_change(self, name: str, action: str) -> ModelView:
        """The model, refused in one line when it is training (before asking the user)."""
        rec = self.admin.get(name)
        self.admin.require_idle(rec, action)
        return self.admin.model_view(rec)

    def rename_model(self, old: str, new: str) -> ModelView:
        return self.admin.rename(old, new)

    def archive_model(self, name: str, archived: bool = True) -> ModelView:
        return self.admin.archive(name, archived)

    def delete_model(self, name: str) -> Path:
        return self.admin.delete(name)

    def activate_model(self, name: str) -> ModelView:
        return self.admin.activate(name)

    def export_model(self, name: str | None, out: str, fmt: str, *, checkpoint: str = "latest",
                     overwrite: bool = False, dtype: str | None = None) -> ExportResult:
        """Write a model's checkpoint as ``fmt`` to ``out`` (imports torch)."""
        return self.admin.export(name, out, fmt, checkpoint=checkpoint, overwrite=overwrite,
                                 dtype=dtype)

    def push_model(self, name: str | None, repo: str, *, checkpoint: str = "latest",
                   private: bool = False, revision: str | None = None,
                   gguf: str | None = None) -> PushResult:
        """Upload a model's checkpoint, exported as ``hf`` with its card, to a Hugging Face
        Hub repository (imports torch; the token is huggingface_hub's: HF_TOKEN or its
        login)."""
        return self.admin.push(name, repo, checkpoint=checkpoint, private=private,
                               revision=revision, gguf=gguf)

    def generate(self, settings: GenerationSettings, *, model: str | None = None,
                 checkpoint: str | None = None, device: str = "auto") -> Generation:
        """A model's checkpoint loaded to generate with ``settings`` (checked first; loading
        imports torch): its notes for the user, then ``stream(prompt)``."""
        settings.check()
        generator, info, notes = self.admin.generator(model, checkpoint, device)
        return Generation(generator, settings, info, notes)

    def chat(self, settings: GenerationSettings, *, model: str | None = None,
             checkpoint: str | None = None, device: str = "auto", compare_base: bool = False,
             system: str | None = None) -> Chat:
        """A model's checkpoint (as ``generate`` picks it) opened for a conversation, with
        its base beside it for ``compare_base`` (imports torch); see ``app.chat``."""
        from llm_trainer.app.chat import open_chat

        return open_chat(self.admin, self.queries.runs, settings, model=model,
                         checkpoint=checkpoint, device=device, compare_base=compare_base,
                         system=system)

    def has_chat(self, model: ModelView) -> bool:
        """Whether the model's newest checkpoint carries a chat template (the generate panel
        starts in chat mode for it: a chat model's raw continuation shows its turn markers).
        Reads that checkpoint's config.json only."""
        from llm_trainer.store.checkpoints import list_checkpoints, read_checkpoint_config
        from llm_trainer.store.schema import SchemaError

        found = list_checkpoints(Path(model.path), verify=False)
        try:
            config = read_checkpoint_config(found[-1].path) if found else None
        except SchemaError:  # a newer release's checkpoint: loading it says so, not this
            return False
        return bool(config and config.get("chat"))

    def chat_base(self, model: ModelView) -> str | None:
        """What a model was fine-tuned from (``--init-from``), for offering a comparison with
        it; None for a model trained from scratch. Reads no files."""
        from llm_trainer.app.chat import init_from_of

        return init_from_of(model.config)

    def evaluate(self, target: str | None = None, *, checkpoint: str | None = None,
                 dataset: str | None = None, split: str = "val", batch_size: int | None = None,
                 device: str = "cpu") -> EvalResult:
        """Loss, perplexity and bits per byte over a whole split (imports torch); see
        ``ModelAdmin.evaluate``."""
        return self.admin.evaluate(target, checkpoint=checkpoint, dataset=dataset, split=split,
                                   batch_size=batch_size, device=device,
                                   data_dir=self.home / "data")

    # ================================================================== datasets
    def recent_datasets(self) -> list[RecentDataset]:
        """The datasets this home has trained on, most recently used first, deduplicated."""
        return self.queries.recent_datasets()

    def dataset_choices(self, folder: str | os.PathLike | None = None) -> DatasetChoices:
        """What a dataset picker offers: the built-in datasets, the recent ones and the
        dataset files of ``folder`` (default: the current folder)."""
        from llm_trainer.app.datasets import BUILTIN_DATASETS, dataset_files

        where = Path(folder or ".").resolve()
        return DatasetChoices(builtins=list(BUILTIN_DATASETS), recent=self.recent_datasets(),
                              files=dataset_files(where, home=self.home), folder=str(where))
