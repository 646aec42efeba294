"""What every command module shares: the Typer apps, the global options, the service and
output."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
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


def own_command(*args: str) -> str:
    """``llm-trainer ARGS`` as the user can paste it into the shell they ran this from: the
    program as they called it (``llm-trainer`` only when that name on their PATH is this
    program; ``.venv/bin/llm-trainer`` after ``make run``; ``python -m llm_trainer``), with
    ``--home`` when the home is not the current folder, each word quoted for the shell."""
    from llm_trainer.service import resolve_home

    prog = _program()
    home = resolve_home(STATE["home"])
    where = ["--home", str(home)] if home != Path.cwd().resolve() else []
    return shlex.join([*prog, *where, *args])


def _program() -> list[str]:
    on_path = shutil.which("llm-trainer")
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "llm-trainer":  # the console script, as the shell found it
        if not os.path.exists(argv0) or (on_path and os.path.samefile(on_path, argv0)):
            return ["llm-trainer"]
        return [argv0]
    # python -m llm_trainer: the name is enough when it is this interpreter's own script
    if on_path and os.path.samefile(os.path.dirname(on_path), os.path.dirname(sys.executable)):
        return ["llm-trainer"]
    return [sys.executable, "-m", "llm_trainer"]


def rich_console(err: bool = False):
    """Rich console that never parses markup in our strings; wide when not a terminal (pipes,
    logs) so tables keep every column there, unless ``COLUMNS`` says how wide."""
    from rich.console import Console

    stream = sys.stderr if err else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS", "").isdigit() else 200
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
