"""The ``llm-trainer`` command line: parse -> one service call -> render -> exit code.

Errors users can cause print one plain line and a hint (exit 2 for usage errors, 1 for
failures); tracebacks only with ``--debug``. Nothing heavy is imported here: torch, datasets
and tokenizers load only inside the commands that need them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llm_trainer import __version__
from llm_trainer.errors import LLMTrainerError, UsageError
from llm_trainer.progress import format_bytes, format_clock, format_duration

if TYPE_CHECKING:
    from llm_trainer.views import RunDetail, RunView

app = typer.Typer(
    name="llm-trainer",
    help="Train GPT-style language models on your own machine: detached runs, live status, "
         "exact resume, text generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
models_app = typer.Typer(help="Named models: list, show, rename, archive, delete, activate.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(models_app, name="models")
data_app = typer.Typer(help="Look at a dataset before training on it.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(data_app, name="data")

STATE: dict[str, Any] = {"home": None, "debug": False}


def _service():
    from llm_trainer.service import Service

    return Service(STATE["home"])


def _out(text: str = "", *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _console(err: bool = False):
    """Rich console that never parses markup in our strings; wide when not a terminal (pipes,
    logs) so tables are not truncated there."""
    from rich.console import Console

    stream = sys.stderr if err else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=err, highlight=False, markup=False, emoji=False, width=width)


def _version(value: bool) -> None:
    if value:
        _out(f"llm-trainer {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    home: Annotated[str | None, typer.Option(
        "--home", help="folder for runs/, checkpoints/ and data/ (default: LLM_TRAINER_HOME "
                       "or the current folder)")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    STATE["home"] = home
    STATE["debug"] = debug


# ============================================================================ formatting


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


# ============================================================================ train


def _overrides(flags: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    from llm_trainer.config import parse_set

    out = {k: v for k, v in flags.items() if v is not None}
    out.update(parse_set(sets or []))
    return out


ConfigOpt = Annotated[str | None, typer.Option("--config", help="YAML config file")]
PresetOpt = Annotated[str | None, typer.Option(
    "--preset", help="built-in config: default, tiny, shakespeare-char, small, medium")]
NprocOpt = Annotated[int, typer.Option(
    "--nproc", help="processes on this machine (one per GPU; CPU: gloo), through torchrun")]
NnodesOpt = Annotated[int, typer.Option("--nnodes", help="machines taking part")]
NodeRankOpt = Annotated[int, typer.Option("--node-rank", help="this machine's index (0 first)")]
MasterAddrOpt = Annotated[str | None, typer.Option(
    "--master-addr", help="address of machine 0 (several machines)")]
MasterPortOpt = Annotated[int | None, typer.Option(
    "--master-port", help="a free TCP port on machine 0 (several machines)")]
TensorBoardOpt = Annotated[bool, typer.Option(
    "--tensorboard", help="write TensorBoard logs to runs/<id>/tensorboard/ (needs the "
                          "tensorboard extra); view with: tensorboard --logdir runs/")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="any config key: --set section.key=value (repeatable), e.g. "
                  "--set train.weight_decay=0.05")]


@app.command()
def train(
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    dataset: Annotated[str | None, typer.Option(
        help="wikitext-2 (default), builtin:python-docs, hf:NAME[:CONFIG], a .txt/.md/.jsonl/"
             ".csv/.parquet file, or a folder with train/valid files")] = None,
    epochs: Annotated[int | None, typer.Option(help="passes over the training data")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimizer steps")] = None,
    batch_size: Annotated[str | None, typer.Option(
        help="sequences per micro-batch, or auto: the largest that fits this machine (the "
             "accumulation rises to keep batch_size x grad_accum)")] = None,
    seq_len: Annotated[int | None, typer.Option(help="context length in tokens")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    device: Annotated[str | None, typer.Option(
        help="auto, cpu, cuda, cuda:N, mps, or a GPU name such as A30")] = None,
    strict_device: Annotated[bool, typer.Option(
        "--strict-device", help="fail instead of falling back when the device is missing")
    ] = False,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="micro-batches per step")] = None,
    eval_interval: Annotated[int | None, typer.Option(help="validate every N steps")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    name: Annotated[str | None, typer.Option(help="name of the new model")] = None,
    model: Annotated[str | None, typer.Option(
        help="continue training this existing model (keeps its tokenizer)")] = None,
    data_from: Annotated[str | None, typer.Option(
        help="with --model: train on the dataset this other model was trained on")] = None,
    init_from: Annotated[str | None, typer.Option(
        help="start a new model from another: a model of this home (its latest checkpoint), "
             "a checkpoint folder, or hf:FOLDER, a Hugging Face GPT-2, Llama or Qwen3 folder "
             "on disk (config.json, model.safetensors or pytorch_model.bin, tokenizer.json)"
        )] = None,
    lora: Annotated[str | None, typer.Option(
        help="with --init-from: train LoRA adapters only, e.g. "
             "r=8,alpha=16,dropout=0.05,targets=c_attn,c_proj")] = None,
    freeze_layers: Annotated[int | None, typer.Option(
        help="with --init-from: keep the embeddings and the first N blocks frozen")] = None,
    early_stop_patience: Annotated[int | None, typer.Option(
        help="end the run after N evaluations without improvement (0: never)")] = None,
    sample_interval: Annotated[int | None, typer.Option(
        help="write a sample from the model every N steps to samples.jsonl (0: never)")] = None,
    sample_prompt: Annotated[list[str] | None, typer.Option(
        help="prompt for those samples (repeatable; default: an empty prompt)")] = None,
    on_anomaly: Annotated[str | None, typer.Option(
        help="on a NaN/Inf or a loss spike: rollback (default: last good checkpoint, lower "
             "LR) or stop")] = None,
    tensorboard: TensorBoardOpt = False,
    set_: SetOpt = None,
    foreground: Annotated[bool, typer.Option(
        "--foreground", "-f", help="stay attached: live progress; Ctrl-C pauses with a "
                                   "checkpoint")] = False,
    sample: Annotated[int, typer.Option(
        help="with --foreground: tokens to sample from the model at the end (0: none)")] = 200,
    nproc: NprocOpt = 1,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="resolve everything and estimate memory and time from a few "
                          "timed steps; train nothing, write no run or checkpoint")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="with --dry-run: machine-readable "
                                                          "output")] = False,
) -> None:
    """Train a model (detached unless --foreground)."""
    from llm_trainer.service import DistLaunch, TrainRequest, parse_lora

    auto_batch, batch_size = _batch_size_option(batch_size)
    if json_out and not dry_run:
        raise UsageError("--json goes with --dry-run", hint="llm-trainer train --dry-run --json")

    flags = {**(parse_lora(lora) if lora is not None else {}),
             "finetune.freeze_layers": freeze_layers, "data.dataset": dataset,
             "train.epochs": epochs, "train.max_steps": max_steps,
             "train.batch_size": batch_size, "model.block_size": seq_len, "train.lr": lr,
             "runtime.device": device, "runtime.precision": precision,
             "train.grad_accum": grad_accum, "train.eval_interval": eval_interval,
             "train.seed": seed, "runtime.strict_device": True if strict_device else None,
             "train.early_stop_patience": early_stop_patience,
             "train.sample_interval": sample_interval,
             "train.sample_prompts": list(sample_prompt) if sample_prompt else None,
             "train.on_anomaly": on_anomaly, "runtime.tensorboard": True if tensorboard else None}
    req = TrainRequest(overrides=_overrides(flags, set_), config_file=config, preset=preset,
                       name=name, model=model, data_from=data_from, init_from=init_from,
                       foreground=foreground,
                       command=["llm-trainer", *sys.argv[1:]],
                       dist=DistLaunch(nproc, nnodes, node_rank, master_addr, master_port),
                       auto_batch=auto_batch)
    svc = _service()
    if dry_run:
        _report_estimate(svc.estimate(req), json_out)
        return
    launch = svc.train(req)
    if launch.batch_choice:
        _out(_batch_choice_line(launch.batch_choice))
    _report_launch(svc, launch, sample)


def _batch_size_option(value: str | None) -> tuple[bool, int | None]:
    """``--batch-size``: a whole number >= 1 or ``auto`` -> (auto, number)."""
    if value is None:
        return False, None
    if value.strip().lower() == "auto":
        return True, None
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"--batch-size must be a whole number or auto (got {value!r})"
                         ) from None
    return False, number


def _batch_choice_line(choice: dict[str, Any]) -> str:
    tried = ", ".join(
        f"{t['batch_size']}" + ("" if t.get("fits") else " (too big)") +
        (f" {t['tokens_per_s']:,.0f} tok/s" if t.get("tokens_per_s") else "")
        for t in choice.get("tried", []))
    return (f"batch size auto: micro-batch {choice['batch_size']} x accumulation "
            f"{choice['grad_accum']} = global batch {choice['global_batch']} "
            f"({choice['method']}; tried {tried})")


def _report_estimate(est: dict[str, Any], json_out: bool) -> None:
    """A dry run: what the run would be, and the estimates, labelled as such."""
    if json_out:
        _out(json.dumps(est, default=str, indent=2))
        return
    for note in est.get("notes", []):
        _out(f"warning: {note}", err=True)
    arch, ds, mem, dev = est["architecture"], est["dataset"], est["memory"], est["device"]
    who = f"model {est['model']}" if est.get("model") else "a new model"
    _out(f"dry run ({est['kind']}, {who}): nothing trained, no run or checkpoint written")
    _out(f"  device:      {dev.get('selected')} ({dev.get('name')}), precision "
         f"{est['precision']}")
    _out(f"  data:        {ds['spec']}: {ds['train_tokens']:,} train tokens, "
         f"{ds['val_tokens']:,} val tokens")
    _out(f"  model:       {est['parameters']:,} parameters ({est['trainable_parameters']:,} "
         f"trainable); {arch['n_layer']} layers, {arch['n_head']} heads, {arch['n_embd']} "
         f"dims, context {arch['block_size']}, vocabulary {arch['vocab_size']:,}")
    if est.get("batch_choice"):
        _out("  " + _batch_choice_line(est["batch_choice"]))
    _out(f"  batch:       micro-batch {est['batch_size']} x accumulation {est['grad_accum']} "
         f"= {est['global_batch']} sequences = {est['tokens_per_step']:,} tokens per step")
    _out(f"  steps:       {est['steps_per_epoch']:,} per epoch; {est['start_step']:,} -> "
         f"{est['total_steps']:,} ({est['steps']:,} to train)")
    _out(f"  memory (estimate, {mem['device_type']}): {format_bytes(mem['total'])} = weights "
         f"{format_bytes(mem['weights'])} + gradients {format_bytes(mem['gradients'])} + AdamW "
         f"{format_bytes(mem['optimizer'])} + activations {format_bytes(mem['activations'])}; "
         f"{format_bytes(mem['available'])} available")
    t = est.get("time")
    if t is None:
        _out("  time:        not measured")
        return
    evals = (f" incl. {t['evals']} evaluation(s) of {format_duration(t['eval_time_s'])}"
             if t.get("evals") and t.get("eval_time_s") is not None else "")
    _out(f"  time (estimate from {t['timed_steps']} timed steps after {t['warmup_steps']} "
         f"warm-up): {t['step_time_s']:.3f} s per step ({t['tokens_per_s']:,.0f} tok/s); "
         f"{format_duration(t['epoch_time_s'])} per epoch; "
         f"{format_duration(t['run_time_s'])} for the run{evals}")


def _report_launch(svc, launch, sample: int) -> None:
    for note in launch.notes:
        _out(f"warning: {note}", err=True)
    if not launch.foreground:
        _out(f"started run {launch.run_id} (pid {launch.pid}) training model "
             f"{launch.model_name}")
        _out(f"  follow it:  llm-trainer status {launch.run_id} --watch")
        _out(f"  stop it:    llm-trainer stop {launch.run_id}")
        return
    _out(f"run {launch.run_id} (pid {launch.pid}) training model {launch.model_name}; "
         "Ctrl-C pauses it with a checkpoint")
    final = _follow(svc, launch)
    status = final.status
    if status == "completed":
        _out(f"completed: model {final.model} at step {final.step:,}; checkpoint "
             f"{final.checkpoint}")
        if sample > 0:
            _sample(svc, final.model, sample)
    elif status == "paused":
        _out(f"paused at step {final.step:,}; checkpoint {final.checkpoint}")
        _out(f"  continue:   llm-trainer resume {final.model}")
    else:
        code = launch.process.returncode if launch.process is not None else None
        error = UsageError if code == 2 else LLMTrainerError
        raise error(f"run {launch.run_id} {status}: {final.error or 'see its log'}",
                    hint=f"details: llm-trainer status {launch.run_id}")


def _follow(svc, launch) -> RunView:
    """Stream the worker's log and draw a progress bar from its state until it exits."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    from rich.text import Text

    console = _console()
    live = console.is_terminal
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[info]}"), console=console, transient=True,
                        disable=not live)
    task = progress.add_task("training", total=None, info="starting...")
    final: RunView | None = None  # the follower's last view (it always sends one)
    interrupts = 0
    follower = svc.follow(launch.run_id, process=launch.process)
    events = iter(follower)
    # Ctrl-C must reach this loop even where SIGINT came in ignored (a shell's background job
    # without job control, nohup'd scripts): Python then leaves it ignored, and the worker,
    # which installs its own handler, would pause while this process said nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with progress:
            while True:
                try:
                    kind, value = next(events)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    # the worker got the same SIGINT (same process group): it finishes its step,
                    # writes a checkpoint and exits paused; a second Ctrl-C aborts it
                    interrupts += 1
                    progress.console.print(Text(
                        "stopping: finishing the current step and writing a checkpoint "
                        "(Ctrl-C again to abort without one)" if interrupts == 1 else
                        "aborting..."))
                    events = iter(follower)  # goes on where it was: no log line twice
                    continue
                if kind == "log":
                    if live:
                        progress.console.print(Text(value))
                    else:
                        _out(value)
                elif kind in ("state", "end"):
                    final = value
                    step, total = value.step or 0, value.total_steps
                    info = (f"epoch {_num(value.epoch, '{:.2f}')} loss "
                            f"{_num(value.loss)} lr {_num(value.lr, '{:.1e}')} "
                            f"{_num(value.tokens_per_s, '{:,.0f}')} tok/s ETA "
                            f"{format_duration(value.eta_seconds)}")
                    # without a terminal the worker's own periodic progress lines stand in
                    progress.update(task, completed=step, total=total, info=info,
                                    description=f"step {step:,}/{total or '?'}")
    finally:
        signal.signal(signal.SIGINT, previous)
    return final if final is not None else svc.run_view(launch.run_id)


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


