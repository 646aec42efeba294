"""Text both front ends show: a run's detail, the dry-run report, telemetry, the batch choice,
a model's shape. Plain strings, no widgets and no terminal codes: the CLI prints them, the TUI
wraps them in a ``Text``. This module formats; it never decides (what a value means is the
app layer's, and arrives here in a view or a report). No torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from llm_trainer.progress import format_bytes, format_clock, format_duration

if TYPE_CHECKING:
    from llm_trainer.views import (
        BatchChoiceView,
        DryRunReport,
        PreparedData,
        ProfileView,
        RunDetail,
        RunView,
    )


# ---------------------------------------------------------------------------- numbers


def num(value: Any, fmt: str = "{:.4f}") -> str:
    """``value`` in ``fmt``; ``-`` for None, the value as it is when it does not fit."""
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def steps(view: RunView) -> str:
    """'1,200/5,000' (or '1,200' without a plan; '-' before the first step)."""
    step, total = view.step, view.total_steps
    if step is None:
        return "-"
    return f"{step:,}/{total:,}" if total else f"{step:,}"


def eta(view: RunView) -> str:
    return format_duration(view.eta_seconds) if view.active else "-"


# what a run's phase and its stages are called (RunState.phase, .phase_stage)
PHASE_WORDS = {"preparing_data": "preparing data"}
STAGE_WORDS = {"vocabulary": "building the vocabulary", "tokenizing": "tokenizing"}


def phase_name(view: RunView) -> str | None:
    """'preparing data' while a running run is in a phase before its first step; None
    otherwise."""
    if view.status != "running" or not view.phase:
        return None
    return PHASE_WORDS.get(view.phase, view.phase.replace("_", " "))


def phase(view: RunView) -> str | None:
    """'preparing data 43%' (the phase and how far it is); None outside a phase. The
    percentage is rounded down: 100% only once the phase is done."""
    words = phase_name(view)
    if words is None:
        return None
    done = view.phase_progress
    return words if done is None else f"{words} {math.floor(done * 100):.0f}%"


def phase_rates(view: RunView) -> str:
    """'tokenizing, 85.2 MB/s, ETA 1m20s' (what is known of it); '' outside a phase."""
    if phase(view) is None:
        return ""
    parts = [STAGE_WORDS.get(view.phase_stage, view.phase_stage)] if view.phase_stage else []
    if view.phase_mb_per_s is not None:
        parts.append(f"{view.phase_mb_per_s:,.1f} MB/s")
    if view.phase_eta_s is not None:
        parts.append(f"ETA {format_duration(view.phase_eta_s)}")
    return ", ".join(parts)


def phase_detail(view: RunView) -> str | None:
    """'preparing data 43% (tokenizing, 85.2 MB/s, ETA 1m20s)', or None outside a phase."""
    head = phase(view)
    if head is None:
        return None
    rates = phase_rates(view)
    return f"{head} ({rates})" if rates else head


def run_state(view: RunView) -> str:
    """A run's state in a table's status column: its phase while it has one ('preparing data
    43%'), else its status."""
    return phase(view) or view.status


def gpu(view: RunView) -> str:
    value = view.gpu_util_pct
    return "n/a" if value is None else f"{value:.0f}%"


# ---------------------------------------------------------------------------- telemetry


def telemetry_field(tele: dict[str, Any] | None, key: str, unit: str = "",
                    digits: int = 0) -> str:
    """One telemetry value with its unit, or ``n/a (why)`` when the sample says why."""
    from llm_trainer.telemetry import fmt, reason

    text = fmt(tele, key, unit, digits)
    why = reason(tele, key)
    return f"{text} ({why})" if text == "n/a" and why else text


def telemetry_lines(tele: dict[str, Any] | None) -> list[str]:
    """GPU, CPU and RAM of a run's host, three lines."""
    from llm_trainer.telemetry import fmt, reason

    ram = f"{fmt(tele, 'ram_used_mb', '', 0)}/{fmt(tele, 'ram_total_mb', ' MB', 0)}"
    if tele and tele.get("gpu_util_pct") is None and tele.get("vram_total_mb") is None:
        gpu_text = f"n/a ({reason(tele, 'gpu_util_pct') or 'no data'})"
    else:
        gpu_text = (f"{telemetry_field(tele, 'gpu_util_pct', '%')}  VRAM "
                    f"{fmt(tele, 'vram_used_mb')}/{fmt(tele, 'vram_total_mb', ' MB')}  temp "
                    f"{fmt(tele, 'gpu_temp_c', ' C')}  power {fmt(tele, 'gpu_power_w', ' W')}")
    return [
        f"GPU:        {gpu_text}",
        f"CPU:        {telemetry_field(tele, 'cpu_pct', '%')} of {fmt(tele, 'cpu_cores')} "
        f"cores, load {fmt(tele, 'load_avg')}",
        f"RAM:        {ram}; worker RSS {telemetry_field(tele, 'rss_mb', ' MB')}",
    ]


# ---------------------------------------------------------------------------- a run


def run_detail_lines(d: RunDetail) -> list[str]:
    """One run in detail (`llm-trainer status RUN` and the dashboard's run detail)."""
    meta = d.meta or {}
    sel = meta.get("selected_device") or {}
    lines = [
        f"run:        {d.run_id}",
        f"model:      {d.model}",
        f"status:     {d.status}" + (f" (by run {d.continued_by})" if d.continued_by else
                                        f" ({d.error})" if d.error else
                                        f" ({d.reason})" if d.reason else ""),
        *([f"phase:      {phase_detail(d)}"] if phase(d) else []),
        f"progress:   epoch {num(d.epoch, '{:.2f}')}, step {steps(d)}",
        f"loss:       {num(d.loss)} (val {num(d.val_loss)}, best {num(d.best_val_loss)})",
        f"elapsed:    {format_duration(d.elapsed_s)}   remaining: "
        f"{format_duration(d.eta_seconds) if d.status in ('running', 'queued') else '-'}"
        f"   finish: {format_clock(d.finish_at) if d.status == 'running' else '-'}",
        f"speed:      {num(d.tokens_per_s, '{:,.0f}')} tokens/s   lr {num(d.lr, '{:.2e}')}",
        f"device:     requested {meta.get('requested_device', '-')}, using "
        f"{sel.get('selected', d.device or '-')} ({sel.get('name', '-')}); "
        f"precision {meta.get('precision', '-')}",
        f"pid:        {d.pid or '-'}",
        *telemetry_lines(d.telemetry),
        f"checkpoint: {d.checkpoint or '-'}",
        f"log:        {d.log_path}",
    ]
    if d.estimate_line():
        lines.append(f"step time:  {d.estimate_line()}")
    if d.anomalies:
        lines.append(f"anomalies:  {d.anomalies} ({d.rollbacks or 0} rollbacks); "
                     f"last: {d.last_anomaly}")
    sample = d.last_sample
    if sample:
        lines.append(f"sample:     step {sample['step']:,}, prompt {sample['prompt']!r}:")
        lines += [f"  {ln}" for ln in d.sample_lines()]
    if d.bad_metric_lines:
        lines.append(f"metrics:    {bad_lines_note(d.bad_metric_lines)}")
    if d.log_tail:
        lines.append("last log lines:")
        lines += [f"  {ln}" for ln in d.log_tail]
    return lines


def bad_lines_note(count: int) -> str:
    """What a reader of metrics.jsonl left out (the rest is shown as usual)."""
    return (f"{count} bad line{'s' if count != 1 else ''} of metrics.jsonl skipped "
            "(damaged or edited)")


def unreadable_lines(views: list[RunView]) -> list[str]:
    """Why each unreadable run in a list is so (the list shows the others as usual)."""
    return [f"{v.run_id}: {v.error}" for v in views if v.status == "unreadable"]


def run_detail_text(d: RunDetail) -> str:
    return "\n".join(run_detail_lines(d))


# ---------------------------------------------------------------------------- a launch


def batch_choice_line(choice: BatchChoiceView) -> str:
    tried = ", ".join(
        f"{t['batch_size']}" + ("" if t.get("fits") else " (too big)") +
        (f" {t['tokens_per_s']:,.0f} tok/s" if t.get("tokens_per_s") else "")
        for t in choice.tried)
    return (f"batch size auto: micro-batch {choice.batch_size} x accumulation "
            f"{choice.grad_accum} = global batch {choice.global_batch} "
            f"({choice.method}; tried {tried})")


def estimate_lines(est: DryRunReport) -> list[str]:
    """The dry-run report (``Service.estimate``): what the run would be, and the estimates,
    labelled as such. Its notes are not here: a front end shows them as warnings."""
    arch, ds, mem, dev = est.architecture, est.dataset, est.memory, est.device
    who = f"model {est.model}" if est.model else "a new model"
    lines = [
        f"dry run ({est.kind}, {who}): nothing trained, no run or checkpoint written",
        f"  device:      {dev.get('selected')} ({dev.get('name')}), precision "
        f"{est.precision}",
        f"  data:        {ds.spec}: {ds.train_tokens:,} train tokens, "
        f"{ds.val_tokens:,} val tokens",
        f"  model:       {est.parameters:,} parameters ({est.trainable_parameters:,} "
        f"trainable); {arch['n_layer']} layers, {arch['n_head']} heads, {arch['n_embd']} "
        f"dims, context {arch['block_size']}, vocabulary {arch['vocab_size']:,}",
    ]
    if est.batch_choice:
        lines.append("  " + batch_choice_line(est.batch_choice))
    lines += [
        f"  batch:       micro-batch {est.batch_size} x accumulation {est.grad_accum} "
        f"= {est.global_batch} sequences = {est.tokens_per_step:,} tokens per step",
        f"  steps:       {est.steps_per_epoch:,} per epoch; {est.start_step:,} -> "
        f"{est.total_steps:,} ({est.steps:,} to train)",
        f"  memory (estimate, {mem.device_type}): {format_bytes(mem.total)} = weights "
        f"{format_bytes(mem.weights)} + gradients {format_bytes(mem.gradients)} + AdamW "
        f"{format_bytes(mem.optimizer)} + activations {format_bytes(mem.activations)}; "
        f"{format_bytes(mem.available)} available",
    ]
    t = est.time
    if t is None:
        lines.append("  time:        not measured")
    else:
        evals = (f" incl. {t.evals} evaluation(s) of {format_duration(t.eval_time_s)}"
                 if t.evals and t.eval_time_s is not None else "")
        lines.append(f"  time (estimate from {t.timed_steps} timed steps after "
                     f"{t.warmup_steps} warm-up): {t.step_time_s:.3f} s per step "
                     f"({t.tokens_per_s:,.0f} tok/s); {format_duration(t.epoch_time_s)} per "
                     f"epoch; {format_duration(t.run_time_s)} for the run{evals}")
    return lines + (profile_lines(est.profile) if est.profile is not None else [])


def profile_lines(profile: ProfileView) -> list[str]:
    """``--profile``'s values, each with its reason; one an option replaced says by which."""
    lines = [f"  profile:     {profile.name}: {profile.description}"]
    width = max(len(v.key) for v in profile.values)
    for v in profile.values:
        if v.overridden_by:
            value = _value(v.used)
            why = f"overridden by {v.overridden_by}; the profile's {_value(v.value)}: {v.why}"
        else:
            value, why = _value(v.value), v.why
        lines.append(f"    {v.key:<{width}} = {value}  # {why}")
        if v.note and not v.overridden_by:
            lines.append(f"    {'':<{width}}   ({v.note})")
    return lines


def _value(value: Any) -> str:
    """A config value as the profile's YAML writes it."""
    if isinstance(value, list):
        return "[" + ", ".join(str(x) for x in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------- a model


def describe_tokenizer(tok: dict[str, Any] | None) -> str:
    """'char, 66 tokens' (a model's recorded tokenizer)."""
    if not tok:
        return "-"
    size = tok.get("vocab_size")
    return f"{tok.get('kind', '?')}, {size:,} tokens" if isinstance(size, int) else \
        str(tok.get("kind", "?"))


def describe_shape(arch: dict[str, Any] | None) -> str:
    """A model's recorded shape in words (``ModelShape.describe``: keys an older checkpoint
    lacks read as GPT-2's); "-" when none is recorded."""
    if not arch:
        return "-"
    from llm_trainer.model.shape import ModelShape

    return ModelShape.from_stored(arch).describe()


def optimizer_lines(config: dict[str, Any] | None) -> list[str]:
    t = (config or {}).get("train") or {}
    if t.get("optimizer", "adamw") != "muon":
        return []
    return [f"optimizer:   muon (lr {t.get('muon_lr'):g}, {t.get('muon_ns_steps', 5)} "
            f"Newton-Schulz steps) + adamw (lr {t.get('lr'):g})"]


def finetune_lines(config: dict[str, Any] | None) -> list[str]:
    ft = (config or {}).get("finetune") or {}
    if not ft.get("init_from"):
        return []
    how = (f"LoRA r={ft['lora_r']} alpha={ft['lora_alpha']:g} on "
           f"{', '.join(ft['lora_targets'])}" if ft.get("lora_r") else "full fine-tune")
    if ft.get("freeze_layers"):
        how += f", first {ft['freeze_layers']} blocks frozen"
    return [f"imported:    {ft['init_from']} ({how})"]


# ---------------------------------------------------------------------------- data prepare


def stage_name(stage: str | None) -> str:
    """What a preparation is doing: 'building the vocabulary', 'tokenizing'."""
    return STAGE_WORDS.get(stage or "", stage or "preparing data")


def prepare_rates(p: Any) -> str:
    """'85.2 MB/s, 1,234,567 tok/s, ETA 1m20s' of a ``data.prepare.PrepareProgress`` (what
    is known of it yet)."""
    parts = []
    if p.mb_per_s is not None:
        parts.append(f"{p.mb_per_s:,.1f} MB/s")
    if p.stage == "tokenizing" and p.tokens_per_s is not None:
        parts.append(f"{p.tokens_per_s:,.0f} tok/s")
    if p.eta_s is not None:
        parts.append(f"ETA {format_duration(p.eta_s)}")
    return ", ".join(parts)


def prepare_line(p: Any) -> str:
    """'tokenizing 43% (85.2 MB/s, 1,234,567 tok/s, ETA 1m20s)': a progress line where no
    bar can be drawn."""
    done = p.fraction
    head = stage_name(p.stage) + ("" if done is None else f" {math.floor(done * 100):.0f}%")
    rates = prepare_rates(p)
    return f"{head} ({rates})" if rates else head


def hold_out_text(hold_out: dict[str, Any]) -> str:
    """How the validation split was chosen, in words, from the manifest's record (``rule``,
    and the cap on held-out tokens when it was reached)."""
    rule = hold_out.get("rule") or "-"
    cap = hold_out.get("val_max_tokens")
    if hold_out.get("capped") and cap:
        rule += f"; capped at {cap:,} tokens (data.val_max_tokens), the rest trains"
    return rule


def prepared_lines(v: PreparedData) -> list[str]:
    """The summary of `data prepare`."""
    if v.from_cache:
        head = f"already prepared: {v.description} (read from the cache in {v.seconds:.1f} s)"
    else:
        rate = f", {v.mb_per_s:,.1f} MB/s" if v.mb_per_s is not None else ""
        resumed = (f"; {v.resumed_shards} of {v.shards} shards were kept from an interrupted "
                   f"preparation" if v.resumed_shards else "")
        head = f"prepared {v.description} in {v.seconds:.1f} s ({v.bytes / 1e6:,.1f} MB of " \
               f"text{rate}){resumed}"
    tok = v.tokenizer
    return [
        head,
        f"  cache:      {v.cache_dir}",
        f"  shards:     {v.shards} ({v.dtype})",
        f"  tokenizer:  {describe_tokenizer(tok)}",
        f"  train:      {v.train_tokens:,} tokens in {v.train_documents:,} documents",
        f"  val:        {v.val_tokens:,} tokens in {v.val_documents:,} documents",
        f"  val split:  {hold_out_text(v.hold_out)}",
    ]


def prepare_stopped_line(kept: int | None, total: int | None) -> str:
    """What `data prepare` says when Ctrl-C stopped it."""
    if kept is None:
        shards = "the finished shards kept"
    elif total:
        shards = f"{kept} of about {total} shards kept"
    else:
        shards = f"{kept} shard{'s' if kept != 1 else ''} kept"
    return f"stopped; {shards}; run the same command to resume"
