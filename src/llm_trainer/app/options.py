"""The launch options: the one table of the flags that set a config field.

``LaunchOptions`` is the table. Each of its fields is one option of `llm-trainer train` (some
also of `resume`), named as the flag is (``max_steps`` is ``--max-steps``), and says which
config field it sets (``TrainConfig.max_steps``); its help text is that config field's own
(``config._opt(..., help)``), so it is written once. From it come the Typer options of
`train` and `resume` (``cli/options.py``), the train panel's fields in the TUI and the
flags of `compare --rerun`; a request carries the user's choices as one ``LaunchOptions``.

Follow ``--max-steps`` by reading: the Typer option ``max_steps`` -> ``LaunchOptions.max_steps``
(``launch(TrainConfig, "max_steps")``) -> ``LaunchOptions.overrides()`` -> the planner applies
it to ``RunConfig.train.max_steps``. ``--set section.key=value`` is what the user typed and
stays as typed. No torch.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from llm_trainer.config import (
    SECTIONS,
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
)
from llm_trainer.errors import UsageError

LORA_HINT = ("use r=8,alpha=16,dropout=0.05,targets=c_attn,c_proj (or q_proj,v_proj...), "
             "use_rslora=true, use_dora=true")
# --lora's settings -> the FinetuneConfig fields they set (use_*: peft's own names)
LORA_FIELDS = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout",
               "targets": "lora_targets", "use_rslora": "lora_use_rslora",
               "use_dora": "lora_use_dora"}


def launch(section: type, key: str, *, note: str = "", help: str | None = None,
           flag_type: Any = None) -> Any:
    """A ``LaunchOptions`` field that sets ``section.key`` (a config dataclass and its field).
    ``note``: what the command line adds to the field's help; ``help``: the whole help, for an
    option that sets several fields; ``flag_type``: what the flag takes when it is not the
    field's type (``--batch-size auto``)."""
    return field(default=None, metadata={"section": section, "key": key, "note": note,
                                         "help": help, "flag_type": flag_type})


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    """What the user chose with options; None: not given (the preset's or the config's)."""

    dataset: str | None = launch(
        DataConfig, "dataset", note="; PATH: a .txt/.md/.jsonl/.csv/.parquet file, or a "
                                    "folder with train/valid files")
    epochs: int | None = launch(TrainConfig, "epochs")
    max_steps: int | None = launch(TrainConfig, "max_steps")
    batch_size: int | None = launch(
        TrainConfig, "batch_size", flag_type=str,
        note=", or auto: the largest that fits this machine (the accumulation rises to keep "
             "batch_size x grad_accum)")
    seq_len: int | None = launch(ModelConfig, "block_size")
    lr: float | None = launch(TrainConfig, "lr")
    device: str | None = launch(RuntimeConfig, "device")
    strict_device: bool | None = launch(RuntimeConfig, "strict_device")
    precision: str | None = launch(RuntimeConfig, "precision")
    grad_accum: int | None = launch(TrainConfig, "grad_accum")
    eval_interval: int | None = launch(TrainConfig, "eval_interval")
    seed: int | None = launch(TrainConfig, "seed")
    lora: str | None = launch(
        FinetuneConfig, "lora_r", help="with --init-from: train LoRA adapters only, e.g. "
                                       "r=8,alpha=16,dropout=0.05,targets=c_attn,c_proj "
                                       "(or Hugging Face's q_proj,v_proj,...), and "
                                       "use_rslora=true, use_dora=true")
    freeze_layers: int | None = launch(FinetuneConfig, "freeze_layers",
                                       note=" (with --init-from)")
    early_stop_patience: int | None = launch(TrainConfig, "early_stop_patience")
    sample_interval: int | None = launch(TrainConfig, "sample_interval")
    sample_prompt: tuple[str, ...] | None = launch(
        TrainConfig, "sample_prompts", help="prompt for those samples (repeatable; default: "
                                            "an empty prompt)")
    on_anomaly: str | None = launch(TrainConfig, "on_anomaly", note=" (rollback or stop)")
    loss_on: str | None = launch(TrainConfig, "loss_on", note=" (assistant or all)")
    on_bad_rows: str | None = launch(DataConfig, "on_bad_rows")
    tensorboard: bool | None = launch(RuntimeConfig, "tensorboard",
                                      note="; view with: tensorboard --logdir runs/")
    logger: tuple[str, ...] | None = launch(
        RuntimeConfig, "loggers", note=" (repeatable: --logger csv --logger wandb)")

    def given(self) -> list[tuple[LaunchOption, Any]]:
        """The options the user gave, with their values."""
        return [(opt, getattr(self, opt.name)) for opt in LAUNCH_OPTIONS
                if getattr(self, opt.name) is not None]

    def overrides(self) -> dict[str, Any]:
        """The config values these options set, keyed as ``apply_overrides`` takes them
        (the table gives each key: no option is mapped by hand)."""
        out: dict[str, Any] = {}
        for opt, value in self.given():
            if opt.name == "lora":
                out.update(parse_lora(value))
            else:
                out[opt.config_key] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> LaunchOptions:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LaunchOption:
    """One row of the table: a ``LaunchOptions`` field and the config field it sets."""

    name: str  # the LaunchOptions field (and the Typer parameter): "max_steps"
    section: type  # the config dataclass: TrainConfig
    key: str  # its field: "max_steps"
    type: Any  # the LaunchOptions field's type, None removed: int
    flag_type: Any  # what the flag takes (usually ``type``)
    help: str  # the config field's help (+ what the command line adds)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")  # max_steps: --max-steps

    @property
    def section_name(self) -> str:
        return next(name for name, klass in SECTIONS.items() if klass is self.section)

    @property
    def config_key(self) -> str:
        """``train.max_steps``: the key ``--set`` and ``apply_overrides`` take."""
        return f"{self.section_name}.{self.key}"


