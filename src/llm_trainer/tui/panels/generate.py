"""Panel D — Generate From Model: prompt and sampling options; output streams in. In chat
mode (h, or the Chat box) each prompt is a turn of a conversation with the model, shown as
turns; for a model fine-tuned from another (--init-from) the Base box (b) has its base answer
each turn too. The conversation itself is the app's (``app.chat``); this panel only reads the
form and shows text, unparsed."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, Static, TextArea

from llm_trainer.tui.panels.base import Field, Panel, PromptField
from llm_trainer.views import ModelView


@dataclass
class GenerateForm:
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int | None
    chat: bool = False  # a turn of the conversation rather than a continuation
    compare_base: bool = False  # the base model answers too
    system: str = ""  # the conversation's system message (chat mode)


class OutputArea(TextArea):
    """The panel's output, wrapped to the panel's width (a reply is often one long line, cut
    at the edge by a plain log) and appended to as it streams; it follows the end unless the
    user scrolled up. Not a Tab or field stop: the mouse wheel scrolls it."""

    can_focus = False

    def __init__(self, **kwargs) -> None:
        super().__init__("", read_only=True, soft_wrap=True, show_cursor=False,
                         highlight_cursor_line=False, compact=True, **kwargs)

    @property
    def lines(self) -> list[str]:
        """The output's lines as written (not as wrapped on screen)."""
        return list(self.document.lines)

    def write(self, text: str) -> None:
        following = self.scroll_y >= self.max_scroll_y
        self.insert(text, self.document.end, maintain_selection_offset=False)
        if following:
            self.scroll_end(animate=False, immediate=False)

    def write_line(self, text: str) -> None:
        self.write(text + "\n")


