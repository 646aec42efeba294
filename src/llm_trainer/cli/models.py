"""`models ...`: list, show, rename, archive, delete and activate named models."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from llm_trainer.cli.common import echo, rich_console, service
from llm_trainer.cli.format import Column, print_table, when
from llm_trainer.errors import UsageError
from llm_trainer.progress import format_bytes
from llm_trainer.render import (
    describe_shape,
    describe_tokenizer,
    finetune_lines,
    num,
    optimizer_lines,
)


def models_list(
    all_: Annotated[bool, typer.Option("--all", "-a", help="include archived models")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List models; * marks the latest trained, > the active one."""

    svc = service()
    views = svc.list_models(include_archived=all_)
    if json_out:
        echo(json.dumps([v.to_json() for v in views], default=str, indent=2))
        return
    if not views:
        echo("no models yet: train one with `llm-trainer train`")
        return
    rows = []
    unreadable = [v for v in views if v.status == "unreadable"]
    for v in views:
        mark = (">" if v.active else " ") + ("*" if v.latest else " ")
        if v in unreadable:  # nothing is known but its name; why is said below the table
            rows.append([mark, v.name, v.status, *["-"] * 5])
            continue
        status_text = v.status + (f" ({v.problem})" if v.problem else "")
        rows.append([mark, v.name, status_text, num(v.epochs_completed, "{:.2f}"),
                     f"{v.steps_completed:,}", num(v.best_val_loss), format_bytes(v.disk_bytes),
                     when(v.last_trained_at)])
    print_table(rich_console(), [
        Column(""), Column("NAME"), Column("STATUS", whole=False), Column("EPOCHS", drop=2),
        Column("STEPS"), Column("BEST VAL"), Column("SIZE", drop=1),
        Column("LAST TRAINED", drop=3)], rows, box=None, pad_edge=False, header_style="bold")
    for v in unreadable:
        echo(f"{v.name}: {v.problem}")
    latest = next((v.name for v in views if v.latest), None)
    if latest:
        echo(f"latest trained model: {latest}")


def models_show(
    name: Annotated[str, typer.Argument(help="model name")],
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Everything known about a model, with its checkpoints."""
    svc = service()
    view = svc.model_detail(name)
    if json_out:
        echo(json.dumps(view.to_json(), default=str, indent=2))
        return
    lines = [f"name:        {view.name}", f"id:          {view.id}",
             f"status:      {view.status}" + (f" ({view.problem})" if view.problem
                                                 else ""),
             f"created:     {when(view.created_at)}",
             f"trained:     {when(view.last_trained_at)}",
             f"epochs:      {num(view.epochs_completed, '{:.2f}')}   steps: "
             f"{view.steps_completed:,}",
             f"val loss:    best {num(view.best_val_loss)}, latest "
             f"{num(view.latest_val_loss)}",
             f"shape:       {describe_shape(view.architecture)}",
             *optimizer_lines(view.config),
             f"tokenizer:   {describe_tokenizer(view.tokenizer)}",
             *finetune_lines(view.config),
             f"datasets:    {', '.join(d['spec'] for d in view.datasets) or '-'}",
             f"runs:        {', '.join(view.runs) or '-'}",
             f"size:        {format_bytes(view.disk_bytes)}   path: {view.path}",
             "checkpoints:"]
    for c in view.checkpoints:
        lines.append(f"  {c.name}  epoch {c.epoch:.2f}  val {num(c.val_loss)}  "
                     + ("ok" if c.valid else f"BROKEN: {c.problem}"))
    rich_console().print("\n".join(lines))


def models_rename(old: Annotated[str, typer.Argument(help="current name")],
                  new: Annotated[str, typer.Argument(help="new name")]) -> None:
    """Rename a model (refused while it trains); runs keep pointing at it."""
    rec = service().rename_model(old, new)
    echo(f"renamed {old} to {rec.name}")


def models_archive(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Hide a model from lists (its files stay); `models list --all` shows it."""
    service().archive_model(name, True)
    echo(f"archived {name}")


def models_unarchive(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Bring an archived model back."""
    service().archive_model(name, False)
    echo(f"unarchived {name}")


def models_delete(
    name: Annotated[str, typer.Argument(help="model name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")
                   ] = False,
) -> None:
    """Delete a model and all its checkpoints (asks first on a terminal)."""
    svc = service()
    view = svc.model_for_change(name, "delete")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete {name} without confirmation",
                             hint="pass --yes to delete from a script")
        answer = input(f"delete model {name} and its {view.checkpoint_count} "
                       f"checkpoints ({format_bytes(view.disk_bytes)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            echo("kept")
            raise typer.Exit(1)
    svc.delete_model(name)
    echo(f"deleted {name}")


def models_activate(name: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Make this the model that generate, resume and the TUI use when none is named."""
    service().activate_model(name)
    echo(f"active model: {name}")



def models_push(
    name: Annotated[str, typer.Argument(help="model name")],
    repo: Annotated[str, typer.Argument(help="Hugging Face repository: OWNER/NAME")],
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step")] = "latest",
    private: Annotated[bool, typer.Option("--private", help="create the repository private "
                                                            "(an existing one keeps its "
                                                            "visibility)")] = False,
    revision: Annotated[str | None, typer.Option(help="push to this branch (made from main "
                                                      "when missing) instead of main")] = None,
    gguf: Annotated[str | None, typer.Option(help="also upload a GGUF file for llama.cpp, "
                                                  "with weights of this dtype (f32, f16, "
                                                  "q8_0, ...: models export's --dtype)")
                    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Upload a model to the Hugging Face Hub: its transformers folder (`models export
    --format hf`) with a model card. The token is huggingface_hub's own (HF_TOKEN, or
    `hf auth login`): never stored or printed here."""
    r = service().push_model(name, repo, checkpoint=checkpoint, private=private,
                             revision=revision, gguf=gguf)
    if json_out:
        echo(json.dumps(r.to_json(), indent=2))
        return
    for note in r.notes:
        echo(f"warning: {note}", err=True)
    where = f"{r.repo} (branch {r.revision})" if r.revision else r.repo
    echo(f"pushed {r.model} ({r.checkpoint}) to {where}: {len(r.files)} files")
    echo(f"  {r.url}")
    echo(f"  load it: AutoModelForCausalLM.from_pretrained({r.repo!r}"
         + (f", revision={r.revision!r})" if r.revision else ")"))
