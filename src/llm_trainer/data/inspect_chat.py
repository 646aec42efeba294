"""`data inspect` on chat data: the conversation format and why, turns per conversation,
prompt and response lengths in tokens, examples longer than seq_len, the malformed rows (each
with its line and a suggestion) and what ``data.on_bad_rows`` would do with them; and
``--show-template``: the first conversations rendered with the template, the trained text
marked.

What is measured is what training trains on: each row normalised into messages
(``chat.to_messages``), rendered with the template, encoded with the tokenizer the run would
use (with the template's markers as single tokens, ``with_chat_tokens``), and split into the
trained tokens (the response: ``encode_conversation``'s mask, ``train.loss_on``) and the rest
(the prompt: system and user turns, the template's markers). Every row is read and checked
(bad rows are counted exactly); lengths are measured on the rows ``data.inspect`` measures (all
of them, or every n-th past the sample size), kept in seeded reservoirs for the percentiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.data.chat import (
    BadRow,
    ChatTemplate,
    Message,
    bad_rows_verdict,
    check_renders,
    encode_conversation,
    to_messages,
)
from llm_trainer.data.spec import ChatRow, Document, TextSource, file_format

BAD_ROWS_SHOWN = 10  # malformed rows listed with their line and suggestion (all are counted)
MARK_OPEN, MARK_CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧ around the trained text in --show-template


@dataclass
class BadRowSeen:
    split: str  # train | val
    row: int  # 1-based, in its table (ChatRow.number)
    file: str | None  # the JSON lines file it is in, where known ...
    line: int | None  # ... and its line there
    problem: str
    suggestion: str

    @property
    def where(self) -> str:
        return (f"line {self.line} of {self.file}" if self.line is not None else
                f"row {self.row} of the {self.split} split")


@dataclass
class ChatStats:
    format: str  # messages | sharegpt | alpaca | prompt_completion
    reason: str  # why, in words
    template: str  # chatml | hf
    loss_on: str  # assistant | all
    rows: int = 0  # rows read, in both splits
    conversations: int = 0  # the usable ones
    measured: int = 0  # conversations measured (all, unless the data was sampled)
    turns: dict[str, int] = field(default_factory=dict)  # min, median, max: user + assistant
    prompt_tokens: dict[str, int] = field(default_factory=dict)  # min, median, p95, max
    response_tokens: dict[str, int] = field(default_factory=dict)  # the trained tokens
    seq_len: int = 0
    over_seq_len: int = 0  # conversations longer than seq_len tokens (scaled when sampled)
    over_action: str = "truncated"  # what training does with them: truncated | dropped
    bad_rows: int = 0
    bad_shown: list[BadRowSeen] = field(default_factory=list)  # the first BAD_ROWS_SHOWN
    on_bad_rows: str = "auto"
    verdict: str | None = None  # why training would stop on the bad rows; None: it skips them

    @property
    def bad_action(self) -> str:
        """What training does with the bad rows, in words."""
        if not self.bad_rows:
            return "no malformed rows"
        if self.verdict:
            return f"training would stop: {self.verdict}"
        return (f"training would skip these {self.bad_rows:,} rows "
                f"(data.on_bad_rows={self.on_bad_rows})")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["bad_action"] = self.bad_action
        for b, seen in zip(out["bad_shown"], self.bad_shown, strict=True):
            b["where"] = seen.where
        return out


class _Spread:
    """min, max and a reservoir of a stream of numbers (percentiles in bounded memory)."""

    def __init__(self) -> None:
        from llm_trainer.data.inspect import Reservoir

        self.sample, self.low, self.high = Reservoir(), None, None

    def add(self, x: int) -> None:
        self.sample.add(x)
        self.low = x if self.low is None else min(self.low, x)
        self.high = x if self.high is None else max(self.high, x)

    def figures(self, *qs: tuple[str, float]) -> dict[str, int]:
        if self.low is None:
            return {}
        return {"min": self.low, **{k: self.sample.percentile(q) for k, q in qs},
                "max": self.high}


class ChatMeasure:
    """The chat figures of both splits, row by row: ``read`` checks a row (counting a bad
    one), ``measure`` encodes a conversation that ``data.inspect`` measures."""

    def __init__(self, source: TextSource, template: ChatTemplate, *, loss_on: str,
                 seq_len: int, on_bad_rows: str, truncate: bool) -> None:
        fmt = source.chat_format
        assert fmt is not None
        choice = source.columns[0] if source.columns else None
        self.source, self.template, self.fmt = source, template, fmt
        self.stats = ChatStats(fmt, choice.reason if choice else f"{fmt} columns",
                               template.kind, loss_on, seq_len=seq_len,
                               over_action="truncated" if truncate else "dropped",
                               on_bad_rows=on_bad_rows)
        self.turns, self.prompt, self.response = _Spread(), _Spread(), _Spread()
        self.over = 0

    def conversations(self, split: str, docs: Iterable[Document], *,
                      record: bool) -> Iterator[tuple[ChatRow, list[Message]]]:
        """The usable rows of ``docs`` and their messages; ``record``: count the rows, and
        keep the bad ones."""
        for d in docs:
            if not isinstance(d, ChatRow):
                continue
            try:
                messages = to_messages(d.row, self.fmt)
                check_renders(self.template, messages)
            except BadRow as bad:
                if record:
                    self.stats.rows += 1
                    self.stats.bad_rows += 1
                    if len(self.stats.bad_shown) < BAD_ROWS_SHOWN:
                        self.stats.bad_shown.append(BadRowSeen(split, d.number, None, None,
                                                               bad.problem, bad.suggestion))
                continue
            if record:
                self.stats.rows += 1
                self.stats.conversations += 1
                self.turns.add(sum(m.role != "system" for m in messages))
            yield d, messages

    def measure(self, tokenizer, messages: list[Message]) -> None:
        ids, mask = encode_conversation(tokenizer, self.template, messages,
                                        loss_on=self.stats.loss_on)
        trained = int(mask.sum())
        self.stats.measured += 1
        self.prompt.add(len(ids) - trained)
        self.response.add(trained)
        self.over += len(ids) > self.stats.seq_len

    def finish(self) -> ChatStats:
        s = self.stats
        s.turns = self.turns.figures(("median", 0.5))
        s.prompt_tokens = self.prompt.figures(("median", 0.5), ("p95", 0.95))
        s.response_tokens = self.response.figures(("median", 0.5), ("p95", 0.95))
        s.over_seq_len = (round(self.over * s.conversations / s.measured) if s.measured
                          else 0)
        s.verdict = bad_rows_verdict(s.bad_rows, s.rows, s.on_bad_rows)
        _locate(self.source, s.bad_shown)
        return s


def suggestions(s: ChatStats) -> list[str]:
    """Plain-words advice on chat data."""
    from llm_trainer.data.inspect import _pow2_at_least

    out = []
    if s.bad_rows:
        out.append(f"fix the {s.bad_rows:,} malformed rows ({s.bad_rows / max(1, s.rows):.1%}; "
                   "the first are listed with what to do): "
                   + ("training would stop on them (data.on_bad_rows="
                      f"{s.on_bad_rows}), or set data.on_bad_rows=skip to skip them"
                      if s.verdict else "training would skip them"))
    if s.over_seq_len and s.conversations:
        p95 = s.prompt_tokens.get("p95", 0) + s.response_tokens.get("p95", 0)
        out.append(f"{s.over_seq_len:,} conversations ({s.over_seq_len / s.conversations:.1%}) "
                   f"are longer than seq_len {s.seq_len} tokens: training would "
                   f"{'cut' if s.over_action == 'truncated' else 'drop'} them "
                   f"(data.truncate); consider seq_len {_pow2_at_least(p95)}, or shorter "
                   "conversations")
    return out


# ---------------------------------------------------------------------------- lines


def _locate(source: TextSource, bad: list[BadRowSeen]) -> None:
    """The file and line of each bad row of local JSON lines files (a row number counts
    only the lines that hold a row, so blank lines put the two apart). Reads the files
    line by line, up to the last row wanted."""
    for split in {b.split for b in bad}:
        files = _json_lines_files(source, split)
        if not files:
            continue
        wanted = {b.row: b for b in bad if b.split == split}
        top, row = max(wanted), 0
        for f in files:
            with open(f, "rb") as fh:
                for number, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    row += 1
                    if row in wanted:
                        wanted[row].file, wanted[row].line = f.name, number
                    if row >= top:
                        break
            if row >= top:
                break


def _json_lines_files(source: TextSource, split: str) -> list[Path]:
    """The files ``split``'s row numbers count through, when they are all JSON lines (rows
    of other tables have no line of their own); [] otherwise."""
    groups = getattr(source, "groups_of", None)
    if groups is None:
        return []
    files = groups["train"] if source.held_out else groups.get(split, [])
    if not files or any(file_format(f) != "json" or not _starts_with_object(f) for f in files):
        return []
    return list(files)


def _starts_with_object(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith(b"{")


# ---------------------------------------------------------------------------- show-template


@dataclass
class TemplateExample:
    where: str  # "line 3 of chat.jsonl", "row 3 of the train split"
    text: str  # the conversation as the model reads it
    trained: list[tuple[int, int]]  # character spans of text whose tokens are trained
    tokens: int
    trained_tokens: int

    def marked(self) -> str:
        """The text with the trained spans between ``MARK_OPEN`` and ``MARK_CLOSE``."""
        out, pos = [], 0
        for lo, hi in self.trained:
            out += [self.text[pos:lo], MARK_OPEN, self.text[lo:hi], MARK_CLOSE]
            pos = hi
        out.append(self.text[pos:])
        return "".join(out)


@dataclass
class TemplateView:
    spec: str
    format: str
    format_reason: str
    template: str  # chatml | hf
    tokenizer: dict[str, Any]  # spec, kind, vocab_size
    loss_on: str
    legend: str  # what the marks mean
    examples: list[TemplateExample]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for e, ex in zip(out["examples"], self.examples, strict=True):
            e["marked"] = ex.marked()
        return out


def legend(loss_on: str) -> str:
    what = ("every token but the first" if loss_on == "all" else
            "the assistant's replies, each with the end-of-turn marker and what the "
            "template writes after it")
    return (f"the text between {MARK_OPEN} and {MARK_CLOSE} is trained (the loss is computed "
            f"on its tokens; train.loss_on={loss_on}: {what}); the rest is context the model "
            "reads but is not trained to write")


def example(tokenizer, template: ChatTemplate, messages: list[Message], where: str,
            loss_on: str) -> TemplateExample:
    """One conversation rendered, with the character spans of the tokens
    ``encode_conversation`` marks as trained (a run of trained tokens is one span)."""
    ids, mask = encode_conversation(tokenizer, template, messages, loss_on=loss_on)
    text = template.render(messages)
    enc = tokenizer.tok.encode(text, add_special_tokens=False)
    if list(enc.ids) != ids.tolist():  # encode_conversation encodes the rendered text
        raise AssertionError("the rendered text does not encode to the trained ids")
    spans: list[tuple[int, int]] = []
    for i, (lo, hi) in enumerate(enc.offsets):
        if not mask[i]:
            continue
        if spans and i and mask[i - 1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
        else:
            spans.append((lo, hi))
    return TemplateExample(where, text, spans, len(ids), int(mask.sum()))


def row_where(split: str, row: ChatRow, source: TextSource) -> str:
    seen = BadRowSeen(split, row.number, None, None, "", "")
    _locate(source, [seen])
    return seen.where