def _sample(svc, model: str, tokens: int) -> None:
    from llm_trainer.inference.generate import GenerationSettings

    gen, _info, _notes = svc.generator(model=model, device="cpu")
    _out(f"--- sample from {model} ({tokens} tokens, temperature 0.8) ---")
    for piece in gen.stream("", GenerationSettings(max_new_tokens=tokens, temperature=0.8,
                                                   top_k=200, seed=0)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    _out("\n---")


# ============================================================================ status / stop


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(help="show one run in detail")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 1.0,
    all_: Annotated[bool, typer.Option("--all", "-a", help="list every run, not the newest 20"
                                       )] = False,
    no_plot: Annotated[bool, typer.Option(
        "--no-plot", help="with RUN: numbers only, no loss plot (none is drawn anyway when "
                          "the output is not a terminal or TERM=dumb)")] = False,
) -> None:
    """List runs (running and newest first), or one run in detail with its loss curve."""
    svc = _service()
    if run_id is not None:
        run_id = svc.require_run(run_id)
    if interval <= 0:
        raise UsageError(f"--interval must be > 0 (got {interval})")

    def render() -> None:
        if run_id is not None:
            d = svc.run_detail(run_id)
            if json_out:
                _out(json.dumps(d.to_json(), default=str, indent=2))
            else:
                _console().print(_detail_text(d))
                if not no_plot:
                    _plot_runs(svc, [(run_id, "")])
            return
        views = svc.list_runs()
        if json_out:
            _out(json.dumps([{k: v for k, v in view.to_json().items() if k != "telemetry"}
                             for view in views], default=str, indent=2))
            return
        if not views:
            _out("no runs yet: start one with `llm-trainer train`")
            return
        shown = views if all_ else views[:20]
        _console().print(_runs_table(shown))
        if len(shown) < len(views):
            _out(f"... {len(views) - len(shown)} older runs (--all to list them)")

    if not watch:
        render()
        return
    try:
        while True:
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            _out(f"llm-trainer status  {time.strftime('%H:%M:%S')}  (Ctrl-C to quit)")
            render()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