def _table(options: type) -> tuple[LaunchOption, ...]:
    """The rows of an options class whose fields are ``launch(...)`` ones."""
    hints = typing.get_type_hints(options)
    rows = []
    for f in fields(options):
        meta = f.metadata
        config_field = {c.name: c for c in fields(meta["section"])}[meta["key"]]
        kind = next(a for a in typing.get_args(hints[f.name]) if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        # the config's help may name the flag ("context length in tokens (--seq-len)")
        own = config_field.metadata["help"].replace(f" ({flag})", "")
        rows.append(LaunchOption(f.name, meta["section"], meta["key"], kind,
                                 meta["flag_type"] or kind, meta["help"] or own + meta["note"]))
    return tuple(rows)


LAUNCH_OPTIONS: tuple[LaunchOption, ...] = _table(LaunchOptions)
BY_NAME: dict[str, LaunchOption] = {opt.name: opt for opt in LAUNCH_OPTIONS}


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """`data prepare`'s options: the data.* fields that decide the token cache, so that a
    later `train` with the same settings finds it. None: not given (the preset's or the
    config's, as `train` would use)."""

    tokenizer: str | None = launch(DataConfig, "tokenizer")
    vocab_size: int | None = launch(DataConfig, "vocab_size")
    val_fraction: float | None = launch(DataConfig, "val_fraction")
    text_column: str | None = launch(DataConfig, "text_column")

    def overrides(self) -> dict[str, Any]:
        """The config values these options set (``data.tokenizer``...)."""
        return {opt.config_key: getattr(self, opt.name) for opt in DATA_OPTIONS
                if getattr(self, opt.name) is not None}


DATA_OPTIONS: tuple[LaunchOption, ...] = _table(DataOptions)


def option_for(section: type, key: str) -> LaunchOption | None:
    """The option that sets ``section.key``, if one does."""
    return next((o for o in LAUNCH_OPTIONS if o.section is section and o.key == key), None)


def launch_overrides(options: LaunchOptions, sets: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The config values a launch sets: its options, then ``--set`` (which wins)."""
    return {**options.overrides(), **(sets or {})}


def parse_lora(spec: str) -> dict[str, Any]:
    """``r=8,alpha=16,dropout=0.05,targets=c_attn,c_proj`` -> ``finetune.*`` overrides (the
    values are checked with the config's own rules)."""
    out: dict[str, Any] = {}
    key = None
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" in part:
            key, value = (x.strip() for x in part.split("=", 1))
            if key not in LORA_FIELDS:
                raise UsageError(f"--lora: unknown setting {key!r}", hint=LORA_HINT)
            out[f"finetune.{LORA_FIELDS[key]}"] = [value] if key == "targets" else value
        elif key == "targets":  # targets=c_attn,c_proj: the names after the first
            out["finetune.lora_targets"].append(part)
        else:
            raise UsageError(f"--lora: {part!r} is not key=value", hint=LORA_HINT)
    if "finetune.lora_r" not in out:
        raise UsageError("--lora needs a rank: r=N", hint="e.g. --lora r=8,alpha=16")
    return out


def preset_help() -> str:
    """``--preset``'s help with the packaged presets' names (a folder listing, no YAML read:
    --help stays fast; a fixed list had named five of nine, chat-synthetic left out)."""
    from llm_trainer.config import list_presets

    return f"built-in config: {', '.join(list_presets()) or 'none found'}"
