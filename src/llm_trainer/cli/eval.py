"""`generate` and `eval`: use a trained model."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from llm_trainer.cli.chat import CompareBaseOpt, SystemOpt, say, show_notes
from llm_trainer.cli.common import echo, service
from llm_trainer.cli.options import generation_options
from llm_trainer.errors import UsageError
from llm_trainer.render import num
from llm_trainer.service import GenerationSettings


@generation_options(after="checkpoint")
def generate(
    prompt: Annotated[str, typer.Option(help="text to continue (may be empty); with --chat, "
                                             "the user's message")] = "",
    model: Annotated[str | None, typer.Option(help="model name (default: the active model)")
                     ] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="latest, best, a step, or a checkpoint folder")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N, mps")] = "auto",
    chat: Annotated[bool, typer.Option(
        "--chat", help="one chat turn: --prompt is the user's message, only the model's "
                       "reply is printed (it ends at the end-of-turn token)")] = False,
    system: SystemOpt = None,
    compare_base: CompareBaseOpt = False,
    *, settings: GenerationSettings,
) -> None:
    """Generate text from a trained model, streamed as it is produced. With --chat: one turn
    of a conversation with a chat model, only its reply printed."""
    if not chat:
        for given, flag in ((system, "--system"), (compare_base, "--compare-base")):
            if given:
                raise UsageError(f"{flag} is for a chat turn", hint="add --chat")
        gen = service().generate(settings, model=model, checkpoint=checkpoint, device=device)
        show_notes(gen.notes)
        sys.stdout.write(prompt)
        sys.stdout.flush()
        for piece in gen.stream(prompt, on_note=lambda n: echo(n, err=True)):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    if not prompt.strip():
        raise UsageError("generate --chat needs the user's message",
                         hint='e.g. llm-trainer generate --chat --prompt "Hello"')
    conversation = service().chat(settings, model=model, checkpoint=checkpoint, device=device,
                                  compare_base=compare_base, system=system)
    show_notes(conversation.notes)
    say(conversation, prompt)


# ============================================================================ eval


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
    r = service().evaluate(target, checkpoint=checkpoint, dataset=dataset, split=split,
                            batch_size=batch_size, device=device)
    for note in r.notes:
        echo(note if note.startswith(("warning", "note")) else f"note: {note}", err=True)
    if json_out:
        echo(json.dumps(r.to_json(), indent=2))
        return
    origin = ("held out: the tail of the text, as training holds it out"
              if r.split_source == "held out" else "the dataset's own split")
    rate = f", {r.tokens / r.seconds:,.0f} tokens/s" if r.seconds > 0 else ""
    echo(f"model:          {r.model} (step {r.step:,}, {r.checkpoint})")
    echo(f"dataset:        {r.dataset_description}, split {r.split} ({origin})")
    echo(f"tokens scored:  {r.tokens:,} in {r.windows:,} windows of {r.block_size} "
         f"({r.tokenizer} tokenizer, batch {r.batch_size}, {r.device}, fp32)")
    echo(f"loss:           {r.loss:.4f} nats/token")
    echo(f"perplexity:     {num(r.perplexity, '{:.3f}')}")
    echo(f"bits per byte:  {r.bits_per_byte:.4f} ({r.bytes:,} bytes)")
    echo(f"time:           {r.seconds:.2f} s{rate}")