@app.command()
def stop(
    run_id: Annotated[str, typer.Argument(help="the run to stop")],
    now: Annotated[bool, typer.Option("--now", help="kill at once, without a checkpoint")
                   ] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="return without waiting")] = False,
) -> None:
    """Pause a run: it finishes its step, writes a checkpoint and exits (or --now: kill it)."""
    svc = _service()
    if not now and not no_wait:
        _out(f"asking run {run_id} to pause: finishing its step and writing a checkpoint...")
    result = svc.stop(run_id, now=now, wait=not no_wait)
    if not result["was_running"]:
        _out(f"run {result['run_id']} is not running (status: {result['status']})")
        raise typer.Exit(1)
    if now:
        _out(f"run {result['run_id']} killed; status stopped (no checkpoint written)")
    elif no_wait:
        _out(f"asked run {result['run_id']} to pause")
    else:
        _out(f"run {result['run_id']} is {result['status']}")


# ============================================================================ compare


def _plot_runs(svc, runs: list[tuple[str, str]]) -> None:
    """The loss curves of ``runs`` ((run_id, label) pairs) on one step axis, sized to the
    terminal; nothing when stdout cannot show a plot."""
    from llm_trainer.plots import (
        COLORS,
        color_wanted,
        curve_series,
        plots_enabled,
        render_plot,
        terminal_plot_size,
    )

    if not plots_enabled(sys.stdout):
        return
    series = []
    for i, (run_id, label) in enumerate(runs):
        series += curve_series(svc.loss_curve(run_id), name=label,
                               color=COLORS[i % len(COLORS)])
    text = render_plot(series, *terminal_plot_size(),
                       title="loss by step (braille line: train, dots: val)",
                       color=color_wanted())
    if text:
        _out(text)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


