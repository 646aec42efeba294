"""Typed, validated run configuration: model / data / train / runtime.

Config is data. Every value is checked at the edge (YAML file, CLI flag, ``--set``) and a
bad one fails with one line naming the key and what is allowed. The resolved ``RunConfig``
is stored with every run and checkpoint.

Layering, lowest first (each layer overrides the ones before it):

1. the dataclass defaults below;
2. a preset (``--preset``, ``configs/<name>.yaml``) or a ``--config`` file, never both;
3. a use-case profile (``--profile``, ``configs/profiles/<name>.yaml``, ``profiles.py``): a
   fine-tuning overlay whose every value carries its reason;
4. the command line's own options (``--lr``, ``--seq-len``...: the launch options table,
   ``app/options.py``);
5. ``--set section.key=value``, which wins over everything.

``load_config`` applies 2, 3 and then 4 + 5 (``launch_overrides`` has already put ``--set``
over the options). A run started from weights adds what those weights fix (the architecture,
the tokenizer) at the options' level, so only a flag can conflict with them: a profile's longer
context is cut to the model's instead (``app/planner.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llm_trainer.errors import ConfigError
from llm_trainer.model.shape import (
    ARCH_KEYS,
    NORM_EPS,
    ModelShape,
    attention_problem,
)

if TYPE_CHECKING:
    from llm_trainer.profiles import Profile

SCHEMA_VERSION = 1
DEFAULT_PRESET = "default"
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")  # runtime.loggers (training.loggers)
# the linear layers of a block that take LoRA adapters; c_proj is both the attention's and the
# MLP's output projection, attn.c_proj / mlp.c_proj one of them (peft matches name suffixes)
LORA_TARGETS = ("c_attn", "c_proj", "c_fc", "attn.c_proj", "mlp.c_proj")
# the Hugging Face names a Llama / Qwen3 user types, as the layer of ours that holds each: our
# c_attn is q/k/v_proj fused and our swiglu c_fc gate/up_proj, so any of them adapts the whole
# fused layer (one A, B's rows for all three / both); GPT-2's HF names are ours
LORA_ALIASES = {"q_proj": "c_attn", "k_proj": "c_attn", "v_proj": "c_attn",
                "o_proj": "attn.c_proj", "gate_proj": "c_fc", "up_proj": "c_fc",
                "down_proj": "mlp.c_proj"}


def lora_layers(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` (ours or Hugging Face's) as the layers of ours they adapt, each once, in the
    order given; an unknown name stays as it is (``FinetuneConfig.check`` names it)."""
    ours = [LORA_ALIASES.get(n, n) for n in names]
    if "c_proj" in ours or {"attn.c_proj", "mlp.c_proj"} <= set(ours):  # both outputs
        ours = ["c_proj" if n in ("attn.c_proj", "mlp.c_proj") else n for n in ours]
    return tuple(dict.fromkeys(ours))


