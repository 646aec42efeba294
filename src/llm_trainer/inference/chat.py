"""Talking to a chat model: a conversation kept as messages, rendered with the model's own
template for each reply, and the reply streamed until the model ends its turn.

Why the pieces are as they are:

- The model only ever sees what fits its context. Before each reply the oldest whole
  user/assistant exchanges are left out of the prompt until the conversation (system message
  and the new user turn always kept) leaves room for the reply (``reply_budget``). The
  session keeps every message (``save`` writes the whole conversation); only the prompt is
  trimmed, and ``dropped`` says how many exchanges the last prompt left out.
- A reply ends at the template's end-of-turn marker or the end-of-text token
  (``data.chat.stop_ids``), or at another of its turn markers (a model that opens the next
  turn without closing its own); none of them is part of the reply. A tokenizer that lacks a
  marker as one token (a base model read with its fine-tuned child's template) may still
  write it as text: the reply is cut there too, and text that could be the start of a marker
  is held back until it is known not to be.
- A reply is recorded in the history when its stream ends, also when the reader stops early
  (a cancel): what was shown is what the model said.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from llm_trainer.data.chat import ChatTemplate, Message, prompt_ids, stop_ids
from llm_trainer.errors import UsageError
from llm_trainer.inference.generate import TextGenerator
from llm_trainer.inference.settings import GenerationSettings


def reply_budget(block_size: int, max_new_tokens: int) -> int:
    """The tokens kept free for a reply: what was asked for, at most half the context (a
    long ``--max-new-tokens`` must not push the whole conversation out), at least one."""
    return max(1, min(max_new_tokens, block_size // 2))


def trim_history(system: list[Message], turns: list[Message],
                 fits: Callable[[list[Message]], bool]) -> tuple[list[Message], int]:
    """``turns`` (user/assistant, ending with the new user turn) without their oldest whole
    exchanges until ``fits(system + turns)``; the system message and the last user turn are
    never dropped. Returns the kept turns and how many exchanges were dropped."""
    kept, dropped = list(turns), 0
    while len(kept) > 2 and not fits(system + kept):
        # the oldest exchange: a user turn and the assistant's answer to it
        cut = 2 if kept[1].role == "assistant" else 1
        kept, dropped = kept[cut:], dropped + 1
    return kept, dropped


class ChatSession:
    """One conversation with one model (``generator``), written with ``template``."""

    def __init__(self, generator: TextGenerator, template: ChatTemplate, *,
                 system: str | None = None) -> None:
        self.generator, self.template = generator, template
        self.tokenizer = generator.tokenizer
        # a reply never holds a turn marker: one that opens a turn (ChatML's <|im_start|>)
        # means the model ended its own without saying so
        markers = {template.end_of_turn, template.eos_token, *template.special_tokens} - {None}
        opening = {self.tokenizer.tok.token_to_id(t) for t in template.special_tokens} - {None}
        self.stop = frozenset(stop_ids(self.tokenizer, template)) | opening
        # text that ends a reply when the tokenizer writes it piece by piece
        self.stop_text = tuple(sorted(t for t in markers if t))
        self.system: str | None = system or None
        self.turns: list[Message] = []
        self.dropped = 0  # exchanges the last prompt left out (they did not fit the context)
        self.last_prompt: list[Message] = []  # the messages the last reply was written after

    @property
    def messages(self) -> list[Message]:
        """The whole conversation: the system message (if any) and every turn."""
        return self._system() + self.turns

    def _system(self) -> list[Message]:
        return [Message("system", self.system)] if self.system else []

    def reset(self) -> None:
        """Forget the turns; the system message stays (``set_system`` changes it)."""
        self.turns, self.dropped, self.last_prompt = [], 0, []

    def set_system(self, text: str | None) -> None:
        """The system message for the replies from now on (empty: none)."""
        self.system = (text or "").strip() or None

    def save(self, path: str | Path) -> Path:
        """The conversation as one JSON line ``{"messages": [...]}``: a file ``train
        --dataset`` reads as a conversation in the ``messages`` format."""
        path = Path(path).expanduser()
        row = {"messages": [m.to_json() for m in self.messages]}
        try:
            path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}",
                             hint="give a file in a folder you can write to") from None
        return path

    # ------------------------------------------------------------------ replies
    def prompt(self, user_text: str, max_new_tokens: int) -> tuple[list[int], list[Message], int]:
        """The ids to reply from, the messages they hold and the exchanges left out."""
        block = self.generator.block_size
        room = block - reply_budget(block, max_new_tokens)
        system = self._system()
        turns = [*self.turns, Message("user", user_text)]
        encoded: dict[int, list[int]] = {}

        def ids_of(messages: list[Message]) -> list[int]:
            key = len(messages)  # prompts differ only in how many old turns they drop
            if key not in encoded:
                encoded[key] = prompt_ids(self.tokenizer, self.template, messages)
            return encoded[key]

        kept, dropped = trim_history(system, turns, lambda m: len(ids_of(m)) <= room)
        ids = ids_of(system + kept)
        if len(ids) >= block:
            raise UsageError(
                f"this message is too long for the model: the conversation's prompt is "
                f"{len(ids)} tokens and its context is {block}",
                hint="write a shorter message" + (" or a shorter system message (/system)"
                                                  if self.system else ""))
        return ids, system + kept, dropped

    def reply(self, user_text: str, settings: GenerationSettings, *,
              on_note: Callable[[str], None] | None = None) -> Iterator[str]:
        """Stream the assistant's answer to ``user_text``, piece by piece; the user turn and
        the answer join the history when the stream ends. ``on_note``: what to tell the user
        before the reply (older exchanges left out of the prompt)."""
        settings.check()
        ids, shown, dropped = self.prompt(user_text, settings.max_new_tokens)
        self.dropped, self.last_prompt = dropped, shown
        if dropped and on_note is not None:
            on_note(f"note: the oldest {dropped} exchange{'s' if dropped > 1 else ''} no "
                    f"longer fit{'s' if dropped == 1 else ''} the model's context of "
                    f"{self.generator.block_size} tokens and {'is' if dropped == 1 else 'are'}"
                    " left out")
        # the reply ends where the context does: past it the window would slide and the
        # model would lose the start of the conversation it is answering
        room = self.generator.block_size - len(ids)
        limited = dataclasses.replace(settings, max_new_tokens=min(settings.max_new_tokens, room))
        written: list[str] = []
        try:
            for piece in self.pieces(ids, limited):
                written.append(piece)
                yield piece
        finally:
            self.turns = [*self.turns, Message("user", user_text),
                          Message("assistant", "".join(written))]

    def pieces(self, ids: list[int], settings: GenerationSettings) -> Iterator[str]:
        """The reply to the prompt ``ids``, piece by piece, up to its end of turn (the
        history is not touched: the end-of-run sample of a chat model uses it too)."""
        decoder = self.tokenizer.decode_stream()
        held = ""  # text that may be the start of a stop marker
        for token in self.generator.generate_ids(ids, settings):
            if token in self.stop:
                break
            piece = decoder.step(token)
            if not piece:
                continue
            held += piece
            cut = min((i for i in (held.find(t) for t in self.stop_text) if i >= 0),
                      default=-1)
            if cut >= 0:
                held = held[:cut]
                break
            keep = _partial_marker(held, self.stop_text)
            if len(held) > keep:
                yield held[:len(held) - keep]
                held = held[len(held) - keep:]
        if held:
            yield held


def _partial_marker(text: str, markers: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that begins one of ``markers``."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if marker.startswith(text[-n:]):
                best = n
                break
    return best
