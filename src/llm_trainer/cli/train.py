"""`train` and `resume`: plan a launch, start it, and follow it (--foreground) or report it;
with --dry-run, the estimate."""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llm_trainer.cli.common import (
    ConfigOpt,
    MasterAddrOpt,
    MasterPortOpt,
    NnodesOpt,
    NodeRankOpt,
    NprocOpt,
    PresetOpt,
    SetOpt,
    TensorBoardOpt,
    _console,
    _out,
    _overrides,
    _service,
)
from llm_trainer.errors import LLMTrainerError, UsageError
from llm_trainer.progress import format_duration
from llm_trainer.render import batch_choice_line, estimate_lines, num

if TYPE_CHECKING:
    from llm_trainer.views import RunView


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
        _out(batch_choice_line(launch.batch_choice))
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



def _report_estimate(est: dict[str, Any], json_out: bool) -> None:
    """A dry run: what the run would be, and the estimates, labelled as such."""
    if json_out:
        _out(json.dumps(est, default=str, indent=2))
        return
    for note in est.get("notes", []):
        _out(f"warning: {note}", err=True)
    for line in estimate_lines(est):
        _out(line)


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
                    info = (f"epoch {num(value.epoch, '{:.2f}')} loss "
                            f"{num(value.loss)} lr {num(value.lr, '{:.1e}')} "
                            f"{num(value.tokens_per_s, '{:,.0f}')} tok/s ETA "
                            f"{format_duration(value.eta_seconds)}")
                    # without a terminal the worker's own periodic progress lines stand in
                    progress.update(task, completed=step, total=total, info=info,
                                    description=f"step {step:,}/{total or '?'}")
    finally:
        signal.signal(signal.SIGINT, previous)
    return final if final is not None else svc.run_view(launch.run_id)



def _sample(svc, model: str, tokens: int) -> None:
    from llm_trainer.inference.generate import GenerationSettings

    gen, _info, _notes = svc.generator(model=model, device="cpu")
    _out(f"--- sample from {model} ({tokens} tokens, temperature 0.8) ---")
    for piece in gen.stream("", GenerationSettings(max_new_tokens=tokens, temperature=0.8,
                                                   top_k=200, seed=0)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    _out("\n---")



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