def _opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         min_exclusive: bool = False, max_exclusive: bool = False) -> Any:
    return field(default=default, metadata=dict(help=help, min=min, max=max,
                                                min_exclusive=min_exclusive,
                                                max_exclusive=max_exclusive))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    n_layer: int = _opt(4, "number of transformer blocks", min=1, max=256)
    n_head: int = _opt(4, "attention heads per block (must divide n_embd)", min=1, max=256)
    n_embd: int = _opt(128, "embedding width", min=8, max=65536)
    block_size: int = _opt(128, "context length in tokens (--seq-len)", min=2, max=1_048_576)
    dropout: float = _opt(0.0, "dropout probability", min=0.0, max=1.0, max_exclusive=True)
    bias: bool = _opt(True, "biases in linear layers and layer norms")
    # a new model's default; a stored shape without the key is older: gelu_tanh (ModelShape)
    activation: Literal["gelu", "gelu_tanh", "relu2", "swiglu"] = _opt(
        "gelu", "MLP activation: gelu (exact), gelu_tanh (GPT-2's gelu_new), relu2 (ReLU "
                "squared) or swiglu (gated SiLU with a hidden width of 8/3 n_embd)")
    pos: Literal["learned", "rope"] = _opt(
        "learned", "positions: a learned table added to the embeddings (GPT-2) or rotary "
                   "embeddings applied to queries and keys")
    rope_theta: float = _opt(10000.0, "rotary base frequency (pos: rope only)", min=1.0)
    norm: Literal["layernorm", "rmsnorm"] = _opt("layernorm", "normalisation layers")
    qk_norm: bool = _opt(False, "normalise queries and keys per head (the model's norm) "
                                "before attention")
    tie_embeddings: bool = _opt(True, "share the token embedding with the output head (GPT-2); "
                                      "false gives the head its own weights")
    n_kv_head: int | None = _opt(None, "key/value heads (grouped-query attention; must divide "
                                       "n_head); empty: one per query head", min=1, max=256)
    head_size: int | None = _opt(None, "width of each attention head; empty: n_embd / n_head",
                                 min=2, max=4096)
    mlp_width: int | None = _opt(None, "the MLP's inner width; empty: 4 x n_embd, or 8/3 "
                                       "n_embd rounded up to 32 for swiglu", min=1)
    norm_eps: float = _opt(NORM_EPS, "epsilon of every LayerNorm / RMSNorm", min=0.0, max=0.1,
                           min_exclusive=True)

    def check(self) -> None:
        problem = attention_problem(n_embd=self.n_embd, n_head=self.n_head,
                                    n_kv_head=self.n_kv_head, head_size=self.head_size,
                                    pos=self.pos)
        if problem:
            raise ConfigError(problem[0], hint=problem[1])

    def shape(self, vocab_size: int) -> ModelShape:
        """The architecture these options give a model of ``vocab_size`` embedding rows."""
        return ModelShape(vocab_size=vocab_size, dropout=self.dropout,
                          **{k: getattr(self, k) for k in ARCH_KEYS})


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dataset: str = _opt("wikitext-2", "wikitext-2 | builtin:python-docs | hf:NAME[:CONFIG] | PATH")
    tokenizer: str = _opt("bpe", "bpe | char | byte | path to a tokenizer.json")
    vocab_size: int = _opt(8192, "BPE vocabulary size (bpe only)", min=260, max=1_000_000)
    text_column: str | None = _opt(None, "text column of .jsonl/.json/.csv/.parquet data")
    val_fraction: float = _opt(0.1, "validation share held out when the data has no split",
                               min=0.0, max=0.5, min_exclusive=True)
    val_max_tokens: int = _opt(10_000_000, "cap on held-out validation tokens (the rest of "
                                           "the held-out text trains); 0: no cap", min=0)
    format: Literal["auto", "text", "chat"] = _opt(
        "auto", "auto: a table whose columns hold conversations (messages, conversations, "
                "instruction/output, prompt/completion) is chat data, anything else text; "
                "text or chat to say so")
    on_bad_rows: Literal["auto", "skip", "fail"] = _opt(
        "auto", "malformed chat rows: skip them, fail on the first, or auto (skip up to 1% "
                "of the rows, fail above)")
    packing: bool = _opt(True, "chat: pack whole examples into each block_size window (false: "
                               "one example per window, padded)")
    truncate: bool = _opt(True, "chat: cut an example longer than block_size to fit (false: "
                                "drop it); both are counted")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = _opt(1, "passes over the training tokens", min=1)
    max_steps: int | None = _opt(None, "stop after this many optimizer steps (wins over epochs)",
                                 min=1)
    batch_size: int = _opt(12, "sequences per micro-batch (per process)", min=1)
    grad_accum: int = _opt(1, "micro-batches per optimizer step", min=1)
    auto_batch: bool = _opt(False, "measure before training, then split each step's "
                                   "batch_size x grad_accum sequences into the largest "
                                   "micro-batches that fit (what --batch-size auto does)")
    lr: float = _opt(1e-3, "peak learning rate", min=0.0, min_exclusive=True, max=10.0)
    min_lr_ratio: float = _opt(0.1, "final learning rate as a fraction of lr", min=0.0, max=1.0)
    warmup_steps: int = _opt(100, "linear warm-up steps", min=0)
    lr_schedule: Literal["cosine", "linear", "constant"] = _opt("cosine", "decay after warm-up")
    weight_decay: float = _opt(0.1, "AdamW weight decay (not on norms, biases, embeddings)",
                               min=0.0)
    optimizer: Literal["adamw", "muon"] = _opt(
        "adamw", "adamw for every weight, or muon: Muon for the 2-D hidden weights of the "
                 "blocks and AdamW (train.lr, train.embed_lr) for embeddings, head, norms, "
                 "biases")
    muon_lr: float = _opt(0.02, "Muon's peak learning rate (optimizer: muon)", min=0.0,
                          min_exclusive=True, max=10.0)
    muon_momentum: float = _opt(0.95, "Muon's momentum (optimizer: muon)", min=0.0, max=1.0,
                                max_exclusive=True)
    muon_ns_steps: int = _opt(5, "Newton-Schulz iterations per Muon step (optimizer: muon)",
                              min=1, max=20)
    embed_lr: float | None = _opt(None, "AdamW's peak LR for the token embedding and the output "
                                        "head with optimizer: muon (default: train.lr)",
                                  min=0.0, min_exclusive=True, max=10.0)
    beta1: float = _opt(0.9, "AdamW beta1", min=0.0, max=1.0, max_exclusive=True)
    beta2: float = _opt(0.95, "AdamW beta2", min=0.0, max=1.0, max_exclusive=True)
    loss_on: Literal["assistant", "all"] = _opt(
        "assistant", "chat data: train on the assistant turns only (the prompt is context), "
                     "or on every token")
    grad_clip: float = _opt(1.0, "clip the gradient norm to this (0 disables)", min=0.0)
    eval_interval: int = _opt(250, "validate every N steps (0: only at the end)", min=0)
    eval_batches: int = _opt(20, "validation batches per evaluation", min=1)
    log_interval: int = _opt(10, "report progress every N steps", min=1)
    checkpoint_interval: int = _opt(0, "checkpoint every N steps (0: at each evaluation)", min=0)
    keep_last: int = _opt(2, "newest checkpoints to keep", min=1)
    keep_every: int = _opt(0, "also keep checkpoints whose step is a multiple of N (0: none)",
                           min=0)
    seed: int = _opt(1337, "seed for weights, data order and dropout", min=0)
    compile: Literal["auto", "true", "false"] = _opt("auto", "torch.compile (auto: CUDA only)")
    target_val_loss: float | None = _opt(None, "stop early once val loss reaches this", min=0.0)
    early_stop_patience: int = _opt(
        0, "end the run after N evaluations without an improvement of early_stop_min_delta "
           "(0 disables)", min=0)
    early_stop_min_delta: float = _opt(
        0.0, "how much the val loss must fall below its best to count as an improvement", min=0.0)
    sample_interval: int = _opt(0, "write samples from the model every N steps (0 disables)",
                                min=0)
    sample_prompts: tuple[str, ...] = _opt(
        ("",), "prompts to sample from (a YAML list; the empty prompt starts from a newline)")
    sample_tokens: int = _opt(100, "tokens per sample", min=1, max=100_000)
    sample_temperature: float = _opt(0.8, "sampling temperature (0 is greedy)", min=0.0)
    on_anomaly: Literal["rollback", "stop"] = _opt(
        "rollback", "on a non-finite loss/gradient or a loss spike: roll back to the last good "
                    "checkpoint with a lower LR, or stop the run")
    spike_factor: float = _opt(
        2.0, "a step loss above this x the median of the last spike_window steps is a spike "
             "(0 disables spike detection)", min=0.0)
    spike_window: int = _opt(50, "recent steps whose median loss spikes are measured against",
                             min=2)
    rollback_lr_factor: float = _opt(0.5, "multiply the peak LR by this at each rollback",
                                     min=0.0, min_exclusive=True, max=1.0)
    max_rollbacks: int = _opt(3, "rollbacks allowed in one run before it fails", min=0)

    def planned_steps(self, steps_per_epoch: int) -> int:
        """How many optimizer steps a fresh schedule spans: ``max_steps`` when set (it wins),
        else ``epochs`` passes of ``steps_per_epoch``. The one place for this rule; its other
        half, an explicitly asked ``epochs`` clearing a preset's or checkpoint's ``max_steps``,
        is ``epochs_clear_max_steps``."""
        return self.max_steps or self.epochs * steps_per_epoch

    @staticmethod
    def epochs_clear_max_steps(overrides: dict[str, Any]) -> dict[str, Any]:
        """The user's own values: an explicit ``train.epochs`` without ``train.max_steps``
        clears a preset's or checkpoint's ``max_steps`` (the epochs asked for win)."""
        out = dict(overrides)
        if "train.epochs" in out and "train.max_steps" not in out:
            out["train.max_steps"] = None
        return out


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N | mps | a GPU name such as A30")
    strict_device: bool = _opt(False, "fail instead of falling back when the device is missing")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _opt(
        "auto", "auto | fp32 | bf16 | fp16; auto: bf16 on CUDA with bf16, fp16 on older CUDA; "
                "on a CPU bf16 where it is native (AVX512-BF16 or AMX), else fp32")
    num_threads: int | None = _opt(None, "CPU threads for torch (default: the cores other "
                                         "programs leave free, shared between this home's "
                                         "training processes)", min=1)
    tensorboard: bool = _opt(False, "write TensorBoard event files to runs/<id>/tensorboard/ "
                                    "(needs the tensorboard extra); the same as listing "
                                    "tensorboard in runtime.loggers")
    loggers: tuple[str, ...] = _opt(
        (), "experiment loggers, any of tensorboard, csv, wandb, mlflow (each but csv needs "
            "its extra); a resumed run continues the same logger runs")
    dist_timeout: float = _opt(300.0, "seconds a multi-process run waits for a peer before "
                                      "failing", min=1.0)

    def check(self) -> None:
        bad = [name for name in self.loggers if name not in LOGGERS]
        if bad:
            raise ConfigError(f"runtime.loggers: no logger named {bad[0]!r}",
                              hint=f"allowed: {', '.join(LOGGERS)}")

    def active_loggers(self) -> tuple[str, ...]:
        """The loggers this run writes to, each once: ``loggers`` and, with
        ``tensorboard: true`` (the older switch, kept for stored configs and --tensorboard),
        TensorBoard."""
        names = (*self.loggers, *(("tensorboard",) if self.tensorboard else ()))
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Fine-tuning an imported model (``train --init-from hf:FOLDER``)."""

    init_from: str | None = _opt(None, "where the weights came from: hf:FOLDER, "
                                       "hf:OWNER/NAME@COMMIT (the Hub), a model (its "
                                       "checkpoint) or a checkpoint folder (set by "
                                       "--init-from; recorded, not read again)")
    lora_r: int = _opt(0, "LoRA rank: 0 trains every weight (full fine-tune); N > 0 trains "
                          "rank-N adapters only (--lora r=N,...)", min=0, max=4096)
    lora_alpha: float = _opt(16.0, "LoRA scaling numerator (updates are scaled by alpha / r)",
                             min=0.0, min_exclusive=True)
    lora_dropout: float = _opt(0.05, "dropout on the LoRA branch's input", min=0.0, max=1.0,
                               max_exclusive=True)
    lora_targets: tuple[str, ...] = _opt(("c_attn", "c_proj"), "layers that get adapters: "
                                         "c_attn, c_proj (the attention and the MLP output), "
                                         "c_fc, attn.c_proj, mlp.c_proj, or Hugging Face's "
                                         "names (q_proj, k_proj or v_proj: all of the fused "
                                         "c_attn; gate_proj or up_proj: all of the fused "
                                         "c_fc; o_proj: attn.c_proj; down_proj: mlp.c_proj)")
    lora_use_rslora: bool = _opt(False, "rank-stabilised LoRA: updates scaled by alpha / "
                                        "sqrt(r) instead of alpha / r (peft's use_rslora)")
    lora_use_dora: bool = _opt(False, "DoRA: a trained magnitude per output row on top of the "
                                      "LoRA direction (peft's use_dora; slower steps)")
    freeze_layers: int = _opt(0, "keep the embeddings and the first N blocks frozen", min=0)
    profile: str | None = _opt(None, "the use-case profile the run was set up with "
                                     "(set by --profile; recorded, not read again)")

    def __post_init__(self) -> None:
        # Hugging Face's names are stored as ours: a resume, a checkpoint and the export see
        # one spelling (frozen dataclass: set once, here)
        object.__setattr__(self, "lora_targets", lora_layers(tuple(self.lora_targets)))

    def check(self) -> None:
        bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if bad:
            raise ConfigError(f"finetune.lora_targets: no module named {bad[0]!r}",
                              hint=f"allowed: {', '.join((*LORA_TARGETS, *LORA_ALIASES))}")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "runtime": RuntimeConfig,
    "finetune": FinetuneConfig,
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> RunConfig:
        """Build from nested ``{section: {key: value}}``; unknown keys are errors."""
        return apply_overrides(cls(), _flatten(data, source), source=source)

    def replace(self, **dotted: Any) -> RunConfig:
        """Copy with ``{"train.lr": 3e-4, ...}`` applied (values validated)."""
        return apply_overrides(self, dotted, source="override")

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)


# ---------------------------------------------------------------------------- validation


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, klass in SECTIONS.items() for f in fields(klass)]


def _flatten(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected sections {', '.join(SECTIONS)}; got {_show(data)}")
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if section == "schema_version":
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section '{section}'{_suggest(str(section), list(SECTIONS))}",
                hint=f"allowed sections: {', '.join(SECTIONS)}",
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of keys to values")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def apply_overrides(base: RunConfig, dotted: dict[str, Any], *, source: str) -> RunConfig:
    per_section: dict[str, dict[str, Any]] = {}
    for key, raw in dotted.items():
        section, name = _split_key(key, source)
        f = _field(section, name, source)
        per_section.setdefault(section, {})[name] = coerce(f"{section}.{name}", f, raw)
    changes = {s: dataclasses.replace(getattr(base, s), **v) for s, v in per_section.items()}
    cfg = dataclasses.replace(base, **changes)
    cfg.model.check()
    cfg.runtime.check()
    cfg.finetune.check()
    return cfg


def _split_key(key: str, source: str) -> tuple[str, str]:
    if "." not in key:
        raise ConfigError(
            f"{source}: '{key}' is not a section.key name{_suggest_key(key)}",
            hint="keys look like train.lr or model.n_layer; see `llm-trainer train --help`",
        )
    section, name = key.split(".", 1)
    if section not in SECTIONS:
        raise ConfigError(
            f"{source}: unknown section '{section}' in '{key}'{_suggest_key(key)}",
            hint=f"allowed sections: {', '.join(SECTIONS)}",
        )
    return section, name


def _field(section: str, name: str, source: str) -> dataclasses.Field:
    by_name = {f.name: f for f in fields(SECTIONS[section])}
    if name not in by_name:
        raise ConfigError(
            f"{source}: unknown key '{section}.{name}'{_suggest(name, list(by_name), section)}",
            hint=f"keys in {section}: {', '.join(by_name)}",
        )
    return by_name[name]


def typed_value(key: str, raw: Any, *, source: str) -> Any:
    """One ``section.key`` value checked and typed as ``apply_overrides`` would; a ConfigError
    names ``source`` and the key."""
    section, name = _split_key(key, source)
    f = _field(section, name, source)
    try:
        return coerce(key, f, raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}", hint=exc.hint) from None


def _suggest(name: str, options: list[str], section: str | None = None) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    if not close:
        return ""
    return f" (did you mean '{section + '.' if section else ''}{close[0]}'?)"


def _suggest_key(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(f: dataclasses.Field, kind: str) -> str:
    m = f.metadata
    parts = []
    if m.get("min") is not None:
        parts.append(f"{'>' if m['min_exclusive'] else '>='} {m['min']:g}")
    if m.get("max") is not None:
        parts.append(f"{'<' if m['max_exclusive'] else '<='} {m['max']:g}")
    return f"{kind}{' ' + ' and '.join(parts) if parts else ''}"


def coerce(key: str, f: dataclasses.Field, raw: Any) -> Any:
    """Turn ``raw`` (from YAML or a CLI string) into the field's type, or raise ConfigError."""
    tp = _type_hints(_owner_of(f))[f.name]
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = True
        tp = args[0]
        origin = typing.get_origin(tp)
    value = raw
    if isinstance(value, str):
        value = value.strip()
        if optional and value.lower() in ("", "none", "null", "~"):
            return None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} needs a value; it cannot be empty",
                          hint=f"{key}: {f.metadata['help']}")
    if origin is Literal:
        choices = typing.get_args(tp)
        text = str(value).lower()
        if text not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)} (got {_show(raw)})")
        return text
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{key} must be true or false (got {_show(raw)})")
    if tp is int:
        number = _as_int(value)
        if number is None:
            raise ConfigError(f"{key} must be {_describe(f, 'an integer')} (got {_show(raw)})")
        _check_range(key, f, number, "an integer")
        return number
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be {_describe(f, 'a number')} (got {_show(raw)})")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be {_describe(f, 'a number')} (got {_show(raw)})") \
                from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} must be a finite number (got {_show(raw)})")
        _check_range(key, f, number, "a number")
        return number
    if origin is tuple:  # tuple[str, ...]: a YAML list, or one string from the command line
        if isinstance(value, str) and value.startswith("["):
            import yaml

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"{key} must be a list such as [\"To be\", \"\"] "
                                  f"(got {_show(raw)})") from None
        items = list(value) if isinstance(value, list | tuple) else [value]
        if not items and f.default == ():  # a list that may be empty: [] is "none"
            return ()
        if not items or any(isinstance(v, dict | list | tuple) or v is None for v in items):
            raise ConfigError(f"{key} must be a non-empty list of texts (got {_show(raw)})")
        return tuple(str(v) for v in items)
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{key} must be text (got {_show(raw)})")
        text = str(value)
        if not text:
            raise ConfigError(f"{key} cannot be empty", hint=f"{key}: {f.metadata['help']}")
        return text
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - schema bug


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _check_range(key: str, f: dataclasses.Field, number: float, kind: str) -> None:
    m = f.metadata
    lo, hi = m.get("min"), m.get("max")
    bad = (lo is not None and (number <= lo if m["min_exclusive"] else number < lo)) or (
        hi is not None and (number >= hi if m["max_exclusive"] else number > hi)
    )
    if bad:
        raise ConfigError(f"{key} must be {_describe(f, kind)} (got {number:g})")


