"""`chat`: talk to a chat model, turn by turn, from a terminal or a pipe; and the one turn of
`generate --chat`. The conversation's rules (template, stop tokens, what fits the context)
live in ``app.chat`` and the inference chat session; this module reads lines and prints replies."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from llm_trainer.cli.common import echo, service
from llm_trainer.cli.options import generation_options
from llm_trainer.errors import LLMTrainerError
from llm_trainer.service import GenerationSettings

if TYPE_CHECKING:
    from llm_trainer.app.chat import Chat

COMMANDS = (
    ("/reset", "forget the conversation (the system message stays)"),
    ("/system TEXT", "set the system message (/system alone: none)"),
    ("/save FILE", "write the conversation as one JSON line of messages (a chat dataset row)"),
    ("/help", "this list"),
    ("/exit", "leave (so does Ctrl-D, or the end of piped input)"),
)

SystemOpt = Annotated[str | None, typer.Option(
    "--system", help="the system message the conversation starts with")]
CompareBaseOpt = Annotated[bool, typer.Option(
    "--compare-base", help="also answer with the model it was fine-tuned from (--init-from), "
                           "each reply under its model's name")]


@generation_options(after="compare_base")
def chat(
    model: Annotated[str | None, typer.Argument(
        metavar="MODEL", help="model name (default: the active model)")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="latest, best, a step, or a checkpoint folder")] = None,
    system: SystemOpt = None,
    compare_base: CompareBaseOpt = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N, mps")] = "auto",
    *, settings: GenerationSettings,
) -> None:
    """Talk to a chat model: each line you type is a turn, its reply streams back. Commands:
    /reset, /system TEXT, /save FILE, /help, /exit. Reads a pipe as well as a terminal."""
    conversation = service().chat(settings, model=model, checkpoint=checkpoint, device=device,
                                  compare_base=compare_base, system=system)
    show_notes(conversation.notes)
    names = " and ".join(s.label for s in conversation.sides)
    echo(f"chatting with {names}: /help lists the commands, /exit or Ctrl-D ends", err=True)
    repl(conversation, sys.stdin, prompt=sys.stdin.isatty())


def show_notes(notes: list[str]) -> None:
    for note in notes:
        echo(note if note.startswith(("warning", "note")) else f"warning: {note}", err=True)


def repl(conversation: Chat, lines: TextIO, *, prompt: bool) -> None:
    """Read ``lines`` until /exit or their end; answer each message, run each command.
    ``prompt``: a terminal: "> " before each line, with line editing and history."""
    for line in _read_lines(lines, prompt):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        if text.startswith("/") and not text.startswith("//"):
            if not command(conversation, text):
                return
            continue
        try:
            say(conversation, text.removeprefix("/"))  # "//..." sends a line starting "/"
        except LLMTrainerError as exc:
            echo(f"error: {exc}", err=True)
            if exc.hint:
                echo(f"hint: {exc.hint}", err=True)


def _read_lines(lines: TextIO, prompt: bool) -> Iterator[str]:
    """The lines typed or piped in. At a terminal through ``input`` (readline's editing and
    history where Python has it); Ctrl-C or Ctrl-D at the prompt ends the conversation."""
    if not prompt:
        yield from iter(lines.readline, "")
        return
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (input() then edits lines and keeps a history)
    while True:
        try:
            yield input("> ")
        except (EOFError, KeyboardInterrupt):
            echo()
            return


def command(conversation: Chat, text: str) -> bool:
    """Run one /command; False: leave."""
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit"):
        return False
    if name == "/reset":
        conversation.reset()
        echo("conversation reset", err=True)
    elif name == "/system":
        conversation.set_system(arg)
        echo(f"system message set: {arg}" if arg else "system message removed", err=True)
    elif name == "/save":
        if not arg:
            echo("error: /save needs a file name, e.g. /save chat.jsonl", err=True)
        else:
            try:
                path = conversation.save(arg)
                echo(f"saved {len(conversation.session.messages)} messages to {path}", err=True)
            except LLMTrainerError as exc:
                echo(f"error: {exc}", err=True)
    elif name == "/help":
        width = max(len(c) for c, _ in COMMANDS)
        for cmd, what in COMMANDS:
            echo(f"  {cmd:<{width}}  {what}", err=True)
        echo("  a line starting with // is sent as a message starting with /", err=True)
    else:
        echo(f"error: unknown command {name}: /help lists them", err=True)
    return True


def say(conversation: Chat, text: str, settings: GenerationSettings | None = None) -> None:
    """One turn: each side's reply streamed to stdout (under its name when there are two).
    Ctrl-C stops a reply (what it wrote so far stays in the history)."""
    labelled = len(conversation.sides) > 1
    for side, stream in conversation.answers(text, settings, on_note=lambda n: echo(n, err=True)):
        if labelled:
            echo(f"[{side.label}]")
        try:
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
