"""The typed contract between the application layer and the front ends (CLI, TUI).

The service returns these frozen views; front ends format them and decide nothing. Each
``to_json()`` gives the keys that ``--json`` prints (documented in docs/cli.md). No torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class JsonView:
    """A view whose JSON (``--json``) is its fields."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunView(JsonView):
    """One run as `status` lists it: the worker's state, reconciled with process liveness."""

    run_id: str
    model: str  # the model's current name (runs refer to models by id); "NAME (deleted)"
    model_id: str | None
    # queued | running | completed | failed | paused | stopped | unreadable, or continued: it
    # paused, stopped or failed, and a resume of its model (continued_by) took over
    status: str
    continued_by: str | None = None
    epoch: float | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    device: str | None = None
    eta_seconds: float | None = None  # only while active
    finish_at: float | None = None  # only while active
    elapsed_s: float | None = None
    tokens_per_s: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    anomalies: int = 0
    rollbacks: int = 0
    last_anomaly: str | None = None
    last_sample: dict[str, Any] | None = None  # {"time", "step", "prompt", "text"}
    gpu_util_pct: float | None = None
    pid: int | None = None
    error: str | None = None
    reason: str | None = None  # why it ended (completed / paused)
    checkpoint: str | None = None  # in the model's folder now; None once the model is deleted
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    telemetry: dict[str, Any] | None = None
    # while a running run prepares its data (before its first step): the phase
    # ("preparing_data"), its stage ("vocabulary" | "tokenizing"), how far (0..1), its rate
    # and the time it has left; all None otherwise. render.phase() words them.
    phase: str | None = None
    phase_stage: str | None = None
    phase_progress: float | None = None
    phase_mb_per_s: float | None = None
    phase_eta_s: float | None = None
    # the step time estimated from the run's first steps, and at its end the actual mean and
    # how far off the estimate was (actual / estimated - 1)
    estimated_step_s: float | None = None
    actual_step_s: float | None = None
    estimate_error: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def estimate_line(self) -> str | None:
        """'31.2 ms per step (estimated from its first steps); actual 33.0 ms (+6%)', or
        None before the estimate exists."""
        if self.estimated_step_s is None:
            return None
        line = f"{self.estimated_step_s * 1000:.1f} ms per step (estimated from its first steps)"
        if self.actual_step_s is not None:
            line += f"; actual {self.actual_step_s * 1000:.1f} ms"
            if self.estimate_error is not None:
                line += f" ({self.estimate_error:+.0%})"
        return line

    def sample_lines(self, limit: int = 8) -> list[str]:
        """The latest sample (prompt + continuation), its last ``limit`` lines."""
        if not self.last_sample:
            return []
        text = self.last_sample.get("prompt", "") + self.last_sample.get("text", "")
        return text.splitlines()[-limit:]


@dataclass(frozen=True)
class RunDetail(RunView):
    """A run with what was asked (meta, config) and the end of its log."""

    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    log_tail: list[str] = field(default_factory=list)
    log_path: str = ""
    bad_metric_lines: int = 0  # lines of metrics.jsonl skipped: not UTF-8, JSON or typed


@dataclass(frozen=True)
class CheckpointView(JsonView):
    name: str
    step: int
    epoch: float
    val_loss: float | None
    valid: bool
    problem: str | None
    created_at: float


@dataclass(frozen=True)
class ModelView(JsonView):
    """One named model: its record, and what the service derived (status, size, flags)."""

    id: str
    name: str
    status: str  # ready | training | corrupted | archived | new | unreadable
    problem: str | None  # why it is corrupted or unreadable
    created_at: float
    last_trained_at: float | None
    architecture: dict[str, Any]
    tokenizer: dict[str, Any]
    datasets: list[dict[str, Any]]
    epochs_completed: float
    steps_completed: int
    best_val_loss: float | None
    latest_val_loss: float | None
    archived: bool
    runs: list[str]
    lineage: list[dict[str, Any]]
    config: dict[str, Any]
    disk_bytes: int
    path: str
    training_run: str | None
    checkpoint_count: int  # how many checkpoint folders it has
    active: bool  # the model commands use when none is named
    latest: bool  # the most recently trained one


@dataclass(frozen=True)
class ModelDetail(ModelView):
    """A model with each of its checkpoints, verified against their manifests."""

    checkpoints: list[CheckpointView] = field(default_factory=list)


@dataclass(frozen=True)
class LossCurve:
    """A run's loss over steps, from its metrics.jsonl: train records and evaluations."""

    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    bad_lines: int = 0  # metrics.jsonl lines skipped: not UTF-8, not JSON, wrong types

    @property
    def empty(self) -> bool:
        return not (self.train_steps or self.val_steps)


