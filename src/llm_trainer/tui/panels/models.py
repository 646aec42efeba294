"""Panel E — Model Selection: the model list, active model, rename / archive / delete."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from llm_trainer.progress import format_bytes
from llm_trainer.tui.panels.base import Panel, RenameField, refit_columns
from llm_trainer.views import ModelView

COLUMNS = (("mark", " "), ("name", "Name"), ("trained", "Trained"), ("epochs", "Epochs"),
           ("loss", "Loss"), ("size", "Size"), ("status", "Status"))
PRIORITY = ("mark", "name", "loss", "status", "trained", "epochs", "size")


def model_cells(m: ModelView, active_id: str | None) -> dict[str, Text]:
    trained = "-"
    if m.last_trained_at:  # today: the time; earlier: the date
        when = time.localtime(m.last_trained_at)
        today = time.strftime("%Y%m%d", when) == time.strftime("%Y%m%d")
        trained = time.strftime("%H:%M" if today else "%Y-%m-%d", when)
    loss = m.latest_val_loss if m.latest_val_loss is not None else \
        m.best_val_loss
    style = {"training": "green", "corrupted": "red", "archived": "dim"}.get(m.status, "")
    return {
        "mark": Text("●" if m.id == active_id else " ", style="bold green"),
        "name": Text(m.name),
        "trained": Text(trained),
        "epochs": Text(f"{m.epochs_completed or 0:.2f}"),
        "loss": Text("-" if loss is None else f"{loss:.3f}"),
        "size": Text(format_bytes(m.disk_bytes, compact=True)),
        "status": Text(m.status, style=style),
    }


class ModelsTable(DataTable):
    BINDINGS = [Binding("enter", "select_cursor", "set active")]


class ModelsPanel(Panel):
    PANEL_TITLE = "E · Model Selection"
    BINDINGS = [
        Binding("a", "activate", "set active", show=False),
        Binding("e", "rename", "rename"),
        Binding("A", "archive", "archive/unarchive"),
        Binding("D", "delete", "delete"),
        Binding("r", "refresh", "refresh"),
        Binding("h", "toggle_archived", "archived"),
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
    ]

    @dataclass
    class Action(Message):
        """A model action for the app to carry out: activate, archive, delete, refresh."""

        action: str
        model: ModelView | None

    @dataclass
    class Rename(Message):
        model: ModelView
        new_name: str

    def __init__(self) -> None:
        super().__init__(id="models")
        self.models: list[ModelView] = []
        self.active_id: str | None = None
        self.latest: str | None = None
        self.show_archived = False
        self.renaming: ModelView | None = None
        self.columns = tuple(key for key, _ in COLUMNS)

    def compose(self) -> ComposeResult:
        yield Static(Text("Latest trained model: none"), id="latest")
        table = ModelsTable(id="models-table", cursor_type="row", zebra_stripes=True)
        for key in self.columns:
            table.add_column(dict(COLUMNS)[key], key=key)
        yield table
        yield Static(Text("No models yet: start training in panel C."), id="models-empty")
        yield RenameField("", id="rename", compact=True,
                          placeholder="new name: enter saves, esc cancels")
        yield Static(Text(""), id="models-message")

    def on_mount(self) -> None:
        self.query_one("#rename", Input).display = False

    def focus_target(self):
        return self.query_one("#models-table")

    @property
    def table(self) -> DataTable:
        return self.query_one("#models-table", DataTable)

    def mode(self) -> str:
        return "renaming (enter saves, esc cancels)" if self.renaming else "browsing"

    def selected(self) -> ModelView | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None
        return next((m for m in self.models if m.id == key), None)

    def say(self, text: str, *, error: bool = False) -> None:
        """A message under the list, wrapped whole (E spans two rows: there is room; a pop-up
        would take the keys from a rename being fixed)."""
        # A worker's answer can land while the app shuts down and the panel's children are gone.
        with contextlib.suppress(NoMatches):
            self.query_one("#models-message", Static).update(
                Text(text, style="red" if error else ""))

    def on_resize(self) -> None:
        self.update_models(self.models, self.active_id, self.latest)  # the columns that fit

    def update_models(self, models: list[ModelView], active_id: str | None,
                      latest: str | None) -> None:
        """Rows updated in place, keyed by model id; the columns are those that fit whole
        (name, loss and status first); when they change, the table is rebuilt."""
        shown = [m for m in models if self.show_archived or not m.archived]
        table = self.table
        wanted = [m.id for m in shown]
        old = {m.id: model_cells(m, self.active_id) for m in self.models}
        cells = {m.id: model_cells(m, active_id) for m in shown}
        current = self.selected()
        self.columns = refit_columns(table, COLUMNS, PRIORITY, list(cells.values()),
                                     self.content_size.width, self.columns)
        if [k.value for k in table.rows] != wanted:
            table.clear()
            for m in shown:
                table.add_row(*(cells[m.id][k] for k in self.columns), key=m.id)
            if current and current.id in wanted:
                table.move_cursor(row=wanted.index(current.id), animate=False)
        else:
            for m in shown:
                before = old.get(m.id, {})
                for key in self.columns:
                    if before.get(key) != cells[m.id][key]:
                        table.update_cell(m.id, key, cells[m.id][key], update_width=True)
        self.models, self.active_id, self.latest = models, active_id, latest
        text = f"Latest trained model: {latest or 'none'}"
        if len(text) > self.content_size.width:
            text = f"Latest: {latest or 'none'}"
        self.query_one("#latest", Static).update(Text(text, no_wrap=True, overflow="ellipsis"))
        self.query_one("#models-empty", Static).display = not shown

    # ------------------------------------------------------------------ actions
    def _emit(self, action: str) -> None:
        model = self.selected()
        if model is None and action != "refresh":
            self.say("No model selected.", error=True)
            return
        self.post_message(self.Action(action, model))

    def action_activate(self) -> None:
        self._emit("activate")

    def action_archive(self) -> None:
        self._emit("archive")

    def action_delete(self) -> None:
        self._emit("delete")

    def action_refresh(self) -> None:
        self._emit("refresh")

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
        self.update_models(self.models, self.active_id, self.latest)
        self._emit("refresh")

    def action_cursor_down(self) -> None:
        self.table.action_cursor_down()

    def action_cursor_up(self) -> None:
        self.table.action_cursor_up()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_activate()

    def action_rename(self) -> None:
        model = self.selected()
        if model is None:
            self.say("No model selected.", error=True)
            return
        self.renaming = model
        box = self.query_one("#rename", Input)
        box.value = model.name
        box.display = True
        box.focus()
        self.say(f"Renaming {model.name}: enter saves, esc cancels")
        self.set_mode_changed()

    def end_rename(self, message: str = "", *, error: bool = False) -> None:
        if error:  # keep editing so the user can fix the name
            self.say(message, error=True)
            return
        self.renaming = None
        box = self.query_one("#rename", Input)
        box.display = False
        self.say(message)
        self.table.focus()
        self.set_mode_changed()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "rename" and self.renaming is not None:
            event.stop()
            self.post_message(self.Rename(self.renaming, event.value.strip()))
