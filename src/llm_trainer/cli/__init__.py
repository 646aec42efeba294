"""The ``llm-trainer`` command line: parse -> one service call -> render -> exit code.

Errors users can cause print one plain line and a hint (exit 2 for usage errors, 1 for
failures); tracebacks only with ``--debug``. Nothing heavy is imported here: torch, datasets
and tokenizers load only inside the commands that need them.
"""

import os
import sys

import typer

from llm_trainer.cli.chat import chat
from llm_trainer.cli.common import STATE, app, data_app, echo, models_app
from llm_trainer.cli.data import data_inspect, data_prepare
from llm_trainer.cli.eval import eval_, generate
from llm_trainer.cli.export import models_export
from llm_trainer.cli.models import (
    models_activate,
    models_archive,
    models_delete,
    models_list,
    models_push,
    models_rename,
    models_show,
    models_unarchive,
)
from llm_trainer.cli.runs import compare, status, stop, tui
from llm_trainer.cli.train import resume, train
from llm_trainer.errors import LLMTrainerError, os_error_line

# the order here is the order of `llm-trainer --help`
for command in (train, status, stop, compare, resume, generate, chat):
    app.command()(command)
app.command("eval")(eval_)
app.command()(tui)
for name, command in (("list", models_list), ("show", models_show),
                      ("rename", models_rename), ("archive", models_archive),
                      ("unarchive", models_unarchive), ("delete", models_delete),
                      ("activate", models_activate), ("export", models_export),
                      ("push", models_push)):
    models_app.command(name)(command)
data_app.command("inspect")(data_inspect)
data_app.command("prepare")(data_prepare)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning known errors into one line and an exit code. As the
    program itself (no ``argv``: the console script, ``python -m llm_trainer``) it then leaves
    at once when nothing is left to run at exit (``_leave``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    STATE["standby"] = _standby_for(args) if argv is None else None
    try:
        code = _main(args)
    finally:
        if STATE["standby"] is not None:
            STATE["standby"].close()  # unused (or already handed over: then a no-op)
            STATE["standby"] = None
    if argv is None:
        _leave(code)
    return code


def _standby_for(args: list[str]):
    """For ``train`` / ``resume`` with ``--foreground`` on one process: a worker started now,
    before parsing and planning, so that its imports (torch: seconds) overlap them
    (``launcher.StandbyWorker``); the launch hands it the run, or it is closed unused."""
    from llm_trainer.launcher import IN_PROCESS_ENV, StandbyWorker

    rest = list(args)
    while rest and rest[0].startswith("-"):  # the global options before the command
        rest = rest[2:] if rest[0] == "--home" else rest[1:]
    if not rest or rest[0] not in ("train", "resume"):
        return None
    if not {"--foreground", "-f"} & set(rest) or os.environ.get(IN_PROCESS_ENV) == "1":
        return None
    if any(a.split("=")[0] in ("--dry-run", "--help", "--nproc", "--nnodes") for a in rest):
        return None
    return StandbyWorker()


def _leave(code: int) -> None:
    """Exit without the interpreter's teardown (freeing every module: ~0.1-0.2 s after a
    foreground run, more where torch was imported) when no atexit handler is registered and
    no other thread runs; otherwise return and let the normal exit happen."""
    import atexit
    import threading

    pending = getattr(atexit, "_ncallbacks", lambda: 1)()
    if pending or threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away: its output is lost anyway
        code = code or 1
    os._exit(code)


def _main(args: list[str]) -> int:
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="llm-trainer", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except LLMTrainerError as exc:
        if debug:
            raise
        echo(f"error: {exc}", err=True)
        if exc.hint:
            echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        return 130
    except typer.TyperException as exc:  # click usage errors: bad option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "llm-trainer"
        echo(f"error: {message}", err=True)
        echo(f"hint: see `{where} --help`", err=True)
        return getattr(exc, "exit_code", 2) or 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the disk, not the user's input: what happened, and where
        if debug:
            raise
        echo(f"error: {os_error_line(exc)}", err=True)
        echo("hint: run again with --debug for the traceback", err=True)
        return 1
    except Exception as exc:  # a defect: one line here, the traceback with --debug
        if debug:
            raise
        echo(f"error: internal error ({type(exc).__name__}): {exc}", err=True)
        echo("hint: run again with --debug for the traceback, and report it", err=True)
        return 1


__all__ = ["app", "main"]
