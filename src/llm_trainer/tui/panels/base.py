"""What every dashboard panel shares: a bordered box with a centred title, a mode word for the
footer's mode line, and the widget that a digit key focuses."""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input

NAVIGATION = [
    Binding("tab", "app.focus_next", "next", show=True),
    Binding("shift+tab", "app.focus_previous", "back", show=True),
]


class Panel(Vertical):
    """A bordered dashboard panel. Its bindings apply while focus is anywhere inside it.

    Tab / Shift-Tab are the only global keys shown in the footer; they are declared here so
    they are listed after each panel's own keys (Textual's screen-level ones are hidden)."""

    PANEL_TITLE = ""

    def __init_subclass__(cls, **kwargs) -> None:
        own = cls.__dict__.get("BINDINGS", [])
        cls.BINDINGS = [*own, *NAVIGATION]  # the panel's keys first, then Tab / Shift-Tab
        super().__init_subclass__(**kwargs)  # merges BINDINGS: must come after

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = self.PANEL_TITLE

    def focus_target(self) -> Widget:
        return self

    def mode(self) -> str:
        """A word for the mode line: what the keys do right now."""
        return "browsing"

    def set_mode_changed(self) -> None:
        app = self.app
        if hasattr(app, "update_mode_line"):
            app.update_mode_line()


class FormScroll(VerticalScroll):
    """Scrolls a panel's form when the terminal is small, without being a Tab stop itself."""

    can_focus = False


class Field(Input):
    """A text field whose keys are listed in the footer while it has focus (every printable key
    goes into it; Enter and Esc hand the keys back to the panel)."""

    BINDINGS = [
        Binding("enter", "submit", "done"),
        Binding("escape", "app.leave_field", "leave field"),
    ]


class PromptField(Field):
    BINDINGS = [
        Binding("enter", "submit", "generate"),
        Binding("escape", "app.leave_field", "leave field"),
    ]


class RenameField(Field):
    BINDINGS = [
        Binding("enter", "submit", "save"),
        Binding("escape", "app.leave_field", "cancel"),
    ]