@dataclass(frozen=True)
class CompareRun:
    """One run of a comparison: what `compare` prints per run."""

    run_id: str
    model: str
    status: str
    final_val_loss: float | None
    best_val_loss: float | None
    tokens_per_s: float | None
    steps: int | None
    wall_s: float | None
    device: str | None
    config: dict[str, Any]  # dotted keys -> values (lists for tuples, as in meta.json)
    curve: LossCurve = field(default_factory=LossCurve)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["curve"], out["status"]
        return out


@dataclass(frozen=True)
class CompareView:
    """Two to eight runs side by side: the config keys whose values differ between them (in
    run order), each run's results, and the run with the lowest best val loss."""

    runs: list[CompareRun]
    differing_keys: dict[str, list[Any]]
    best_run: str | None  # None when no run has a val loss yet

    def to_json(self) -> dict[str, Any]:
        return {"runs": [r.to_json() for r in self.runs],
                "differing_keys": self.differing_keys, "best_run": self.best_run}


@dataclass(frozen=True)
class RerunCommand:
    """The `llm-trainer train ...` command that reproduces a run's config."""

    run_id: str
    args: list[str]  # argv, starting with "llm-trainer"
    notes: list[str] = field(default_factory=list)  # what the command does not reproduce

    @property
    def shell(self) -> str:
        import shlex

        return shlex.join(self.args)


@dataclass(frozen=True)
class ExportResult(JsonView):
    """A model written for other tools (`models export`)."""

    path: str  # what was written: a folder, or a .gguf file
    model: str  # the model's folder name
    checkpoint: str  # the checkpoint exported (its folder name)
    format: str  # hf | safetensors | gguf | ollama | peft
    dtype: str | None  # gguf / ollama weights: f32 or f16 (None: the default)
    context: int | None  # the model's context length (model.block_size)
    notes: list[str] = field(default_factory=list)
    chat: bool = False  # the model has a chat template (the export carries it)
    base: str | None = None  # peft: the transformers folder the adapter goes on, if known
    resize: int | None = None  # peft: embedding rows that base needs first (added tokens)


@dataclass(frozen=True)
class PushResult(JsonView):
    """A model uploaded to the Hugging Face Hub (`models push`)."""

    repo: str  # OWNER/NAME
    url: str  # the commit's page (or the repository's)
    commit: str | None  # the commit made
    revision: str | None  # the branch pushed to (None: main)
    model: str
    checkpoint: str
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PresetDefaults(JsonView):
    """What a preset trains with, as the dashboard's train panel fills its fields."""

    preset: str
    dataset: str
    batch_size: int
    seq_len: int  # model.block_size


@dataclass(frozen=True)
class ProfileDefaults(JsonView):
    """A use-case profile as the train panel offers it: what it is for, and the values of its
    that are fields of the panel (None: the profile leaves it to the preset)."""

    name: str
    description: str
    epochs: int | None
    seq_len: int | None  # model.block_size


@dataclass(frozen=True)
class EvalResult(JsonView):
    """A checkpoint scored over a whole dataset split (`llm-trainer eval`)."""

    model: str
    checkpoint: str  # the checkpoint folder
    step: int
    dataset: str  # the dataset spec, as training records it
    dataset_description: str
    split: str  # val | test
    split_source: str  # "split" (the dataset has it) | "held out" (its last val_fraction)
    tokenizer: str  # the checkpoint's tokenizer kind
    tokens: int  # predicted tokens: every token of the split but the first
    windows: int
    bytes: int  # UTF-8 bytes of the text the predicted tokens cover
    nats: float  # summed negative log-likelihood
    loss: float  # nats / tokens
    perplexity: float | None  # exp(loss); None when it overflows
    bits_per_byte: float  # nats / ln 2 / bytes
    block_size: int
    batch_size: int
    device: str
    dtype: str  # always float32
    seconds: float  # the forward passes, not loading
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuiltinDataset(JsonView):
    """A dataset every home can name without a file: its spec and what it is."""

    spec: str
    description: str


@dataclass(frozen=True)
class RecentDataset(JsonView):
    """A dataset this home has trained on: one per dataset however often it was used."""

    spec: str  # as training recorded it (a relative path is relative to the home)
    last_used_at: float | None  # the start of the latest run on it (or the model's record)
    models: list[str]  # the models trained on it, most recent first (current names)
    runs: int  # how many runs read it
    train_tokens: int | None  # its training split in tokens, as the latest run tokenized it
    missing: bool  # a local file or folder that is no longer there


@dataclass(frozen=True)
class DatasetFile(JsonView):
    """A file or folder in a folder that training could read as a dataset."""

    spec: str  # what to pass as --dataset
    name: str
    is_dir: bool
    files: int  # the dataset files it holds (1 for a file)
    size_bytes: int  # of those files