@app.command()
def compare(
    targets: Annotated[list[str] | None, typer.Argument(
        help="2 to 8 run ids or model names (a model means its latest run)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="numbers only, no loss plot")
                       ] = False,
    rerun: Annotated[str | None, typer.Option(
        "--rerun", metavar="RUN", help="print the `llm-trainer train` command that trains "
                                       "this run's config again (RUN: run id or model)")
    ] = None,
) -> None:
    """Runs side by side: the config keys that differ, val loss (best highlighted), speed,
    steps, time, device, and their loss curves on one plot."""
    from rich.table import Table
    from rich.text import Text

    svc = _service()
    targets = list(targets or [])
    if rerun is not None and not targets:
        cmd = svc.rerun_command(rerun)
        if json_out:
            _out(json.dumps({"run_id": cmd.run_id, "command": cmd.shell, "args": cmd.args,
                             "notes": cmd.notes}, indent=2))
            return
        for note in cmd.notes:
            _out(f"note: {note}", err=True)
        _out(cmd.shell)
        return
    view = svc.compare(targets)
    cmd = svc.rerun_command(rerun) if rerun is not None else None
    if json_out:
        out = view.to_json()
        if cmd is not None:
            out["rerun"] = {"run_id": cmd.run_id, "command": cmd.shell, "args": cmd.args,
                            "notes": cmd.notes}
        _out(json.dumps(out, default=str, indent=2))
        return
    console = _console()
    labels = [f"#{i + 1}" for i in range(len(view.runs))]
    if view.differing_keys:
        table = Table(box=None, pad_edge=False, header_style="bold",
                      title="config keys that differ", title_justify="left")
        table.add_column("KEY", no_wrap=True)
        for label in labels:
            table.add_column(label)
        for key, values in view.differing_keys.items():
            table.add_row(Text(key), *(Text(_cell(v)) for v in values))
        console.print(table)
    else:
        _out("config: the same for every run")
    _out("")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("#", "RUN_ID", "MODEL", "FINAL VAL", "BEST VAL", "TOK/S", "STEPS", "WALL",
                "DEVICE"):
        table.add_column(col, no_wrap=col != "RUN_ID")
    for label, r in zip(labels, view.runs, strict=True):
        best = Text(_num(r.best_val_loss),
                    style="bold green" if r.run_id == view.best_run else "")
        table.add_row(Text(label), Text(r.run_id), Text(r.model), Text(_num(r.final_val_loss)),
                      best, Text(_num(r.tokens_per_s, "{:,.0f}")),
                      Text("-" if r.steps is None else f"{r.steps:,}"),
                      Text(format_duration(r.wall_s)), Text(r.device or "-"))
    console.print(table)
    if view.best_run:
        best_label = labels[[r.run_id for r in view.runs].index(view.best_run)]
        console.print(Text(f"best val loss: {best_label} {view.best_run}", style="bold green"))
    else:
        _out("best val loss: none yet (no run has evaluated)")
    if not no_plot:
        _plot_runs(svc, [(r.run_id, label) for label, r in zip(labels, view.runs, strict=True)])
    if cmd is not None:
        for note in cmd.notes:
            _out(f"note: {note}", err=True)
        _out(f"train {cmd.run_id} again: {cmd.shell}")


# ============================================================================ resume


@app.command()
def resume(
    target: Annotated[str | None, typer.Argument(
        help="model name or run id (default: the active model)")] = None,
    checkpoint: Annotated[str, typer.Option(
        help="latest, best, a step number, or a checkpoint folder")] = "latest",
    more_epochs: Annotated[int | None, typer.Option(
        help="train exactly N epochs beyond the checkpoint (default: finish the plan)")] = None,
    restart_schedule: Annotated[bool, typer.Option(
        "--restart-schedule", help="with --more-epochs: warm up and decay again from the "
                                   "peak LR instead of stretching the current schedule")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N, mps, ...")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16")] = None,
    tensorboard: TensorBoardOpt = False,
    set_: SetOpt = None,
    foreground: Annotated[bool, typer.Option("--foreground", "-f", help="stay attached")
                          ] = False,
    sample: Annotated[int, typer.Option(help="with --foreground: tokens to sample at the end"
                                        )] = 200,
    nproc: NprocOpt = 1,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="resolve everything and estimate memory and time; resume nothing"
    )] = False,
    json_out: Annotated[bool, typer.Option("--json", help="with --dry-run: machine-readable "
                                                          "output")] = False,
) -> None:
    """Continue a model from a checkpoint exactly where it stopped."""
    from llm_trainer.service import DistLaunch

    flags = {"runtime.device": device, "runtime.precision": precision,
             "runtime.tensorboard": True if tensorboard else None}
    if json_out and not dry_run:
        raise UsageError("--json goes with --dry-run",
                         hint="llm-trainer resume MODEL --dry-run --json")
    svc = _service()
    if dry_run:
        _report_estimate(svc.estimate_resume(
            target, checkpoint=checkpoint, more_epochs=more_epochs,
            restart_schedule=restart_schedule, overrides=_overrides(flags, set_)), json_out)
        return
    launch = svc.resume(target, checkpoint=checkpoint, more_epochs=more_epochs,
                        restart_schedule=restart_schedule, overrides=_overrides(flags, set_),
                        foreground=foreground, command=["llm-trainer", *sys.argv[1:]],
                        dist=DistLaunch(nproc, nnodes, node_rank, master_addr, master_port))
    if launch.checkpoint and not foreground:
        _out(f"resuming from {launch.checkpoint}")
    _report_launch(svc, launch, sample)


