"""What every dashboard panel shares: a bordered box with a centred title, a mode word for the
footer's mode line, the widget that a digit key focuses, and the keys that walk its fields.

Tab / Shift-Tab always move between panels (A B C D E), from a field too; inside a panel its
fields are reached with their own keys, or Enter (the first field) and then Down / Up."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Select

NAVIGATION = [
    Binding("tab", "app.next_panel", "next", show=True),
    Binding("shift+tab", "app.previous_panel", "back", show=True),
]


def fit_columns(columns: Sequence[tuple[str, str]], priority: Sequence[str],
                rows: Iterable[dict[str, Text]], width: int) -> tuple[str, ...]:
    """The columns of a table ``width`` cells wide that fit whole (header and widest cell,
    plus the table's padding of 1 on each side), taken in ``priority`` order up to the first
    that does not fit, and shown in the table's own order: a narrow panel drops columns
    rather than cutting numbers or names. An unknown width (0: before the first layout)
    keeps them all."""
    if width <= 0:
        return tuple(key for key, _ in columns)
    need = {key: len(label) for key, label in columns}
    for cells in rows:
        for key, text in cells.items():
            need[key] = max(need[key], text.cell_len)
    chosen: set[str] = set()
    used = 0
    for key in priority:  # up to the first that does not fit: the set stays predictable
        if chosen and used + need[key] + 2 > width:
            break
        chosen.add(key)
        used += need[key] + 2
    return tuple(key for key, _ in columns if key in chosen)


def scrollbar_room(table: Widget, rows: int) -> int:
    """The columns a table's vertical scrollbar takes when its rows (and header) overflow."""
    return table.styles.scrollbar_size_vertical if rows + 1 > table.size.height else 0


def refit_columns(table, columns: Sequence[tuple[str, str]], priority: Sequence[str],
                  rows: Sequence[dict[str, Text | str]], width: int,
                  shown: tuple[str, ...]) -> tuple[str, ...]:
    """The columns of ``table`` that fit ``width`` whole (``fit_columns``); when they differ
    from the ``shown`` ones the table is emptied and given them (its rows are then re-added
    by the caller). Returns the columns now shown."""
    fitted = fit_columns(columns, priority, rows, width - scrollbar_room(table, len(rows)))
    if fitted != shown:
        titles = dict(columns)
        table.clear(columns=True)
        for key in fitted:
            table.add_column(titles[key], key=key)
    return fitted


class Panel(Vertical):
    """A bordered dashboard panel. Its bindings apply while focus is anywhere inside it.

    Tab / Shift-Tab are the only global keys shown in the footer; they are declared here so
    they are listed after each panel's own keys (Textual's screen-level ones are hidden).
    A panel with a form lists its fields' ids in ``FIELDS``, in the order Down walks them."""

    PANEL_TITLE = ""
    FIELDS: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        own = list(cls.__dict__.get("BINDINGS", []))
        if cls.__dict__.get("FIELDS"):
            own += [Binding("enter", "first_field", "fields"),
                    Binding("down", "next_field(1)", "next field", show=False),
                    Binding("up", "next_field(-1)", "previous field", show=False)]
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

    # ------------------------------------------------------------------ fields
    def fields(self) -> list[Widget]:
        """The fields Enter / Down / Up reach now: shown and enabled ones, in order."""
        out = []
        for field_id in self.FIELDS:
            widget = self.query_one(f"#{field_id}")
            if widget.display and not widget.disabled and widget.parent.display:
                out.append(widget)
        return out

    def action_first_field(self) -> None:
        fields = self.fields()
        if fields:
            fields[0].focus()

    def action_next_field(self, delta: int) -> None:
        """Down / Up from a field: the next or previous one (and from the panel itself,
        the first); at either end focus stays where it is."""
        fields = self.fields()
        focused = self.app.focused
        if focused not in fields:
            if focused is self and fields:
                fields[0].focus()
            return
        i = fields.index(focused) + delta
        if 0 <= i < len(fields):
            fields[i].focus()


class FormScroll(VerticalScroll, inherit_bindings=False):
    """Scrolls a panel's form when the terminal is small, without being a Tab stop itself
    (and without the arrow keys of a scrolling container: Down / Up walk the fields)."""

    can_focus = False


class FormSelect(Select, inherit_bindings=False):
    """A Select in a form: Enter or Space opens it; Up / Down walk the form's fields as they
    do from a text field (a plain Select opens on them)."""

    BINDINGS = [Binding("enter,space", "show_overlay", "choose")]


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
