"""`train` and `resume`: plan a launch, start it, and follow it (--foreground) or report it;
with --dry-run, the estimate."""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from llm_trainer.app.options import LaunchOptions
from llm_trainer.cli.common import STATE, echo, own_command, rich_console, service
from llm_trainer.cli.options import (
    ConfigOpt,
    PresetOpt,
    ProfileOpt,
    SetOpt,
    dist_options,
    launch_options,
    parse_sets,
)
from llm_trainer.errors import LLMTrainerError, UsageError
from llm_trainer.launcher import DistLaunch
from llm_trainer.progress import format_duration
from llm_trainer.render import batch_choice_line, estimate_lines, num, phase_name, phase_rates

if TYPE_CHECKING:
    from llm_trainer.views import DryRunReport, RunView


@dist_options(after="sample")
@launch_options(after="profile")
def train(
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    profile: ProfileOpt = None,
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
    set_: SetOpt = None,
    foreground: Annotated[bool, typer.Option(
        "--foreground", "-f", help="stay attached: live progress; Ctrl-C pauses with a "
                                   "checkpoint")] = False,
    sample: Annotated[int, typer.Option(
        help="with --foreground: tokens to sample from the model at the end (0: none)")] = 200,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="resolve everything and estimate memory and time from a few "
                          "timed steps; train nothing, write no run or checkpoint")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="with --dry-run: machine-readable "
                                                          "output")] = False,
    *,
    options: LaunchOptions,
    auto_batch: bool,
    dist: DistLaunch,
) -> None:
    """Train a model (detached unless --foreground)."""
    from llm_trainer.service import TrainRequest

    if json_out and not dry_run:
        raise UsageError("--json goes with --dry-run", hint="llm-trainer train --dry-run --json")
    req = TrainRequest(options=options, sets=parse_sets(set_), config_file=config,
                       preset=preset, profile=profile, name=name, model=model,
                       data_from=data_from,
                       init_from=init_from, foreground=foreground,
                       command=["llm-trainer", *sys.argv[1:]], dist=dist,
                       auto_batch=auto_batch, final_sample=sample if foreground else 0,
                       standby=STATE["standby"] if foreground else None)
    svc = service()
    if dry_run:
        _report_estimate(svc.estimate(req), json_out)
        return
    launch = svc.train(req)
    if launch.batch_choice:
        echo(batch_choice_line(launch.batch_choice))
    _report_launch(svc, launch, sample)


def _report_estimate(est: DryRunReport, json_out: bool) -> None:
    """A dry run: what the run would be, and the estimates, labelled as such."""
    if json_out:
        echo(json.dumps(est.to_json(), default=str, indent=2))
        return
    for note in est.notes:
        echo(f"warning: {note}", err=True)
    for line in estimate_lines(est):
        echo(line)


def _report_launch(svc, launch, sample: int) -> None:
    for note in launch.notes:
        echo(f"warning: {note}", err=True)
    if not launch.foreground:
        echo(f"started run {launch.run_id} (pid {launch.pid}) training model "
             f"{launch.model_name}")
        echo(f"  follow it:  {own_command('status', launch.run_id, '--watch')}")
        echo(f"  stop it:    {own_command('stop', launch.run_id)}")
        return
    echo(f"run {launch.run_id} (pid {launch.pid}) training model {launch.model_name}; "
         "Ctrl-C pauses it with a checkpoint")
    final, interrupted = _follow(svc, launch)
    status = final.status
    if status == "completed":
        echo(f"completed: model {final.model} at step {final.step:,}; checkpoint "
             f"{final.checkpoint}")
        written = final.last_sample
        if sample > 0 and written and written.get("final") and written.get("step") == final.step:
            _print_sample(final.model, sample, written["text"])
        elif sample > 0 and not interrupted:  # the worker wrote none (several processes)
            _sample(svc, final.model, sample)
    elif status == "paused":
        echo(f"paused at step {final.step:,}; checkpoint {final.checkpoint}")
        echo(f"  continue:   {own_command('resume', final.model)}")
    elif status == "stopped" and not final.error:  # stopped before its first step
        echo(f"{final.reason or 'stopped'}; the finished data shards are kept: run the same "
             "command to resume from them")
        raise typer.Exit(130)
    else:
        code = launch.process.returncode if launch.process is not None else None
        error = UsageError if code == 2 else LLMTrainerError
        raise error(f"run {launch.run_id} {status}: {final.error or 'see its log'}",
                    hint=f"details: {own_command('status', launch.run_id)}")