# ============================================================================ generate


@app.command()
def generate(
    prompt: Annotated[str, typer.Option(help="text to continue (may be empty)")] = "",
    model: Annotated[str | None, typer.Option(help="model name (default: the active model)")
                     ] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="latest, best, a step, or a checkpoint folder")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 200,
    temperature: Annotated[float, typer.Option(help="0 is greedy")] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="sample among the k likeliest")] = 200,
    top_p: Annotated[float | None, typer.Option(help="nucleus sampling mass")] = None,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeats")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="seed for reproducible sampling")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N, mps")] = "auto",
) -> None:
    """Generate text from a trained model, streamed as it is produced."""
    from llm_trainer.inference.generate import GenerationSettings

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty, seed=seed).check()
    svc = _service()
    gen, _info, notes = svc.generator(model=model, checkpoint=checkpoint, device=device)
    for note in notes:
        _out(note if note.startswith("warning") else f"warning: {note}", err=True)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for piece in gen.stream(prompt, settings, on_note=lambda n: _out(n, err=True)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


# ============================================================================ eval


@app.command("eval")
def eval_(
    target: Annotated[str | None, typer.Argument(
        metavar="[MODEL|CHECKPOINT]",
        help="a model name or a checkpoint folder (default: the active model)")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="for a model name: latest (default), best or a step")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="what train --dataset takes (default: the model's own training data)")] = None,
    split: Annotated[str, typer.Option(help="val or test")] = "val",
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="windows per forward pass (default 32, fewer for a large vocabulary)")
                          ] = None,
    device: Annotated[str, typer.Option(help="cpu, auto, cuda, cuda:N, mps")] = "cpu",
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Loss, perplexity and bits per byte over a whole split: every token predicted once,
    in fp32, with the checkpoint's own tokenizer."""
    r = _service().evaluate(target, checkpoint=checkpoint, dataset=dataset, split=split,
                            batch_size=batch_size, device=device)
    for note in r.notes:
        _out(note if note.startswith(("warning", "note")) else f"note: {note}", err=True)
    if json_out:
        _out(json.dumps(r.to_json(), indent=2))
        return
    origin = ("held out: the tail of the text, as training holds it out"
              if r.split_source == "held out" else "the dataset's own split")
    rate = f", {r.tokens / r.seconds:,.0f} tokens/s" if r.seconds > 0 else ""
    _out(f"model:          {r.model} (step {r.step:,}, {r.checkpoint})")
    _out(f"dataset:        {r.dataset_description}, split {r.split} ({origin})")
    _out(f"tokens scored:  {r.tokens:,} in {r.windows:,} windows of {r.block_size} "
         f"({r.tokenizer} tokenizer, batch {r.batch_size}, {r.device}, fp32)")
    _out(f"loss:           {r.loss:.4f} nats/token")
    _out(f"perplexity:     {_num(r.perplexity, '{:.3f}')}")
    _out(f"bits per byte:  {r.bits_per_byte:.4f} ({r.bytes:,} bytes)")
    _out(f"time:           {r.seconds:.2f} s{rate}")