@functools.cache
def _type_hints(klass: type) -> dict[str, Any]:
    """A section's field types (evaluated once: the annotations are strings, and evaluating
    them for every value cost ~40 ms per config read)."""
    return typing.get_type_hints(klass)


def _owner_of(f: dataclasses.Field) -> type:
    for klass in SECTIONS.values():
        if any(g is f for g in fields(klass)):
            return klass
    raise KeyError(f.name)  # pragma: no cover


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["train.lr=3e-4", ...]`` -> ``{"train.lr": "3e-4"}`` (typed later by ``coerce``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got '{item}'",
                              hint="for example: --set train.weight_decay=0.05")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


# ---------------------------------------------------------------------------- YAML presets


def preset_dirs(home: Path | None = None) -> list[Path]:
    """Where presets are looked up: ``<home>/configs`` first, then the packaged ones."""
    dirs = []
    if home is not None:
        dirs.append(Path(home) / "configs")
    packaged = Path(__file__).resolve().parent / "configs"  # wheel install
    source = Path(__file__).resolve().parents[2] / "configs"  # source checkout / editable
    dirs += [packaged, source]
    seen, out = set(), []
    for d in dirs:
        if d not in seen and d.is_dir():
            seen.add(d)
            out.append(d)
    return out


def list_presets(home: Path | None = None) -> list[str]:
    names = {p.stem for d in preset_dirs(home) for p in d.glob("*.yaml")}
    return sorted(names)


