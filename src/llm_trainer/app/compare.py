"""Comparing runs, and the command that trains a run's config again. Reads only. No torch.

A target is a run id (or an unambiguous prefix of one) or a model name, which means that
model's latest run. The comparison keeps only the config keys whose values differ between
the runs; the best run is the one with the lowest best val loss.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from llm_trainer.app.options import BY_NAME
from llm_trainer.app.queries import RunQueries
from llm_trainer.config import RunConfig, all_keys, load_config
from llm_trainer.errors import ConfigError, NotFoundError, UsageError
from llm_trainer.profiles import Profile, load_profile
from llm_trainer.views import CompareRun, CompareView, RerunCommand

MIN_RUNS, MAX_RUNS = 2, 8
DATASET = BY_NAME["dataset"]  # the launch option that names the dataset: --dataset
# keys the rerun command gives with their own options, not --set
_OWN_OPTIONS = (DATASET.config_key, "finetune.init_from")


def flat_config(raw: dict[str, Any] | None) -> dict[str, Any]:
    """A stored config as dotted keys -> JSON values, completed with today's defaults for keys
    an older release did not write."""
    raw = raw or {}
    try:
        nested: dict[str, Any] = RunConfig.from_dict(raw, source="meta.json").to_dict()
    except ConfigError:  # a key this release does not know: show what was stored
        nested = {s: v for s, v in raw.items() if isinstance(v, dict)}
    return {f"{section}.{key}": list(value) if isinstance(value, tuple) else value
            for section, values in nested.items() for key, value in values.items()}


def set_value(value: Any) -> str:
    """A config value as `--set key=VALUE` text that the config parser reads back unchanged."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(list(value))  # a YAML flow list
    if isinstance(value, float):
        return repr(value)
    return str(value)


class RunComparison:
    def __init__(self, queries: RunQueries, home: Path) -> None:
        self.queries, self.home = queries, home
        self.runs, self.models = queries.runs, queries.models

    # ------------------------------------------------------------------ targets
    def resolve(self, target: str) -> str:
        """The run a target means: a run id (or unique prefix), or a model's latest run."""
        if self.runs.exists(target):
            return target
        if self.models.exists(target):
            rec = self.models.get(target)
            mine = [v for v in self.queries.list_runs() if v.model_id == rec.id]
            if not mine:
                raise NotFoundError(f"model {target} has no runs",
                                    hint="see its runs with `llm-trainer models show "
                                         f"{target}`")
            return max(mine, key=lambda v: (v.created_at or 0, v.run_id)).run_id
        try:
            return self.runs.require(target)
        except NotFoundError:
            ids = self.runs.run_ids()
            close = difflib.get_close_matches(target, self.models.names() + ids[:200], n=3,
                                              cutoff=0.5)
            raise NotFoundError(f"no run or model named {target!r}",
                                hint=(f"did you mean: {', '.join(close)}?" if close else
                                      "see `llm-trainer status` and `llm-trainer models "
                                      "list`")) from None

    # ------------------------------------------------------------------ compare
    def compare(self, targets: list[str]) -> CompareView:
        if not MIN_RUNS <= len(targets) <= MAX_RUNS:
            raise UsageError(f"compare takes {MIN_RUNS} to {MAX_RUNS} runs or models "
                             f"(got {len(targets)})",
                             hint="e.g. llm-trainer compare RUN_A RUN_B (a model name means "
                                  "its latest run)")
        run_ids: list[str] = []
        for target in targets:
            run_id = self.resolve(target)
            if run_id in run_ids:
                what = f"run {run_id}" if target == run_id else \
                    f"{target!r} (run {run_id})"
                raise UsageError(f"{what} is named twice", hint="name each run once")
            run_ids.append(run_id)
        runs = [self._compare_run(r) for r in run_ids]
        keys = sorted({k for r in runs for k in r.config})
        differing = {k: [r.config.get(k) for r in runs] for k in keys
                     if any(r.config.get(k) != runs[0].config.get(k) for r in runs)}
        scored = [r for r in runs if r.best_val_loss is not None]
        best = min(scored, key=lambda r: r.best_val_loss).run_id if scored else None
        return CompareView(runs=runs, differing_keys=differing, best_run=best)

    def _compare_run(self, run_id: str) -> CompareRun:
        view = self.queries.run_view(run_id)
        meta = self.runs.read_meta(run_id)
        curve = self.queries.loss_curve(run_id)
        final = curve.val_loss[-1] if curve.val_loss else view.val_loss
        best = view.best_val_loss
        if best is None and curve.val_loss:
            best = min(curve.val_loss)
        device = (meta.selected_device or {}).get("selected") or view.device
        return CompareRun(run_id=run_id, model=view.model, status=view.status,
                          final_val_loss=final, best_val_loss=best,
                          tokens_per_s=view.tokens_per_s, steps=view.step,
                          wall_s=view.elapsed_s, device=device,
                          config=flat_config(meta.config), curve=curve)

    # ------------------------------------------------------------------ rerun
    def rerun_command(self, target: str) -> RerunCommand:
        """`llm-trainer train` with --dataset, --name and one --set per config value that
        differs from what `train` starts from (the default preset): parsing it gives the run's
        config again."""
        run_id = self.resolve(target)
        meta = self.runs.read_meta(run_id)
        try:
            cfg = RunConfig.from_dict(meta.config, source=f"run {run_id}")
        except ConfigError as exc:
            raise UsageError(f"run {run_id} has a config this release cannot read: {exc}") \
                from None
        model = (meta.model or {}).get("name") or "model"
        args = ["llm-trainer", "train"]
        notes: list[str] = []
        skip = set(_OWN_OPTIONS)
        profile = self._profile(cfg, notes)
        base = load_config(home=self.home, profile=profile)
        if cfg.finetune.init_from:
            # the import takes architecture and tokenizer from the folder, and its own lr
            # unless one is given
            args += ["--init-from", cfg.finetune.init_from]
            skip |= {"data.tokenizer", *(k for k in all_keys() if k.startswith("model."))}
            force = {"train.lr"}
        else:
            force = set()
        if profile is not None:  # its values are the base; --set gives the run's others
            args += ["--profile", profile.name]
            skip.add("finetune.profile")
        args += [DATASET.flag, cfg.get(DATASET.config_key),
                 "--name", self.models.default_name(f"{model}-rerun")]
        changed = [k for k in all_keys()
                   if k not in skip and (k in force or cfg.get(k) != base.get(k))]
        if "train.epochs" in changed and "train.max_steps" not in changed:
            changed.append("train.max_steps")  # an explicit epochs would clear max_steps
        for key in changed:
            args += ["--set", f"{key}={set_value(cfg.get(key))}"]
        if meta.kind in ("continue", "resume"):
            notes.append(f"run {run_id} continued model {model} from a checkpoint; this "
                         "command trains a new model from scratch with the same settings")
        if (meta.world_size or 1) > 1:
            notes.append(f"run {run_id} used {meta.world_size} processes: add the same "
                         "--nproc/--nnodes options to train the same way")
        return RerunCommand(run_id=run_id, args=args, notes=notes)

    def _profile(self, cfg: RunConfig, notes: list[str]) -> Profile | None:
        """The profile a run was set up with, when the rerun can name it: a fine-tune (a
        profile needs --init-from) whose profile this home still has."""
        name = cfg.finetune.profile
        if not name or not cfg.finetune.init_from:
            return None
        try:
            return load_profile(name, self.home)
        except UsageError:
            notes.append(f"profile {name} is not found any more: its values are given with "
                         "--set")
            return None