class GeneratePanel(Panel):
    PANEL_TITLE = "D · Generate From Model"
    FIELDS = ("prompt", "system", "max", "temp", "topk", "chat-mode", "compare-base")
    can_focus = True
    BINDINGS = [
        Binding("g", "generate", "generate"),
        Binding("i", "edit_prompt", "edit prompt"),
        Binding("x", "cancel", "cancel"),
        Binding("c", "clear", "clear output"),
        Binding("h", "toggle_chat", "chat mode"),
        Binding("b", "toggle_base", "vs base", show=False),
        Binding("m", "bump('max', -50)", "tokens-", show=False),
        Binding("M", "bump('max', 50)", "tokens+", show=False),
        Binding("t", "bump_temp(-0.1)", "temp-"),
        Binding("T", "bump_temp(0.1)", "temp+"),
    ]

    @dataclass
    class Generate(Message):
        form: GenerateForm

    class Cancel(Message):
        pass

    class ResetChat(Message):
        """Start the conversation afresh (chat mode's clear)."""

    def __init__(self) -> None:
        super().__init__(id="generate")
        self.model: ModelView | None = None
        self.busy = False
        self.base: str | None = None  # what the selected model was fine-tuned from

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Static(Text("Selected Model: none"), id="gen-model")
            yield Checkbox("Chat", id="chat-mode", compact=True)
            yield Checkbox("Base", id="compare-base", compact=True)
        with Horizontal(classes="row", id="system-row"):
            yield Label("System")
            yield Field("", id="system", placeholder="system message (optional)",
                        compact=True)
        yield PromptField("", id="prompt", placeholder="prompt (enter generates)",
                          compact=True)
        with Horizontal(classes="row"):
            yield Label("Tokens")
            yield Field("200", id="max", type="integer", compact=True, classes="num")
            yield Label("Temp")
            yield Field("0.8", id="temp", type="number", compact=True, classes="num")
            yield Label("Top-k")
            yield Field("200", id="topk", type="integer", compact=True, classes="num")
            yield Button("Generate", id="go", compact=True, variant="success")
        yield OutputArea(id="gen-output")

    def on_mount(self) -> None:
        self.query_one("#compare-base", Checkbox).display = False
        self.query_one("#system-row").display = False

    def set_model(self, model: ModelView | None, base: str | None = None,
                  chat: bool | None = None) -> None:
        """The selected model, and what it was fine-tuned from (None: trained from scratch,
        and the Base box is hidden). ``chat``: whether it has a chat template; a newly
        selected model starts in chat mode when it has one (the box is the user's after)."""
        if chat is not None and (model is None or self.model is None or
                                 model.id != self.model.id):
            self.query_one("#chat-mode", Checkbox).value = chat
        self.model, self.base = model, base
        text = "Selected Model: none (train one, or pick one in 5)" if model is None else \
            f"Selected Model: {model.name}"
        self.query_one("#gen-model", Static).update(Text(text))
        box = self.query_one("#compare-base", Checkbox)
        box.display = base is not None
        box.tooltip = f"also answer with the base model, {base}" if base else None
        if base is None and box.value:
            box.value = False

    @property
    def chat_mode(self) -> bool:
        return self.query_one("#chat-mode", Checkbox).value

    @property
    def compare_base(self) -> bool:
        return self.base is not None and self.query_one("#compare-base", Checkbox).value

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        if event.checkbox.id == "chat-mode":
            self.query_one("#system-row").display = event.value
            self.query_one("#prompt", Input).placeholder = \
                "your message (enter sends)" if event.value else "prompt (enter generates)"
        self.set_mode_changed()

    def action_toggle_chat(self) -> None:
        self.query_one("#chat-mode", Checkbox).toggle()

    def action_toggle_base(self) -> None:
        if self.base is not None:
            self.query_one("#compare-base", Checkbox).toggle()

    def mode(self) -> str:
        if self.busy:
            return ("replying" if self.chat_mode else "generating") + " (x cancels)"
        focused = self.app.focused
        if isinstance(focused, Input):
            return "editing prompt" if focused.id == "prompt" else f"editing {focused.id}"
        if self.chat_mode:
            return "chat" + (" with the base model beside it" if self.compare_base else "") + \
                " (c starts afresh)"
        return "ready"

    @property
    def output(self) -> OutputArea:
        return self.query_one("#gen-output", OutputArea)

    def show_line(self, text: str, end: str = "\n") -> None:
        """``text`` at the start of a line of the output (a reply then streams after it when
        ``end`` is empty)."""
        out = self.output
        if out.lines and out.lines[-1]:
            out.write("\n")
        out.write(text + end)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.query_one("#go", Button).disabled = busy
        self.set_mode_changed()

    # ------------------------------------------------------------------ actions
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "prompt":
            self.action_generate()
        else:
            self.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            event.stop()
            self.action_generate()

    def action_edit_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    def action_cancel(self) -> None:
        if self.busy:
            self.post_message(self.Cancel())

    def action_clear(self) -> None:
        if self.busy:
            return
        self.output.clear()
        if self.chat_mode:
            self.post_message(self.ResetChat())

    def action_bump(self, field: str, delta: int) -> None:
        box = self.query_one(f"#{field}", Input)
        try:
            box.value = str(max(1, int(box.value or 0) + delta))
        except ValueError:
            box.value = "200"

    def action_bump_temp(self, delta: float) -> None:
        box = self.query_one("#temp", Input)
        try:
            value = float(box.value or 0)
        except ValueError:
            value = 0.8
        box.value = f"{max(0.0, round(value + delta, 2)):g}"

    def action_generate(self) -> None:
        if self.busy:
            return
        if self.model is None:
            self.output.write_line("No model selected: train one (panel C) or pick one in "
                                   "Model Selection (5).")
            return
        form = self.read_form()
        if form is not None:
            self.post_message(self.Generate(form))

    def read_form(self) -> GenerateForm | None:
        def bad(message: str) -> None:
            self.output.write_line(f"error: {message}")

        try:
            max_new = int(self.query_one("#max", Input).value)
            temperature = float(self.query_one("#temp", Input).value)
            top_k_text = self.query_one("#topk", Input).value.strip()
            top_k = int(top_k_text) if top_k_text else None
        except ValueError:
            bad("max tokens and top-k are whole numbers; temperature is a number")
            return None
        if max_new < 1 or max_new > 100_000:
            bad("max tokens must be between 1 and 100000")
            return None
        if not math.isfinite(temperature) or temperature < 0:
            bad("temperature must be 0 (greedy) or more")
            return None
        if top_k is not None and top_k < 1:
            bad("top-k must be 1 or more (or empty for none)")
            return None
        prompt = self.query_one("#prompt", Input).value
        if self.chat_mode and not prompt.strip():
            bad("write a message first")
            return None
        return GenerateForm(prompt, max_new, temperature, top_k, chat=self.chat_mode,
                            compare_base=self.compare_base,
                            system=self.query_one("#system", Input).value)