@dataclass(frozen=True)
class DatasetChoices(JsonView):
    """What a dataset picker offers: the built-in datasets, the ones this home has used (most
    recent first) and the dataset files of ``folder``."""

    builtins: list[BuiltinDataset]
    recent: list[RecentDataset]
    files: list[DatasetFile]
    folder: str


@dataclass(frozen=True)
class PreparedData(JsonView):
    """A dataset in the token cache (`data prepare`): where, what it holds, how it was held
    out, and what preparing it took."""

    spec: str  # the dataset as training names it (a local path made absolute)
    description: str
    cache_dir: str  # <home>/data/tokens/<key>: manifest.json and the shards
    from_cache: bool  # it was complete already: nothing was read or tokenized
    resumed_shards: int  # shards an interrupted preparation had finished, kept (0: none)
    shards: int
    dtype: str  # uint16 | uint32
    tokenizer: dict[str, Any]  # {"kind", "vocab_size"}
    train_tokens: int
    train_documents: int
    val_tokens: int
    val_documents: int
    hold_out: dict[str, Any]  # the manifest's record of how validation was held out
    bytes: int  # UTF-8 bytes of the text the tokens encode (train + val)
    seconds: float  # this call, the vocabulary included
    mb_per_s: float | None  # what this call tokenized per second; None when from the cache


@dataclass(frozen=True)
class StopResult(JsonView):
    """What `stop` did: the run's status after the request (``was_running`` False: the run
    had already ended, nothing was sent)."""

    run_id: str
    was_running: bool
    status: str


@dataclass(frozen=True)
class SystemView(JsonView):
    """Panel B: this machine's telemetry and the time until every active run is done (runs
    train side by side, so that is the longest remaining time, not a sum)."""

    telemetry: dict[str, Any]  # Telemetry.sample(): each field a value, or None and its
    # reason in telemetry["na"]
    active_runs: int
    remaining_s: float | None  # None: no active run, or none has an ETA yet


@dataclass(frozen=True)
class BatchChoiceView(JsonView):
    """What --batch-size auto chose: the micro-batch, the raised accumulation that keeps the
    global batch, how it decided and each micro-batch it tried."""

    batch_size: int
    grad_accum: int
    global_batch: int
    method: str  # "cuda probe" | "<device> memory and throughput"
    tried: list[dict[str, Any]]  # {"batch_size", "fits", "memory_bytes"?, "tokens_per_s"?}


@dataclass(frozen=True)
class DryRunData(JsonView):
    spec: str
    train_tokens: int
    val_tokens: int


@dataclass(frozen=True)
class DryRunMemory(JsonView):
    """Estimated bytes (formulas, training.estimate) and what is free where they would live."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    total: int
    device_type: str
    available: int


@dataclass(frozen=True)
class DryRunTime(JsonView):
    """Times multiplied out from ``timed_steps`` real steps after ``warmup_steps``."""

    step_time_s: float
    epoch_time_s: float
    run_time_s: float
    eval_time_s: float | None
    evals: int
    tokens_per_s: float
    warmup_steps: int
    timed_steps: int


@dataclass(frozen=True)
class ProfileValueView(JsonView):
    """One value of a use-case profile as the run uses it."""

    key: str  # "train.lr"
    value: Any  # the profile's value (after ``note``'s change, if any)
    why: str  # the profile's one-line reason for it
    used: Any  # the value the run uses
    overridden_by: str | None  # the option that replaced it (--lr, --lora, --set); None: used
    note: str | None = None  # a change the planner made, e.g. a context cut to the model's


@dataclass(frozen=True)
class ProfileView(JsonView):
    """``--profile NAME``: what it is for and each of its values with its reason."""

    name: str
    description: str
    path: str
    values: list[ProfileValueView]


@dataclass(frozen=True)
class DryRunReport(JsonView):
    """`train --dry-run` / `resume --dry-run`: what the run would be, resolved without
    training or writing anything, with its memory and (measured) time estimates."""

    kind: str  # train | continue | resume
    model: str | None  # the model it trains (None: a new one, name not chosen yet)
    notes: list[str]  # warnings for the user
    config: dict[str, Any]  # the RunConfig the run would use
    device: dict[str, Any]  # {"requested", "selected", "name", ...}
    precision: str
    dataset: DryRunData
    parameters: int
    trainable_parameters: int
    architecture: dict[str, Any]  # the model's stored shape
    batch_size: int
    grad_accum: int
    global_batch: int
    tokens_per_step: int
    steps_per_epoch: int
    start_step: int
    total_steps: int
    steps: int
    batch_choice: BatchChoiceView | None
    memory: DryRunMemory
    time: DryRunTime | None  # None: not measured (timed_steps 0, or nothing to train)
    profile: ProfileView | None = None  # --profile: its values and reasons