def preset_path(name: str, home: Path | None = None) -> Path:
    for d in preset_dirs(home):
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = list_presets(home)
    raise ConfigError(
        f"unknown preset '{name}'{_suggest(name, known)}",
        hint=f"available presets: {', '.join(known) or 'none found'}",
    )


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}",
                          hint="pass an existing YAML file to --config, or use --preset") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}") from None
    return data or {}


def load_config(
    *,
    config_file: str | os.PathLike | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    home: Path | None = None,
    profile: Profile | None = None,
) -> RunConfig:
    """Resolve the layers into one validated ``RunConfig``: the preset or file, then the
    ``profile`` (recorded as ``finetune.profile``), then ``overrides`` (the options with
    ``--set`` over them)."""
    if config_file is not None and preset is not None:
        raise ConfigError("use either --config or --preset, not both")
    path = Path(config_file) if config_file else preset_path(preset or DEFAULT_PRESET, home)
    cfg = RunConfig.from_dict(load_yaml(path), source=str(path.name))
    if profile is not None:  # its epochs clear the preset's max_steps, as --epochs does
        values = TrainConfig.epochs_clear_max_steps(profile.overrides())
        cfg = apply_overrides(cfg, {**values, "finetune.profile": profile.name},
                              source=f"profile {profile.name}")
    if overrides:
        cfg = apply_overrides(cfg, overrides, source="option")
    return cfg