# ============================================================================ tui


@app.command()
def tui() -> None:
    """Open the dashboard: runs, system, training, generation and models (q quits; runs keep
    going)."""
    from llm_trainer.tui.app import run_tui

    run_tui(STATE["home"])


# ============================================================================ models


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


@models_app.command("list")
def models_list(
    all_: Annotated[bool, typer.Option("--all", "-a", help="include archived models")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List models; * marks the latest trained, > the active one."""
    from rich.table import Table
    from rich.text import Text

    svc = _service()
    views = svc.list_models(include_archived=all_)
    if json_out:
        _out(json.dumps([v.to_json() for v in views], default=str, indent=2))
        return
    if not views:
        _out("no models yet: train one with `llm-trainer train`")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("", "NAME", "STATUS", "EPOCHS", "STEPS", "BEST VAL", "SIZE", "LAST TRAINED"):
        table.add_column(col, no_wrap=True)
    for v in views:
        mark = (">" if v.active else " ") + ("*" if v.latest else " ")
        status_text = v.status + (f" ({v.problem})" if v.problem else "")
        table.add_row(*(Text(str(x)) for x in (
            mark, v.name, status_text, _num(v.epochs_completed, "{:.2f}"),
            f"{v.steps_completed:,}", _num(v.best_val_loss), format_bytes(v.disk_bytes),
            _when(v.last_trained_at))))
    _console().print(table)
    latest = next((v.name for v in views if v.latest), None)
    if latest:
        _out(f"latest trained model: {latest}")


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="model name")],
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Everything known about a model, with its checkpoints."""
    svc = _service()
    view = svc.model_detail(name)
    if json_out:
        _out(json.dumps(view.to_json(), default=str, indent=2))
        return
    lines = [f"name:        {view.name}", f"id:          {view.id}",
             f"status:      {view.status}" + (f" ({view.problem})" if view.problem
                                                 else ""),
             f"created:     {_when(view.created_at)}",
             f"trained:     {_when(view.last_trained_at)}",
             f"epochs:      {_num(view.epochs_completed, '{:.2f}')}   steps: "
             f"{view.steps_completed:,}",
             f"val loss:    best {_num(view.best_val_loss)}, latest "
             f"{_num(view.latest_val_loss)}",
             f"shape:       {_describe_shape(view.architecture)}",
             *_optimizer_lines(view.config),
             f"tokenizer:   {_describe_tokenizer(view.tokenizer)}",
             *_finetune_lines(view.config),
             f"datasets:    {', '.join(d['spec'] for d in view.datasets) or '-'}",
             f"runs:        {', '.join(view.runs) or '-'}",
             f"size:        {format_bytes(view.disk_bytes)}   path: {view.path}",
             "checkpoints:"]
    for c in view.checkpoints:
        lines.append(f"  {c.name}  epoch {c.epoch:.2f}  val {_num(c.val_loss)}  "
                     + ("ok" if c.valid else f"BROKEN: {c.problem}"))
    _console().print("\n".join(lines))


@models_app.command("rename")
def models_rename(old: Annotated[str, typer.Argument(help="current name")],
                  new: Annotated[str, typer.Argument(help="new name")]) -> None:
    """Rename a model (refused while it trains); runs keep pointing at it."""
    rec = _service().rename_model(old, new)
    _out(f"renamed {old} to {rec.name}")


@models_app.command("archive")
def models_archive(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Hide a model from lists (its files stay); `models list --all` shows it."""
    _service().archive_model(name, True)
    _out(f"archived {name}")


@models_app.command("unarchive")
def models_unarchive(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Bring an archived model back."""
    _service().archive_model(name, False)
    _out(f"unarchived {name}")


@models_app.command("delete")
def models_delete(
    name: Annotated[str, typer.Argument(help="model name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")
                   ] = False,
) -> None:
    """Delete a model and all its checkpoints (asks first on a terminal)."""
    svc = _service()
    view = svc.model_for_change(name, "delete")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete {name} without confirmation",
                             hint="pass --yes to delete from a script")
        answer = input(f"delete model {name} and its {view.checkpoint_count} "
                       f"checkpoints ({format_bytes(view.disk_bytes)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            _out("kept")
            raise typer.Exit(1)
    svc.delete_model(name)
    _out(f"deleted {name}")


@models_app.command("activate")
def models_activate(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Make this the model that generate, resume and the TUI use when none is named."""
    _service().activate_model(name)
    _out(f"active model: {name}")


@models_app.command("export")
def models_export(
    name: Annotated[str | None, typer.Argument(help="model name (default: the active one)")
                    ] = None,
    out: Annotated[str, typer.Option("--out", help="folder to write (a .gguf file for gguf)")
                   ] = "",
    fmt: Annotated[str, typer.Option("--format", help="hf (transformers GPT-2), safetensors, "
                                                      "gguf (llama.cpp) or ollama")] = "hf",
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step")] = "latest",
    dtype: Annotated[str | None, typer.Option(help="gguf/ollama weights: f32 (default) or f16")
                     ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite: write into a non-empty "
                                                        "folder, or replace a .gguf file")
                     ] = False,
) -> None:
    """Write a model for other tools: a Hugging Face folder (GPT-2, Llama or Qwen3), bare
    safetensors, a GGUF file for llama.cpp, or an Ollama folder (model.gguf + Modelfile)."""
    import shlex

    if not out:
        example = {"gguf": "exports/my-model.gguf"}.get(fmt, "exports/my-model")
        raise UsageError("--out is required", hint=f"e.g. --out {example}")
    path, info, notes = _service().export_model(name, out, fmt, checkpoint=checkpoint,
                                                overwrite=force, dtype=dtype)
    for note in notes:
        _out(f"warning: {note}", err=True)
    model = info.path.parent.name
    what = f"{fmt} ({dtype or 'f32'})" if fmt in ("gguf", "ollama") else fmt
    _out(f"exported {model} ({info.path.name}) as {what} to {path}")
    if fmt == "hf":
        _out(f"  load it: AutoModelForCausalLM.from_pretrained({str(path)!r})")
    elif fmt == "gguf":  # learned positions: keep llama.cpp's context at the model's
        ctx = json.loads((info.path / "config.json").read_text())["architecture"]["block_size"]
        _out(f"  run it: llama-cli -m {shlex.quote(str(path))} -c {ctx} -n {ctx // 2} "
             f'-p "Once upon a time"')
    elif fmt == "ollama":
        _out(f"  add it to Ollama: ollama create {shlex.quote(model)} -f "
             f"{shlex.quote(str(path / 'Modelfile'))}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning known errors into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="llm-trainer", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except LLMTrainerError as exc:
        if debug:
            raise
        _out(f"error: {exc}", err=True)
        if exc.hint:
            _out(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _out("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        _out("interrupted", err=True)
        return 130
    except typer.TyperException as exc:  # click usage errors: bad option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "llm-trainer"
        _out(f"error: {message}", err=True)
        _out(f"hint: see `{where} --help`", err=True)
        return getattr(exc, "exit_code", 2) or 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["app", "main"]


# ---------------------------------------------------------------------------- data


@data_app.command("inspect")
def data_inspect(
    spec: Annotated[str | None, typer.Argument(
        help="what --dataset takes: a file, a folder, hf:NAME[:CONFIG], wikitext-2, "
             "builtin:python-docs (default: the config's dataset)")] = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    tokenizer: Annotated[str | None, typer.Option(
        help="bpe, char, byte or a tokenizer.json (default: the config's)")] = None,
    vocab_size: Annotated[int | None, typer.Option(help="BPE vocabulary size")] = None,
    seq_len: Annotated[int | None, typer.Option(
        help="context length the suggestions assume")] = None,
    text_column: Annotated[str | None, typer.Option(help="text column of a table")] = None,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Format, text column, splits, documents / characters / tokens, lengths, problems and
    suggestions for a dataset, read the way training would read it."""
    flags = {"data.tokenizer": tokenizer, "data.vocab_size": vocab_size,
             "model.block_size": seq_len, "data.text_column": text_column}
    report = _service().inspect_data(spec, preset=preset, config_file=config,
                                     overrides=_overrides(flags, set_))
    if as_json:
        _out(json.dumps(report.to_json(), indent=2))
        return
    _report_data(report)


def _report_data(r) -> None:
    from rich.table import Table

    _out(f"dataset:    {r.spec}")
    _out(f"format:     {r.format} ({r.format_reason})")
    if r.files and len(r.files) > 1:
        for f in r.files[:12]:
            _out(f"  {f.path:<40} {f.format:<8} {f.split}")
        if len(r.files) > 12:
            _out(f"  ... and {len(r.files) - 12} more files")
    if r.text_column:
        others = [c for c in r.column_candidates if c != r.text_column]
        _out(f"text:       column {r.text_column!r} ({r.column_reason})"
             + (f"; other text columns: {', '.join(others)}" if others else ""))
    tok = r.tokenizer
    _out(f"tokenizer:  {tok['spec']} ({tok['kind']}, {tok['vocab_size']:,} tokens, "
         f"{tok['used']:,} used in training)")
    table = Table(title=f"splits (a document is a {r.document_unit})", title_justify="left")
    for col in ("split", "from", "documents", "characters", "tokens", "median", "p90",
                "empty", "duplicates", "bad bytes", "control chars"):
        table.add_column(col, justify="left" if col in ("split", "from") else "right")
    for s in r.splits:
        table.add_row(s.name, s.origin, f"{s.documents:,}", f"{s.characters:,}",
                      f"{s.tokens:,}", f"{s.percentile(0.5):,}", f"{s.percentile(0.9):,}",
                      f"{s.empty:,}", f"{s.duplicates:,}", f"{s.undecodable_bytes:,}",
                      f"{s.nonprintable:,}")
    _console().print(table)
    if r.histogram:
        _out(f"document length in tokens (all splits; seq_len {r.seq_len}):")
        top = max(b["documents"] for b in r.histogram) or 1
        for b in r.histogram:
            bar = "#" * max(1 if b["documents"] else 0, round(30 * b["documents"] / top))
            span = f"{b['from']:,}-{b['to']:,}" if b["to"] != b["from"] else f"{b['from']:,}"
            mark = "  <- seq_len" if b["from"] <= r.seq_len <= b["to"] else ""
            _out(f"  {span:>13} {b['documents']:>9,} {bar}{mark}")
    if r.suggestions:
        _out("suggestions:")
        for line in r.suggestions:
            _out(f"  - {line}")
    else:
        _out("suggestions: none; the data looks ready")
    _out(f"(read in {r.seconds:.1f} s)")
