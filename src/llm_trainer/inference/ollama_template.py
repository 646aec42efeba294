"""A model's jinja chat template as an Ollama Modelfile ``TEMPLATE`` (Go's text/template).

Ollama renders a chat with Go templates, not jinja, so the template cannot be copied: it is
rewritten. Most chat templates (ChatML, Llama 3, Phi-3, Zephyr...) wrap each message in a
fixed text per role: an optional header (a BOS), then per message ``prefix + content +
suffix``, then the assistant's prompt. Those pieces are found by rendering probe
conversations with distinctive contents and cutting at the contents, and the Go template is
built from them. It is then proved equivalent on the probes: the jinja rendering of every
probe (with the generation prompt, as Ollama always generates a reply) must equal what the Go
template makes of it (``go_render``, the same pieces in the same order). A template that is
not of that shape (system text merged into the first user turn, as Gemma's, a default system
prompt, turns rewritten) gets the ChatML-shaped TEMPLATE with a note saying it only
approximates the model's own.

Ollama passes the system prompt as ``.System`` (older versions take system messages out of
``.Messages``; newer ones keep them there too), so the TEMPLATE writes ``.System`` once,
first, and the range skips system messages: the same text either way. Our conversations only
have a system message first (``data.chat.check_messages``), which is where the jinja puts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_trainer.data.chat import CHATML, ChatTemplate
from llm_trainer.errors import DataError

# probe contents: plain words no template rewrites, unlikely inside any template's own text
_SYS, _U1, _A1, _U2, _A2, _U3 = ("Qzsysx", "Qzuseronex", "Qzbotonex", "Qzusertwox",
                                 "Qzbottwox", "Qzuserthreex")
_PROBES = (
    (("user", _U1),),
    (("system", _SYS), ("user", _U1)),
    (("user", _U1), ("assistant", _A1), ("user", _U2)),
    (("system", _SYS), ("user", _U1), ("assistant", _A1), ("user", _U2)),
    (("system", _SYS), ("user", _U1), ("assistant", _A1), ("user", _U2), ("assistant", _A2),
     ("user", _U3)),
)


@dataclass(frozen=True)
class Wrapping:
    """The text a template puts around each message (``system`` None: it has no system
    turn of that shape, or refuses one)."""

    head: str
    user: tuple[str, str]
    assistant: tuple[str, str]
    system: tuple[str, str] | None
    generation: str  # the assistant's prompt, after the last message


@dataclass(frozen=True)
class OllamaTemplate:
    text: str  # the Go template
    stops: tuple[str, ...]  # PARAMETER stop values: the end-of-turn marker first
    note: str | None = None  # set when ``text`` only approximates the model's template


def go_render(w: Wrapping, messages: list[tuple[str, str]]) -> str:
    """What Ollama makes of ``messages`` with ``go_template(w)``: ``.System`` first, then
    the user and assistant messages, then the generation prompt."""
    system = "\n\n".join(c for r, c in messages if r == "system")  # Ollama joins them so
    out = [w.head]
    if system and w.system is not None:
        out.append(w.system[0] + system + w.system[1])
    for role, content in messages:
        if role in ("user", "assistant"):
            pre, suf = w.user if role == "user" else w.assistant
            out.append(pre + content + suf)
    return "".join(out) + w.generation


def go_template(w: Wrapping) -> str:
    """The Go template for ``w``. Literal pieces are never next to a ``{{-``, which would
    trim their own whitespace; the dashes only eat the newlines between actions."""
    system = (f"{{{{ if .System }}}}{w.system[0]}{{{{ .System }}}}{w.system[1]}{{{{ end }}}}\n"
              if w.system is not None else "")
    opener = "{{- range .Messages }}" if system else "{{ range .Messages }}"
    return (f"{w.head}{system}{opener}\n"
            f'{{{{- if eq .Role "user" }}}}{w.user[0]}{{{{ .Content }}}}{w.user[1]}'
            f'{{{{ else if eq .Role "assistant" }}}}{w.assistant[0]}{{{{ .Content }}}}'
            f"{w.assistant[1]}{{{{ end }}}}\n"
            "{{- end }}" + w.generation)


def wrapping(chat: ChatTemplate) -> Wrapping | None:
    """The template's per-role pieces, proved on every probe; None when it is not of that
    shape (or a piece would need Go-template escaping)."""
    def render(turns, gen: bool) -> str:
        return chat.render([{"role": r, "content": c} for r, c in turns],
                           add_generation_prompt=gen)

    def cut(text: str, *contents: str) -> list[str] | None:
        parts = []
        for c in contents:
            if text.count(c) != 1:
                return None
            before, text = text.split(c)
            parts.append(before)
        return [*parts, text]

    if any(c in chat.source for c in (_SYS, _U1, _A1, _U2, _A2, _U3)):
        return None
    try:
        one = render([("user", _U1)], False)
        generation = render([("user", _U1)], True)
        two = cut(render([("user", _U1), ("assistant", _A1)], False), _U1, _A1)
        three = cut(render([("user", _U1), ("assistant", _A1), ("user", _U2)], False),
                    _U1, _A1, _U2)
    except DataError:
        return None
    first = cut(one, _U1)
    if not (first and two and three and generation.startswith(one)):
        return None
    head_user, user_suffix = first
    generation = generation[len(one):]
    if not two[1].startswith(user_suffix):
        return None
    assistant = (two[1][len(user_suffix):], two[2])
    if not three[2].startswith(assistant[1]):
        return None
    user_prefix = three[2][len(assistant[1]):]
    if not head_user.endswith(user_prefix):
        return None
    head = head_user[:len(head_user) - len(user_prefix)]
    system = None
    try:
        with_system = cut(render([("system", _SYS), ("user", _U1)], False), _SYS, _U1)
    except DataError:  # a template that refuses system turns: Ollama's .System is left out
        with_system = []
    if with_system is None:
        return None
    if with_system:  # accepted: it must be a wrapped turn too (not, e.g., a default prompt)
        if not (with_system[0].startswith(head) and with_system[1].endswith(user_prefix)):
            return None
        system = (with_system[0][len(head):],
                  with_system[1][:len(with_system[1]) - len(user_prefix)])
    w = Wrapping(head, (user_prefix, user_suffix), assistant, system, generation)
    pieces = (head, *w.user, *w.assistant, *(system or ()), generation)
    if any("{{" in p for p in pieces):
        return None
    for probe in _PROBES:
        if system is None and probe[0][0] == "system":
            continue
        try:
            if render(probe, True) != go_render(w, list(probe)):
                return None
        except DataError:
            return None
    return w


def ollama_template(chat: ChatTemplate, eos_token: str | None = None) -> OllamaTemplate:
    """The TEMPLATE and stops for ``chat``; ``eos_token``: the end-of-text token Ollama should
    stop at as well (the model's document separator)."""
    stops = tuple(dict.fromkeys(t for t in (chat.end_of_turn, eos_token or chat.eos_token)
                                if t))
    w = wrapping(chat)
    if w is not None:
        return OllamaTemplate(go_template(w), stops)
    chatml = wrapping(ChatTemplate(CHATML))
    assert chatml is not None  # ChatML is of that shape (tested)
    return OllamaTemplate(
        go_template(chatml), tuple(dict.fromkeys(("<|im_end|>", *stops))),
        note="the model's chat template is not a fixed text around each message, so Ollama's "
             "TEMPLATE here is ChatML's shape, not the model's own: check it against the "
             "tokenizer.chat_template in model.gguf (or run the model with llama.cpp --jinja)")
