"""Text the commands print: numbers, tables, a run's detail, a model's shape."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from llm_trainer.progress import format_clock, format_duration

if TYPE_CHECKING:
    from llm_trainer.views import RunDetail, RunView


def _num(value: Any, fmt: str = "{:.4f}") -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _steps(view: RunView) -> str:
    step, total = view.step, view.total_steps
    if step is None:
        return "-"
    return f"{step:,}/{total:,}" if total else f"{step:,}"


def _eta(view: RunView) -> str:
    if not view.active:
        return "-"
    return format_duration(view.eta_seconds)


def _gpu(view: RunView) -> str:
    value = view.gpu_util_pct
    return "n/a" if value is None else f"{value:.0f}%"


def _runs_table(views: list[RunView]):
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("RUN_ID", "MODEL", "STATUS", "EPOCH", "STEP", "LOSS", "VAL LOSS", "DEVICE",
                "ETA", "GPU%"):
        table.add_column(col, no_wrap=True)
    for v in views:
        table.add_row(*(Text(str(x)) for x in (
            v.run_id, v.model, v.status, _num(v.epoch, "{:.2f}"), _steps(v),
            _num(v.loss), _num(v.val_loss), v.device or "-", _eta(v), _gpu(v))))
    return table


def _telemetry_lines(tele: dict[str, Any] | None) -> list[str]:
    from llm_trainer.telemetry import fmt, reason

    def field(key: str, unit: str = "", digits: int = 0) -> str:
        text = fmt(tele, key, unit, digits)
        why = reason(tele, key)
        return f"{text} ({why})" if text == "n/a" and why else text

    ram = f"{fmt(tele, 'ram_used_mb', '', 0)}/{fmt(tele, 'ram_total_mb', ' MB', 0)}"
    if tele and tele.get("gpu_util_pct") is None and tele.get("vram_total_mb") is None:
        gpu = f"n/a ({reason(tele, 'gpu_util_pct') or 'no data'})"
    else:
        gpu = (f"{field('gpu_util_pct', '%')}  VRAM {fmt(tele, 'vram_used_mb')}/"
               f"{fmt(tele, 'vram_total_mb', ' MB')}  temp {fmt(tele, 'gpu_temp_c', ' C')}  "
               f"power {fmt(tele, 'gpu_power_w', ' W')}")
    return [
        f"GPU:        {gpu}",
        f"CPU:        {field('cpu_pct', '%')} of {fmt(tele, 'cpu_cores')} cores, load "
        f"{fmt(tele, 'load_avg')}",
        f"RAM:        {ram}; worker RSS {field('rss_mb', ' MB')}",
    ]


def _detail_text(d: RunDetail) -> str:
    meta = d.meta
    sel = meta.get("selected_device") or {}
    lines = [
        f"run:        {d.run_id}",
        f"model:      {d.model}",
        f"status:     {d.status}" + (f" ({d.error})" if d.error else
                                        f" ({d.reason})" if d.reason else ""),
        f"progress:   epoch {_num(d.epoch, '{:.2f}')}, step {_steps(d)}",
        f"loss:       {_num(d.loss)} (val {_num(d.val_loss)}, best "
        f"{_num(d.best_val_loss)})",
        f"elapsed:    {format_duration(d.elapsed_s)}   remaining: "
        f"{format_duration(d.eta_seconds) if d.status in ('running', 'queued') else '-'}"
        f"   finish: {format_clock(d.finish_at) if d.status == 'running' else '-'}",
        f"speed:      {_num(d.tokens_per_s, '{:,.0f}')} tokens/s   lr {_num(d.lr, '{:.2e}')}",
        f"device:     requested {meta.get('requested_device', '-')}, using "
        f"{sel.get('selected', d.device or '-')} ({sel.get('name', '-')}); "
        f"precision {meta.get('precision', '-')}",
        f"pid:        {d.pid or '-'}",
        *_telemetry_lines(d.telemetry),
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
    if d.log_tail:
        lines.append("last log lines:")
        lines += [f"  {ln}" for ln in d.log_tail]
    return "\n".join(lines)


def _batch_choice_line(choice: dict[str, Any]) -> str:
    tried = ", ".join(
        f"{t['batch_size']}" + ("" if t.get("fits") else " (too big)") +
        (f" {t['tokens_per_s']:,.0f} tok/s" if t.get("tokens_per_s") else "")
        for t in choice.get("tried", []))
    return (f"batch size auto: micro-batch {choice['batch_size']} x accumulation "
            f"{choice['grad_accum']} = global batch {choice['global_batch']} "
            f"({choice['method']}; tried {tried})")



def _describe_tokenizer(tok: dict[str, Any] | None) -> str:
    """'char, 66 tokens' (a model's recorded tokenizer)."""
    if not tok:
        return "-"
    size = tok.get("vocab_size")
    return f"{tok.get('kind', '?')}, {size:,} tokens" if isinstance(size, int) else \
        str(tok.get("kind", "?"))


def _describe_shape(arch: dict[str, Any] | None) -> str:
    """'4 layers x 128 dims, 4 heads, context 64, vocab 66; rope, layernorm, ...' (keys an
    older checkpoint lacks read as GPT-2's)."""
    if not arch:
        return "-"
    from llm_trainer.config import STORED_SHAPE_DEFAULTS

    a = {**STORED_SHAPE_DEFAULTS, **arch}
    heads = f"{a.get('n_head')} heads"
    if a["n_kv_head"] not in (None, a.get("n_head")):
        heads += f" sharing {a['n_kv_head']} key/value heads"
    if a["head_size"] is not None:
        heads += f" of {a['head_size']}"
    block = [f"{a['pos']} positions" if a["pos"] == "learned" else "rope", a["norm"],
             *(["QK-norm"] if a["qk_norm"] else []), a["activation"],
             *([f"MLP width {a['mlp_width']}"] if a["mlp_width"] else []),
             *([f"norm eps {a['norm_eps']:g}"] if a["norm_eps"] != STORED_SHAPE_DEFAULTS[
                 "norm_eps"] else []),
             "tied head" if a["tie_embeddings"] else "untied head",
             "biases" if a["bias"] else "no biases"]
    return (f"{a.get('n_layer')} layers x {a.get('n_embd')} dims, {heads}, "
            f"context {a.get('block_size')}, vocab {a.get('vocab_size')}; {', '.join(block)}")


def _optimizer_lines(config: dict[str, Any] | None) -> list[str]:
    t = (config or {}).get("train") or {}
    if t.get("optimizer", "adamw") != "muon":
        return []
    return [f"optimizer:   muon (lr {t.get('muon_lr'):g}, {t.get('muon_ns_steps', 5)} "
            f"Newton-Schulz steps) + adamw (lr {t.get('lr'):g})"]


def _finetune_lines(config: dict[str, Any] | None) -> list[str]:
    ft = (config or {}).get("finetune") or {}
    if not ft.get("init_from"):
        return []
    how = (f"LoRA r={ft['lora_r']} alpha={ft['lora_alpha']:g} on "
           f"{', '.join(ft['lora_targets'])}" if ft.get("lora_r") else "full fine-tune")
    if ft.get("freeze_layers"):
        how += f", first {ft['freeze_layers']} blocks frozen"
    return [f"imported:    {ft['init_from']} ({how})"]



def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"