def _follow(svc, launch) -> tuple[RunView, bool]:
    """Stream the worker's log and draw a progress bar from its state until it exits; the
    last view, and whether Ctrl-C was pressed."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    from rich.text import Text

    console = rich_console()
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
                    preparing = final is not None and phase_name(final) is not None
                    progress.console.print(Text(
                        "aborting..." if interrupts > 1 else
                        "stopping the data preparation: its finished shards are kept (Ctrl-C "
                        "again to abort)" if preparing else
                        "stopping: finishing the current step and writing a checkpoint "
                        "(Ctrl-C again to abort without one)"))
                    events = iter(follower)  # goes on where it was: no log line twice
                    continue
                if kind == "log":
                    if live:
                        progress.console.print(Text(value))
                    else:
                        echo(value)
                elif kind in ("state", "end"):
                    final = value
                    if phase_name(value) is not None:  # preparing data: the bar is its own
                        done = value.phase_progress
                        progress.update(task, completed=None if done is None else done * 100,
                                        total=None if done is None else 100,
                                        info=phase_rates(value),
                                        description=phase_name(value))
                        continue
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
    return (final if final is not None else svc.run_view(launch.run_id)), interrupts > 0



def _sample(svc, model: str, tokens: int) -> None:
    """The sample at the end, drawn here (the worker draws it with the same settings:
    ``inference.samples.final_sample_settings``)."""
    from llm_trainer.service import GenerationSettings

    settings = GenerationSettings(max_new_tokens=tokens, temperature=0.8, top_k=200, seed=0)
    gen = svc.generate(settings, model=model, device="cpu")
    echo(f"--- sample from {model} ({tokens} tokens, temperature 0.8) ---")
    for piece in gen.stream(""):
        sys.stdout.write(piece)
        sys.stdout.flush()
    echo("\n---")


def _print_sample(model: str, tokens: int, text: str) -> None:
    """What ``_sample`` prints, from the text the worker wrote."""
    echo(f"--- sample from {model} ({tokens} tokens, temperature 0.8) ---")
    sys.stdout.write(text)
    echo("\n---")



@dist_options(after="sample")
@launch_options("device", "precision", "tensorboard", "logger", after="restart_schedule")
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
    set_: SetOpt = None,
    foreground: Annotated[bool, typer.Option("--foreground", "-f", help="stay attached")
                          ] = False,
    sample: Annotated[int, typer.Option(help="with --foreground: tokens to sample at the end"
                                        )] = 200,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="resolve everything and estimate memory and time; resume nothing"
    )] = False,
    json_out: Annotated[bool, typer.Option("--json", help="with --dry-run: machine-readable "
                                                          "output")] = False,
    *,
    options: LaunchOptions,
    dist: DistLaunch,
) -> None:
    """Continue a model from a checkpoint exactly where it stopped."""
    if json_out and not dry_run:
        raise UsageError("--json goes with --dry-run",
                         hint="llm-trainer resume MODEL --dry-run --json")
    svc = service()
    if dry_run:
        _report_estimate(svc.estimate_resume(
            target, checkpoint=checkpoint, more_epochs=more_epochs,
            restart_schedule=restart_schedule, options=options, sets=parse_sets(set_)),
            json_out)
        return
    launch = svc.resume(target, checkpoint=checkpoint, more_epochs=more_epochs,
                        restart_schedule=restart_schedule, options=options,
                        sets=parse_sets(set_), foreground=foreground,
                        command=["llm-trainer", *sys.argv[1:]], dist=dist,
                        final_sample=sample if foreground else 0,
                        standby=STATE["standby"] if foreground else None)
    if launch.checkpoint and not foreground:
        echo(f"resuming from {launch.checkpoint}")
    _report_launch(svc, launch, sample)

