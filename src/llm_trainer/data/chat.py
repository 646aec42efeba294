"""Chat data: conversations in four formats, normalised into messages; chat templates; and a
conversation turned into the ids a model trains on and the positions it is trained to predict.

Formats (detected from a table's columns, ``detect_format``):

- ``messages``: OpenAI-style ``messages``, a list of ``{"role", "content"}`` with ``system``,
  ``user`` and ``assistant`` turns;
- ``sharegpt``: ``conversations``, a list of ``{"from", "value"}`` (``human``/``gpt``/
  ``system``), normalised into messages;
- ``alpaca``: ``instruction``, optional ``input``, ``output`` (one user turn, one answer);
- ``prompt_completion``: ``prompt`` and ``completion`` (one user turn, one answer).

A malformed row (unknown role, empty assistant turn, two user turns in a row, a missing
field...) raises ``BadRow`` with a plain suggestion; the caller counts it with its line.

Templates (``ChatTemplate``): a model imported from a Hugging Face folder keeps the folder's
own jinja ``chat_template``, rendered as transformers renders it (a sandboxed jinja
environment with ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, ``tojson``, the
tokenizer's special tokens as variables); a model of ours gets ChatML, whose two markers
(``<|im_start|>``, ``<|im_end|>``) are added to its tokenizer as single tokens
(``with_chat_tokens``).

Trained positions (``encode_conversation``): each assistant turn's span is found by rendering
the conversation up to that turn with the generation prompt and then with the turn (what the
model must write after the prompt: the reply and its end-of-turn marker); a token is trained
when it starts inside such a span. ``loss_on="all"`` trains every token after the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm_trainer.errors import DataError

if TYPE_CHECKING:
    from llm_trainer.data.tokenizer import TextTokenizer

ROLES = ("system", "user", "assistant")
FORMATS: dict[str, tuple[str, ...]] = {  # format -> the columns that make it (in this order)
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bot": "assistant",
                  "model": "assistant", "system": "system"}

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class BadRow(ValueError):
    """A row that is not a usable conversation: what is wrong, and what to do about it."""

    def __init__(self, problem: str, suggestion: str) -> None:
        super().__init__(problem)
        self.problem, self.suggestion = problem, suggestion


# --------------------------------------------------------------------------- formats


def detect_format(columns: list[str] | tuple[str, ...]) -> str | None:
    """The conversation format a table with these columns holds, None for plain text."""
    have = set(columns)
    return next((name for name, need in FORMATS.items() if set(need) <= have), None)


def format_columns(fmt: str) -> tuple[str, ...]:
    """The columns a row of ``fmt`` is read from (Alpaca's optional ones included)."""
    return {"alpaca": ("instruction", "input", "output", "system")}.get(fmt, FORMATS[fmt])


def to_messages(row: dict[str, Any], fmt: str) -> list[Message]:
    """The row as checked messages, or ``BadRow``."""
    if fmt == "messages":
        messages = [_turn(m, i, "role", "content", None) for i, m in
                    enumerate(_turns(row, "messages", '[{"role": "user", "content": "..."}, '
                                                      '{"role": "assistant", ...}]'))]
    elif fmt == "sharegpt":
        messages = [_turn(m, i, "from", "value", SHAREGPT_ROLES) for i, m in
                    enumerate(_turns(row, "conversations", '[{"from": "human", "value": '
                                                           '"..."}, {"from": "gpt", ...}]'))]
    elif fmt == "alpaca":
        instruction = _text(row, "instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise BadRow("'input' is not text", "make 'input' a string (or leave it out)")
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        system = row.get("system")
        messages = ([Message("system", system)] if isinstance(system, str) and system else []) \
            + [Message("user", prompt), Message("assistant", _text(row, "output"))]
    elif fmt == "prompt_completion":
        messages = [Message("user", _text(row, "prompt")),
                    Message("assistant", _text(row, "completion"))]
    else:
        raise ValueError(f"unknown chat format {fmt!r}")
    check_messages(messages)
    return messages


def check_messages(messages: list[Message]) -> None:
    """The rules a conversation keeps: system turns only first, user and assistant turns
    alternating from a user turn, at least one non-empty assistant turn."""
    if not messages:
        raise BadRow("the conversation is empty", "give it a user turn and an assistant turn")
    body = messages[1:] if messages[0].role == "system" else messages
    previous = None
    for i, m in enumerate(body):
        if m.role == "system":
            raise BadRow("a system turn after the start",
                         "put the system message first, or make it a user turn")
        if m.role == previous:
            raise BadRow(f"two {m.role} turns in a row",
                         f"merge them into one {m.role} turn, or add the missing "
                         f"{'assistant' if m.role == 'user' else 'user'} turn between them")
        if i == 0 and m.role != "user":
            raise BadRow("the conversation does not start with a user turn",
                         "begin with the user's message (a system message may come first)")
        if m.role == "assistant" and not m.content.strip():
            raise BadRow("an empty assistant turn", "write the reply the model should learn, "
                                                     "or drop the turn")
        previous = m.role
    if not any(m.role == "assistant" for m in body):
        raise BadRow("no assistant turn", "add the reply the model should learn")


def _turns(row: dict[str, Any], column: str, shape: str) -> list[Any]:
    turns = row.get(column)
    if turns is None:
        raise BadRow(f"the '{column}' field is missing", f"give every row a '{column}' list")
    if not isinstance(turns, list):
        raise BadRow(f"'{column}' is not a list", f"make it a list of turns: {shape}")
    return turns


def _turn(turn: Any, i: int, role_key: str, text_key: str,
          roles: dict[str, str] | None) -> Message:
    if not isinstance(turn, dict):
        raise BadRow(f"turn {i + 1} is not an object",
                     f"write each turn as {{\"{role_key}\": ..., \"{text_key}\": ...}}")
    role, text = turn.get(role_key), turn.get(text_key)
    if role is None:
        raise BadRow(f"turn {i + 1} has no '{role_key}'", f"add '{role_key}' to every turn")
    if not isinstance(text, str):
        raise BadRow(f"turn {i + 1} has no text in '{text_key}'",
                     f"give every turn a string '{text_key}'")
    allowed = roles or {r: r for r in ROLES}
    if role not in allowed:
        raise BadRow(f"turn {i + 1} has the unknown role {role!r}",
                     f"use one of: {', '.join(sorted(allowed))}")
    return Message(allowed[role], text)


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise BadRow(f"the '{key}' field is missing", f"give every row a '{key}' string")
    if not isinstance(value, str):
        raise BadRow(f"'{key}' is not text", f"make '{key}' a string")
    if not value.strip() and key in ("output", "completion", "instruction", "prompt"):
        raise BadRow(f"'{key}' is empty", f"write the {key} (or drop the row)")
    return value


BAD_ROWS_AUTO_SHARE = 0.01  # data.on_bad_rows auto: skip up to this share of the rows


def bad_rows_verdict(bad: int, total: int, policy: str) -> str | None:
    """Why malformed rows stop training under ``data.on_bad_rows`` (``skip``: never; ``fail``:
    any; ``auto``: more than 1% of the rows), or None when they are skipped. One rule, for
    ``data inspect`` (which says what training would do) and for training itself."""
    if not bad or policy == "skip":
        return None
    share = bad / total if total else 1.0
    if policy == "auto" and share <= BAD_ROWS_AUTO_SHARE:
        return None
    rows = f"{bad:,} of {total:,} rows ({share:.1%}) are not usable conversations"
    if policy == "fail":
        return f"{rows} and data.on_bad_rows is fail"
    return f"{rows}: more than the {BAD_ROWS_AUTO_SHARE:.0%} data.on_bad_rows=auto skips"


# --------------------------------------------------------------------------- templates


class TemplateRefused(DataError):
    """The template raised on a conversation (often on purpose: ``raise_exception('System
    role not supported')``). Preparing data counts that row as a bad row
    (``encode_conversation`` turns this into ``BadRow``); elsewhere it is a user error."""

    def __init__(self, exc: Exception) -> None:
        self.reason = str(exc) or type(exc).__name__
        super().__init__(f"the chat template failed on a conversation: {self.reason}",
                         hint="check the model's chat_template")


@dataclass(frozen=True)
class ChatTemplate:
    """A jinja chat template and the special tokens it is rendered with."""

    source: str
    kind: str = "chatml"  # chatml (ours) | hf (a model folder's own)
    bos_token: str | None = None
    eos_token: str | None = None
    end_of_turn: str = IM_END  # the token that ends an assistant turn (generation stops)
    special_tokens: tuple[str, ...] = (IM_START, IM_END)  # each must be one token

    @classmethod
    def chatml(cls) -> ChatTemplate:
        return cls(CHATML)

    @classmethod
    def from_hf_folder(cls, folder: Path) -> ChatTemplate | None:
        """The folder's own template (``tokenizer_config.json`` ``chat_template``, or
        ``chat_template.jinja``), None when it has none."""
        folder = Path(folder)
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        source = config.get("chat_template")
        if isinstance(source, list):  # named templates: the default one
            source = next((t.get("template") for t in source if t.get("name") == "default"),
                          None)
        jinja_file = folder / "chat_template.jinja"
        if not source and jinja_file.is_file():
            source = jinja_file.read_text(encoding="utf-8")
        if not isinstance(source, str) or not source.strip():
            return None
        bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
        end = IM_END if IM_END in source else (_end_of_turn(source) or eos or IM_END)
        specials = tuple(t for t in (IM_START, IM_END) if t in source)
        return cls(source, "hf", bos, eos, end, specials)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "template": self.source, "bos_token": self.bos_token,
                "eos_token": self.eos_token, "end_of_turn": self.end_of_turn,
                "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChatTemplate:
        return cls(data["template"], data.get("kind", "chatml"), data.get("bos_token"),
                   data.get("eos_token"), data.get("end_of_turn") or IM_END,
                   tuple(data.get("special_tokens") or ()))

    @cached_property
    def _compiled(self):
        return compile_template(self.source)

    def render(self, messages: list[Message] | list[dict], *,
               add_generation_prompt: bool = False) -> str:
        """The conversation as the model reads it (what transformers'
        ``apply_chat_template(..., tokenize=False)`` gives)."""
        plain = [m.to_json() if isinstance(m, Message) else dict(m) for m in messages]
        try:
            return self._compiled.render(
                messages=plain, add_generation_prompt=add_generation_prompt, tools=None,
                documents=None, bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except Exception as exc:  # jinja's TemplateError, or the template's own raise
            raise TemplateRefused(exc) from None

    def trained_spans(self, messages: list[Message]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of what the model writes: each
        assistant turn after its generation prompt, end-of-turn marker included."""
        text = self.render(messages)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, m in enumerate(messages):
            if m.role != "assistant":
                continue
            prompt = self.render(messages[:i], add_generation_prompt=True)
            upto = self.render(messages[:i + 1])
            if text.startswith(upto) and upto.startswith(prompt) and len(prompt) >= cursor:
                spans.append((len(prompt), len(upto)))
                cursor = len(upto)
                continue
            # a template that rewrites earlier turns (e.g. drops reasoning): find the reply
            start = text.find(m.content, cursor)
            if start < 0:
                continue
            end = start + len(m.content)
            if text.startswith(self.end_of_turn, end):
                end += len(self.end_of_turn)
            spans.append((start, end))
            cursor = end
        return text, spans


def compile_template(source: str):
    """The template compiled as transformers compiles it (sandboxed; ``{% generation %}``
    blocks render their body)."""
    from datetime import datetime

    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body) \
                .set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise DataError(f"the chat template is not valid jinja: {exc}",
                        hint="check the model folder's chat_template") from None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _end_of_turn(source: str) -> str | None:
    """The marker a template closes an assistant turn with, for the usual families."""
    for marker in ("<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>"):
        if marker in source:
            return marker
    return None


# --------------------------------------------------------------------------- ids and masks


def with_chat_tokens(tokenizer: TextTokenizer, template: ChatTemplate) -> TextTokenizer:
    """The tokenizer with each of the template's special tokens as one token (added as
    special tokens, at the end of the vocabulary, where missing)."""
    missing = [t for t in template.special_tokens if tokenizer.tok.token_to_id(t) is None]
    if not missing:
        return tokenizer
    from tokenizers import AddedToken

    from llm_trainer.data.tokenizer import TextTokenizer

    copy = TextTokenizer.from_str(tokenizer.to_str(), tokenizer.kind)
    copy.tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                 for t in missing])
    return copy


def stop_ids(tokenizer: TextTokenizer, template: ChatTemplate) -> list[int]:
    """The ids that end a reply: the end-of-turn marker and the end-of-text token."""
    ids = [tokenizer.tok.token_to_id(t) for t in (template.end_of_turn, template.eos_token)
           if t]
    if tokenizer.eot_id is not None:
        ids.append(tokenizer.eot_id)
    return sorted({i for i in ids if i is not None})


def check_renders(template: ChatTemplate, messages: list[Message]) -> None:
    """Raise ``BadRow`` when the template refuses the conversation (``data inspect`` checks
    every row as training will read it)."""
    try:
        template.render(messages)
    except TemplateRefused as refused:
        raise _refused_row(refused) from None


def _refused_row(refused: TemplateRefused) -> BadRow:
    return BadRow(f"the chat template refuses it: {refused.reason}",
                  "rewrite the row in a shape the model's template accepts (e.g. fold a "
                  "system turn into the first user turn), or drop it")


def encode_conversation(tokenizer: TextTokenizer, template: ChatTemplate,
                        messages: list[Message], *,
                        loss_on: str = "assistant") -> tuple[np.ndarray, np.ndarray]:
    """The conversation's ids and, per id, whether it is a trained target (predicted from
    the ids before it): the assistant's tokens, or every token but the first (``all``).
    A conversation the template refuses raises ``BadRow`` (a bad row, counted as any other)."""
    try:
        text, spans = template.trained_spans(messages)
    except TemplateRefused as refused:
        raise _refused_row(refused) from None
    enc = tokenizer.tok.encode(text, add_special_tokens=False)
    ids = np.asarray(enc.ids, dtype=np.int64)
    if loss_on == "all":
        mask = np.ones(len(ids), dtype=bool)
        mask[:1] = False
        return ids, mask
    starts = np.asarray([s for s, _ in enc.offsets], dtype=np.int64)
    mask = np.zeros(len(ids), dtype=bool)
    for lo, hi in spans:
        mask |= (starts >= lo) & (starts < hi)
    return ids, mask


def prompt_ids(tokenizer: TextTokenizer, template: ChatTemplate,
               messages: list[Message]) -> list[int]:
    """The ids to generate a reply from: the conversation and the assistant's prompt."""
    text = template.render(messages, add_generation_prompt=True)
    return tokenizer.tok.encode(text, add_special_tokens=False).ids
