"""Panel D — Generate From Model: prompt and sampling options; output streams in."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label, Log, Static

from llm_trainer.tui.panels.base import Field, Panel, PromptField
from llm_trainer.views import ModelView


@dataclass
class GenerateForm:
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int | None


class GeneratePanel(Panel):
    PANEL_TITLE = "D · Generate From Model"
    can_focus = True
    BINDINGS = [
        Binding("g", "generate", "generate"),
        Binding("i", "edit_prompt", "edit prompt"),
        Binding("x", "cancel", "cancel"),
        Binding("c", "clear", "clear output"),
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

    def __init__(self) -> None:
        super().__init__(id="generate")
        self.model: ModelView | None = None
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Static(Text("Selected Model: none"), id="gen-model")
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
        yield Log(id="gen-output", highlight=False, auto_scroll=True)

    def set_model(self, model: ModelView | None) -> None:
        self.model = model
        text = "Selected Model: none (train one, or pick one in 5)" if model is None else \
            f"Selected Model: {model.name}"
        self.query_one("#gen-model", Static).update(Text(text))

    def mode(self) -> str:
        if self.busy:
            return "generating (x cancels)"
        focused = self.app.focused
        if isinstance(focused, Input):
            return "editing prompt" if focused.id == "prompt" else f"editing {focused.id}"
        return "ready"

    @property
    def output(self) -> Log:
        return self.query_one("#gen-output", Log)

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
        self.output.clear()

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
        return GenerateForm(self.query_one("#prompt", Input).value, max_new, temperature, top_k)
