"""What every command module shares: the Typer apps, the global options, the service and
output."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from llm_trainer import __version__

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
data_app = typer.Typer(help="Look at a dataset, or tokenize it, before training on it.",
                       no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(data_app, name="data")

STATE: dict[str, Any] = {"home": None, "debug": False, "standby": None}


def service():
    from llm_trainer.service import Service

    return Service(STATE["home"])


def echo(text: str = "", *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def rich_console(err: bool = False):
    """Rich console that never parses markup in our strings; wide when not a terminal (pipes,
    logs) so tables are not truncated there."""
    from rich.console import Console

    stream = sys.stderr if err else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=err, highlight=False, markup=False, emoji=False, width=width)


def _version(value: bool) -> None:
    if value:
        echo(f"llm-trainer {__version__}")
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
