"""`data inspect` and `data prepare`: look at a dataset before training on it, and tokenize
it into the token cache ahead of training."""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated

import typer

from llm_trainer.app.options import BY_NAME, DataOptions
from llm_trainer.cli.common import echo, rich_console, service
from llm_trainer.cli.format import Column, print_table
from llm_trainer.cli.options import ConfigOpt, PresetOpt, SetOpt, data_options, parse_sets
from llm_trainer.errors import PrepareStopped, UsageError

PROGRESS_LINE_EVERY_S = 10.0  # without a terminal: a progress line this often (and per stage)


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
    full: Annotated[bool, typer.Option(
        "--full", help="read every split whole, however large (default: a split of more "
                       "than 64 MB of text is sampled, its figures estimated)")] = False,
    sample_mb: Annotated[float | None, typer.Option(
        help="sample a split larger than this many MB (default 64)")] = None,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", metavar="hf:FOLDER",
        help="chat data: read it as a model imported from this Hugging Face folder would "
             "(train --init-from): the folder's tokenizer.json and its own chat template "
             "(default: --tokenizer and ChatML)")] = None,
    show_template: Annotated[int | None, typer.Option(
        "--show-template", min=1, metavar="N",
        help="chat data: print the first N conversations rendered with the chat template, "
             "the trained text marked (--set train.loss_on=all to mark every token), "
             "instead of the report")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Format, text column, splits, documents / characters / tokens, lengths, problems and
    suggestions for a dataset, read the way training would read it; for chat data also the
    conversation format, turns, prompt and response lengths and the malformed rows. A split
    of more than 64 MB of text is sampled (--full reads it all); the report says which
    figures are estimates."""
    if sample_mb is not None and sample_mb <= 0:
        raise UsageError(f"--sample-mb must be > 0 (got {sample_mb:g})",
                         hint="e.g. --sample-mb 16, or --full to read everything")
    if full and sample_mb is not None:
        raise UsageError("--full reads everything: it takes no --sample-mb",
                         hint="use one of them")
    if show_template is not None:
        if seq_len is not None or full:
            raise UsageError("--show-template prints conversations, not the report: it takes "
                             "no --seq-len or --full", hint="run the report without it")
        view = service().template_examples(
            spec, show_template, preset=preset, config_file=config, tokenizer=tokenizer,
            vocab_size=vocab_size, text_column=text_column, sets=parse_sets(set_),
            sample_bytes=round(sample_mb * (1 << 20)) if sample_mb else None,
            init_from=init_from)
        if as_json:
            echo(json.dumps(view.to_json(), indent=2))
        else:
            _show_template(view)
        return
    report = service().inspect_data(spec, preset=preset, config_file=config,
                                     tokenizer=tokenizer, vocab_size=vocab_size,
                                     seq_len=seq_len, text_column=text_column,
                                     sets=parse_sets(set_), full=full,
                                     sample_bytes=(round(sample_mb * (1 << 20))
                                                   if sample_mb else None),
                                     init_from=init_from)
    if as_json:
        echo(json.dumps(report.to_json(), indent=2))
        return
    _report_data(report)


def _report_data(r) -> None:

    echo(f"dataset:    {r.spec}")
    echo(f"format:     {r.format} ({r.format_reason})")
    if r.files and len(r.files) > 1:
        for f in r.files[:12]:
            echo(f"  {f.path:<40} {f.format:<8} {f.split}")
        if len(r.files) > 12:
            echo(f"  ... and {len(r.files) - 12} more files")
    if r.chat is not None:
        echo(f"chat:       {r.chat.format} ({r.chat.reason}); {_template_name(r.chat.template)}"
             f"; loss on {r.chat.loss_on}")
    if r.text_column:
        others = [c for c in r.column_candidates if c != r.text_column]
        echo(f"text:       column {r.text_column!r} ({r.column_reason})"
             + (f"; other text columns: {', '.join(others)}" if others else ""))
    tok = r.tokenizer
    where = "the sample of training" if r.splits[0].sampled else "training"
    on = tok["trained_on"] or ""
    trained = f"; trained on {on}" if "sample" in on or "first" in on else ""
    echo(f"tokenizer:  {tok['spec']} ({tok['kind']}, {tok['vocab_size']:,} tokens, "
         f"{tok['used']:,} used in {where}{trained})")
    if r.sampled:
        echo("sampled:    the figures marked ~ are estimates from a sample")
    rows = []
    for s in r.splits:
        def fig(n: int, s=s) -> str:
            return f"~{n:,}" if s.sampled and n else f"{n:,}"

        rows.append([s.name, s.origin + (f" ({s.share:.1%} read)" if s.sampled else ""),
                     fig(s.documents), fig(s.characters), fig(s.tokens),
                     f"{s.median_tokens:,}", f"{s.p90_tokens:,}", fig(s.empty),
                     fig(s.duplicates), fig(s.undecodable_bytes), fig(s.nonprintable)])
    figure = {"justify": "right"}
    print_table(rich_console(), [
        Column("split"), Column("from", whole=False), Column("documents", **figure),
        Column("characters", drop=4, **figure), Column("tokens", **figure),
        Column("median", drop=3, **figure), Column("p90", drop=2, **figure),
        Column("empty", drop=5, **figure), Column("duplicates", drop=6, **figure),
        Column("bad bytes", drop=7, **figure), Column("control chars", drop=8, **figure)],
        rows, title=f"splits (a document is a {r.document_unit})", title_justify="left")
    if r.histogram:
        read = sum(s.documents_read for s in r.splits)
        echo(f"document length in tokens (all splits; seq_len {r.seq_len}"
             + (f"; the {read:,} documents read" if r.sampled else "") + "):")
        top = max(b["documents"] for b in r.histogram) or 1
        for b in r.histogram:
            bar = "#" * max(1 if b["documents"] else 0, round(30 * b["documents"] / top))
            span = f"{b['from']:,}-{b['to']:,}" if b["to"] != b["from"] else f"{b['from']:,}"
            mark = "  <- seq_len" if b["from"] <= r.seq_len <= b["to"] else ""
            echo(f"  {span:>13} {b['documents']:>9,} {bar}{mark}")
    if r.chat is not None:
        _report_chat(r.chat)
    for line in r.notes:
        echo(f"note: {line}")
    if r.suggestions:
        echo("suggestions:")
        for line in r.suggestions:
            echo(f"  - {line}")
    else:
        echo("suggestions: none; the data looks ready")
    echo(f"(read in {r.seconds:.1f} s)")


def _report_chat(c) -> None:
    def spread(d: dict[str, int], what: str) -> str:
        if not d:
            return "none"
        return " / ".join(f"{d[k]:,}" for k in d) + f" ({' / '.join(d)}){what}"

    some = " (of the conversations measured)" if c.measured < c.conversations else ""
    echo(f"conversations: {c.conversations:,} of {c.rows:,} rows")
    echo(f"turns:         {spread(c.turns, ' user and assistant turns per conversation')}")
    echo(f"prompt:        {spread(c.prompt_tokens, ' tokens: context, not trained' + some)}")
    echo(f"response:      {spread(c.response_tokens, ' tokens: trained' + some)}")
    echo(f"over seq_len:  {c.over_seq_len:,} conversations longer than {c.seq_len} tokens "
         f"(training: {c.over_action})")
    echo(f"bad rows:      {c.bad_rows:,}: {c.bad_action}")
    for b in c.bad_shown:
        echo(f"  {b.where}: {b.problem}; {b.suggestion}")
    if c.bad_rows > len(c.bad_shown):
        echo(f"  ... and {c.bad_rows - len(c.bad_shown):,} more")


def _template_name(kind: str) -> str:
    return "ChatML" if kind == "chatml" else "the model folder's own chat_template"


def _show_template(v) -> None:
    from rich.text import Text

    from llm_trainer.data.inspect_chat import MARK_CLOSE, MARK_OPEN

    console = rich_console()
    echo(f"dataset:    {v.spec}")
    echo(f"chat:       {v.format} ({v.format_reason})")
    tok = v.tokenizer
    echo(f"template:   {_template_name(v.template)}; tokenizer {tok['spec']} ({tok['kind']}, "
         f"{tok['vocab_size']:,} tokens)")
    echo(f"marks:      {v.legend}")
    if not v.examples:
        echo("no usable conversations (data inspect lists the malformed rows)")
    for i, ex in enumerate(v.examples, 1):
        echo()
        echo(f"--- example {i} ({ex.where}): {ex.tokens:,} tokens, {ex.trained_tokens:,} "
             "trained")
        if not console.is_terminal:
            echo(ex.marked())
            continue
        text, pos = Text(), 0  # on a terminal the trained text is highlighted as well
        for lo, hi in ex.trained:
            text.append(ex.text[pos:lo])
            text.append(MARK_OPEN + ex.text[lo:hi] + MARK_CLOSE, style="bold green")
            pos = hi
        text.append(ex.text[pos:])
        console.print(text, soft_wrap=True)


@data_options(after="spec")
def data_prepare(
    spec: Annotated[str, typer.Argument(help=BY_NAME["dataset"].help)],
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    num_proc: Annotated[int | None, typer.Option(
        min=1, help="processes that tokenize (default: the cores this machine's CPU share "
                    "allows)")] = None,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    *,
    options: DataOptions,
) -> None:
    """Tokenize a dataset into token shards ahead of training. An option not given is what
    `train` would use (the --preset's or --config file's, else the config's default), so
    `train` with the same settings starts from these shards. Ctrl-C stops it; the same
    command resumes from the finished shards."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    from rich.text import Text

    from llm_trainer.render import (
        prepare_line,
        prepare_rates,
        prepare_stopped_line,
        prepared_lines,
        stage_name,
    )

    console = rich_console(err=True)
    live = console.is_terminal
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[info]}"), console=console, transient=True,
                   disable=not live)
    task = bar.add_task("preparing data", total=None, info="")
    shown = {"at": 0.0, "stage": None}

    def on_progress(p) -> None:
        if live:
            done = p.fraction
            bar.update(task, description=stage_name(p.stage), info=prepare_rates(p),
                       completed=None if done is None else done * 100,
                       total=None if done is None else 100)
            return
        now = time.monotonic()
        if p.stage != shown["stage"] or now - shown["at"] >= PROGRESS_LINE_EVERY_S:
            shown.update(at=now, stage=p.stage)
            echo(prepare_line(p), err=True)

    def on_log(line: str) -> None:
        if live:
            bar.console.print(Text(line))
        else:
            echo(line, err=True)

    stopping = {"asked": False}

    def on_interrupt(_signum, _frame) -> None:  # the first Ctrl-C stops between pieces of
        stopping["asked"] = True  # work; a second aborts at once
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with bar:
            view = service().prepare_data(
                spec, preset=preset, config_file=config, options=options,
                sets=parse_sets(set_), num_proc=num_proc, progress=on_progress,
                stop=lambda: stopping["asked"], log=on_log)
    except PrepareStopped as exc:
        echo(prepare_stopped_line(getattr(exc, "kept_shards", None),
                                  getattr(exc, "total_shards", None)), err=True)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if as_json:
        echo(json.dumps(view.to_json(), indent=2))
        return
    for line in prepared_lines(view):
        echo(line)
