"""Panel A — Run Dashboard: runs table (active first), selection detail, stop.

Runs are labelled by their model and start time (``bard 13:51``; the full id is in the
details); the table keeps the columns its width has room for, status and loss first."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Static

from llm_trainer.progress import format_clock, format_duration
from llm_trainer.render import phase_detail, run_state
from llm_trainer.tui.panels.base import Panel, refit_columns
from llm_trainer.views import RunView

COLUMNS = (("run", "Run"), ("status", "Status"), ("epoch", "Epoch"), ("step", "Step"),
           ("loss", "Loss"), ("val", "Val loss"), ("device", "Device"), ("eta", "ETA"),
           ("gpu", "GPU%"))
PRIORITY = ("run", "status", "loss", "step", "eta", "val", "epoch", "device", "gpu")
LABEL_NAME = 20  # a longer model name is cut in the run label (the details show it whole)


def run_labels(views: list[RunView]) -> dict[str, str]:
    """Each run's label: its model's name and start time (the date too when not today; the
    seconds too when two labels would be the same)."""
    def label(v: RunView, seconds: bool) -> str:
        name = v.model if len(v.model) <= LABEL_NAME else v.model[:LABEL_NAME - 1] + "…"
        when = v.started_at or v.created_at
        if when is None:
            return f"{name} {v.run_id[:15]}"
        t = time.localtime(when)
        today = time.strftime("%Y%m%d", t) == time.strftime("%Y%m%d")
        clock = time.strftime("%H:%M:%S" if seconds else "%H:%M", t)
        return f"{name} {clock}" if today else f"{name} {time.strftime('%m-%d', t)} {clock}"

    short = {v.run_id: label(v, False) for v in views}
    counts = Counter(short.values())
    return {run: text if counts[text] == 1 else label(v, True)
            for (run, text), v in zip(short.items(), views, strict=True)}


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def row_cells(v: RunView, label: str | None = None) -> dict[str, Text]:
    active = v.active
    step = v.step
    total = v.total_steps
    cells = {
        "run": label or v.run_id, "status": run_state(v), "epoch": _f(v.epoch, "{:.2f}"),
        "step": "-" if step is None else (f"{step}/{total}" if total else str(step)),
        "loss": _f(v.loss, "{:.4f}"), "val": _f(v.val_loss, "{:.4f}"),
        "device": v.device or "-",
        "eta": format_duration(v.eta_seconds) if active else "-",
        "gpu": "n/a" if v.gpu_util_pct is None else f"{v.gpu_util_pct:.0f}%",
    }
    style = {"running": "green", "failed": "red", "paused": "yellow", "stopped": "yellow",
             "queued": "cyan"}.get(v.status, "")
    return {k: Text(str(val), style=style if k == "status" else "") for k, val in cells.items()}


def one_line(text: str) -> Text:
    return Text(text, no_wrap=True, overflow="ellipsis")


class RunsTable(DataTable):
    BINDINGS = [Binding("enter", "select_cursor", "details")]


class RunsPanel(Panel):
    PANEL_TITLE = "A · Run Dashboard"
    BINDINGS = [
        Binding("f", "toggle_finished", "finished runs"),
        Binding("x", "stop_run", "stop run"),
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
    ]

    @dataclass
    class ShowDetails(Message):
        run_id: str

    @dataclass
    class StopRun(Message):
        run_id: str
        status: str
        active: bool

    def __init__(self) -> None:
        super().__init__(id="runs")
        self.show_finished = False
        self.views: dict[str, RunView] = {}
        self.labels: dict[str, str] = {}
        self.columns = tuple(key for key, _ in COLUMNS)

    def compose(self) -> ComposeResult:
        table = RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        for key in self.columns:
            table.add_column(dict(COLUMNS)[key], key=key)
        yield table
        yield Static(Text("No active runs."), id="runs-empty")
        yield Static(Text(""), id="runs-summary")

    def focus_target(self):
        return self.query_one("#runs-table")

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs-table", DataTable)

    def selected_run(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def on_resize(self) -> None:
        self.update_runs(list(self.views.values()))  # the columns this width has room for

    def update_runs(self, views: list[RunView]) -> None:
        """Update rows in place, keyed by run id: the selection and scroll survive. The
        columns are those that fit whole (status and loss first); when they change, the
        table is rebuilt."""
        shown = [v for v in views if self.show_finished or v.active]
        table = self.table
        wanted = [v.run_id for v in shown]
        labels = run_labels(shown)
        cells = {v.run_id: row_cells(v, labels[v.run_id]) for v in shown}
        selected = self.selected_run()
        self.columns = refit_columns(table, COLUMNS, PRIORITY, list(cells.values()),
                                     self.content_size.width, self.columns)
        if [k.value for k in table.rows] != wanted:  # runs came, went or changed order
            table.clear()
            for v in shown:
                table.add_row(*(cells[v.run_id][k] for k in self.columns), key=v.run_id)
            if selected in wanted:
                table.move_cursor(row=wanted.index(selected), animate=False)
        else:  # same rows: touch only the cells that changed
            for v in shown:
                old = self.views.get(v.run_id)
                if old == v and self.labels.get(v.run_id) == labels[v.run_id]:
                    continue
                old_cells = row_cells(old, self.labels.get(v.run_id)) if old else {}
                for key in self.columns:
                    if old_cells.get(key) != cells[v.run_id][key]:
                        table.update_cell(v.run_id, key, cells[v.run_id][key],
                                          update_width=True)  # 990/2600 -> 1000/2600
        self.views = {v.run_id: v for v in views}
        self.labels = labels
        empty = self.query_one("#runs-empty", Static)
        empty.display = not shown
        empty.update(Text("No active runs." if not self.show_finished else "No runs yet.")
                     if not shown else "")
        self.refresh_summary()

    def refresh_summary(self) -> None:
        run = self.selected_run()
        summary = self.query_one("#runs-summary", Static)
        v = self.views.get(run) if run else None
        if v is None:
            hidden = sum(1 for x in self.views.values() if not x.active)
            summary.update(one_line(f"{hidden} finished runs hidden (f shows them)" if hidden
                                    and not self.show_finished else ""))
            return
        active = v.active
        in_phase = phase_detail(v)
        if in_phase is not None:  # preparing data: no step yet, so no rate or remaining time
            summary.update(one_line(f"{v.model}: {in_phase}, elapsed "
                                    f"{format_duration(v.elapsed_s)}"))
            return
        # the most telling first: a narrow panel cuts the end of the line
        summary.update(one_line(
            f"{v.model}: "
            + (f"{v.error} — " if v.error else "")
            + (f"remaining {format_duration(v.eta_seconds)}, " if active else "")
            + f"{_f(v.tokens_per_s, '{:,.0f}')} tok/s, elapsed {format_duration(v.elapsed_s)}"
            + (f", finish {format_clock(v.finish_at)}" if active else "")))

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.refresh_summary()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_details()

    def action_details(self) -> None:
        run = self.selected_run()
        if run:
            self.post_message(self.ShowDetails(run))

    def action_toggle_finished(self) -> None:
        self.show_finished = not self.show_finished
        self.update_runs(list(self.views.values()))
        self.app.notify("showing all runs" if self.show_finished else "showing active runs",
                        markup=False, timeout=2)

    def action_stop_run(self) -> None:
        run = self.selected_run()
        if run:
            view = self.views.get(run)
            self.post_message(self.StopRun(run, view.status if view else "",
                                           bool(view and view.active)))

    def action_cursor_down(self) -> None:
        self.table.action_cursor_down()

    def action_cursor_up(self) -> None:
        self.table.action_cursor_up()
