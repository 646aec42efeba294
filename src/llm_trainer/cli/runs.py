"""`status`, `stop`, `compare` and `tui`: looking at runs, and stopping one."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from llm_trainer.cli.common import STATE, echo, rich_console, service
from llm_trainer.cli.format import Column, cell, print_runs, print_table
from llm_trainer.errors import UsageError
from llm_trainer.progress import format_duration
from llm_trainer.render import bad_lines_note, num, run_detail_text, unreadable_lines


def status(
    run_id: Annotated[str | None, typer.Argument(help="show one run in detail")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 1.0,
    all_: Annotated[bool, typer.Option(
        "--all", "-a", help="list every run: older than the newest 20, and those a resume "
                            "continued (status continued)")] = False,
    no_plot: Annotated[bool, typer.Option(
        "--no-plot", help="with RUN: numbers only, no loss plot (none is drawn anyway when "
                          "the output is not a terminal or TERM=dumb)")] = False,
) -> None:
    """List runs (running and newest first), or one run in detail with its loss curve. A run
    that a resume continued is listed with --all (or shown with its id)."""
    svc = service()
    if run_id is not None:
        run_id = svc.require_run(run_id)
    if interval <= 0:
        raise UsageError(f"--interval must be > 0 (got {interval})")

    def render() -> None:
        if run_id is not None:
            d = svc.run_detail(run_id)
            if json_out:
                echo(json.dumps(d.to_json(), default=str, indent=2))
            else:
                rich_console().print(run_detail_text(d))
                if not no_plot:
                    _plot_runs(svc, [(run_id, "")])
            return
        views = svc.list_runs(include_continued=all_)
        if json_out:
            echo(json.dumps([{k: v for k, v in view.to_json().items() if k != "telemetry"}
                             for view in views], default=str, indent=2))
            return
        if not views:
            echo("no runs yet: start one with `llm-trainer train`")
            return
        shown = views if all_ else views[:20]
        print_runs(rich_console(), shown)
        for line in unreadable_lines(shown):
            echo(line)
        if len(shown) < len(views):
            echo(f"... {len(views) - len(shown)} older runs (--all to list them)")

    if not watch:
        render()
        return
    try:
        while True:
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            echo(f"llm-trainer status  {time.strftime('%H:%M:%S')}  (Ctrl-C to quit)")
            render()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


def stop(
    run_id: Annotated[str, typer.Argument(help="the run to stop")],
    now: Annotated[bool, typer.Option("--now", help="kill at once, without a checkpoint")
                   ] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="return without waiting")] = False,
) -> None:
    """Pause a run: it finishes its step, writes a checkpoint and exits (or --now: kill it)."""
    svc = service()

    def asked(run: str) -> None:
        if not no_wait:
            echo(f"asking run {run} to pause: finishing its step and writing a checkpoint "
                 "(or, while it prepares its data, keeping the finished shards)...")

    result = svc.stop(run_id, now=now, wait=not no_wait, on_asked=asked)
    if not result.was_running:
        echo(f"run {result.run_id} is not running (status: {result.status})")
        raise typer.Exit(1)
    if now:
        echo(f"run {result.run_id} killed; status stopped (no checkpoint written)")
    elif no_wait:
        echo(f"asked run {result.run_id} to pause")
    else:
        echo(f"run {result.run_id} is {result.status}")



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
        echo(text)



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
    from rich.text import Text

    svc = service()
    targets = list(targets or [])
    if rerun is not None and not targets:
        cmd = svc.rerun_command(rerun)
        if json_out:
            echo(json.dumps({"run_id": cmd.run_id, "command": cmd.shell, "args": cmd.args,
                             "notes": cmd.notes}, indent=2))
            return
        for note in cmd.notes:
            echo(f"note: {note}", err=True)
        echo(cmd.shell)
        return
    view = svc.compare(targets)
    cmd = svc.rerun_command(rerun) if rerun is not None else None
    if json_out:
        out = view.to_json()
        if cmd is not None:
            out["rerun"] = {"run_id": cmd.run_id, "command": cmd.shell, "args": cmd.args,
                            "notes": cmd.notes}
        echo(json.dumps(out, default=str, indent=2))
        return
    console = rich_console()
    labels = [f"#{i + 1}" for i in range(len(view.runs))]
    plain = {"box": None, "pad_edge": False, "header_style": "bold"}
    if view.differing_keys:
        print_table(console, [Column("KEY"), *(Column(label) for label in labels)],
                    [[key, *(cell(v) for v in values)]
                     for key, values in view.differing_keys.items()],
                    title="config keys that differ", title_justify="left", **plain)
    else:
        echo("config: the same for every run")
    echo("")
    rows = []
    for label, r in zip(labels, view.runs, strict=True):
        best = Text(num(r.best_val_loss),
                    style="bold green" if r.run_id == view.best_run else "")
        rows.append([label, r.run_id, r.model, num(r.final_val_loss), best,
                     num(r.tokens_per_s, "{:,.0f}"), "-" if r.steps is None else f"{r.steps:,}",
                     format_duration(r.wall_s), r.device or "-"])
    print_table(console, [Column("#"), Column("RUN_ID"), Column("MODEL", drop=2),
                          Column("FINAL VAL", drop=3), Column("BEST VAL"), Column("TOK/S"),
                          Column("STEPS", drop=1), Column("WALL", drop=4),
                          Column("DEVICE", drop=5)], rows, **plain)
    if view.best_run:
        best_label = labels[[r.run_id for r in view.runs].index(view.best_run)]
        console.print(Text(f"best val loss: {best_label} {view.best_run}", style="bold green"))
    else:
        echo("best val loss: none yet (no run has evaluated)")
    for label, r in zip(labels, view.runs, strict=True):
        if r.curve.bad_lines:
            echo(f"{label} {r.run_id}: {bad_lines_note(r.curve.bad_lines)}")
    if not no_plot:
        _plot_runs(svc, [(r.run_id, label) for label, r in zip(labels, view.runs, strict=True)])
    if cmd is not None:
        for note in cmd.notes:
            echo(f"note: {note}", err=True)
        echo(f"train {cmd.run_id} again: {cmd.shell}")



def tui() -> None:
    """Open the dashboard: runs, system, training, generation and models (q quits; runs keep
    going)."""
    from llm_trainer.tui.app import run_tui

    run_tui(STATE["home"])

