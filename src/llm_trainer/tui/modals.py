"""Modal screens: a yes/no confirmation, an error, the run detail view and the dataset
picker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, OptionList, Static
from textual.widgets.option_list import Option

from llm_trainer.plots import curve_series, render_plot
from llm_trainer.progress import format_bytes, format_clock
from llm_trainer.render import run_detail_text
from llm_trainer.views import DatasetChoices, LossCurve, RecentDataset, RunDetail


class DashboardModal(ModalScreen):
    """A modal over the dashboard: when it closes, the mode line names the panel that has
    the keys again (the dashboard's focus comes back without a focus event)."""

    def on_unmount(self) -> None:
        app = self.app
        if hasattr(app, "update_mode_line"):
            app.call_later(app.update_mode_line)


class FittedText(VerticalScroll):
    """A pop-up's text, wrapped to the pop-up's width and scrolling when it is taller than the
    terminal leaves room for (the pop-up's buttons and borders stay in sight)."""

    def __init__(self, text: str, *, room: int, text_id: str | None = None, **kwargs) -> None:
        super().__init__(Static(Text(text), id=text_id, classes="popup-text"), **kwargs)
        self.room = room  # rows the rest of the pop-up and the screen's footer take

    def on_mount(self) -> None:
        self.fit()

    def fit(self) -> None:
        self.styles.max_height = max(3, self.screen.size.height - self.room)


class PopUp(DashboardModal):
    """A pop-up whose text fits the terminal again when the terminal is resized."""

    def on_resize(self) -> None:
        for box in self.query(FittedText):
            box.fit()


class ErrorScreen(PopUp, ModalScreen[None]):
    """An error in full: wrapped, scrolling when long, until Esc or Enter closes it."""

    BINDINGS = [Binding("escape,enter", "close", "close")]

    def __init__(self, text: str, *, title: str = "Error") -> None:
        super().__init__()
        self.text = text
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="error-dialog"):
            yield FittedText(self.text, room=6, text_id="error-body", id="error-text")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#error-dialog")
        box.border_title = self.title_text
        box.border_subtitle = "esc close"
        self.query_one("#error-text").focus()

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(PopUp, ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True or False."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n", "answer(False)", "no"),
        Binding("escape", "answer(False)", "cancel"),
    ]

    def __init__(self, question: str, *, yes_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield FittedText(self.question, room=9, text_id="question", id="question-scroll")
            with Horizontal(id="buttons"):
                yield Button(self.yes_label, variant="error", id="yes")
                yield Button("No", variant="primary", id="no")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "Confirm"
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


def detail_text(d: RunDetail) -> Text:
    """The run's detail as `llm-trainer status RUN` prints it."""
    return Text(run_detail_text(d))


class LossPlot(Static):
    """A run's train and val loss drawn with plotext, redrawn to fit whenever it resizes."""

    def __init__(self, curve: LossCurve, **kwargs) -> None:
        super().__init__(**kwargs)
        self.curve = curve

    def on_resize(self, event: events.Resize) -> None:
        self.draw(event.size.width, event.size.height)

    def draw(self, width: int, height: int) -> None:
        text = render_plot(curve_series(self.curve), width, height, title="loss by step")
        self.update(Text.from_ansi(text) if text else Text("no loss recorded yet"))

    def set_curve(self, curve: LossCurve) -> None:
        self.curve = curve
        if self.size.width and self.size.height:
            self.draw(self.size.width, self.size.height)


Reload = Callable[[], tuple[RunDetail, LossCurve]]


class RunDetailScreen(DashboardModal, ModalScreen[None]):
    """One run in detail: progress, timing, the loss curves and the end of its log. While
    the run is active it follows it (``reload`` every ``every`` seconds): the figures, the
    curve and the log move on, and a view scrolled to the end stays at the end."""

    BINDINGS = [Binding("escape,q,enter", "close", "close")]

    def __init__(self, detail: RunDetail, curve: LossCurve, reload: Reload | None = None,
                 every: float = 1.0) -> None:
        super().__init__()
        self.detail = detail
        self.curve = curve
        self.reload = reload
        self.every = every
        self.timer = None
        self.closing = False  # dismissed: its widgets go, a reload under way shows nothing

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-dialog"):
            yield LossPlot(self.curve, id="curve")
            with VerticalScroll(id="detail-scroll"):
                yield Static(detail_text(self.detail), id="detail-body")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#detail-dialog")
        box.border_title = "Run detail"
        self.query_one("#detail-scroll").focus()
        if self.reload is not None and self.detail.active:
            self.timer = self.set_interval(self.every, self.follow)
        self.subtitle()

    def subtitle(self) -> None:
        live = "following the run live · " if self.timer is not None else ""
        self.query_one("#detail-dialog").border_subtitle = f"{live}esc close"

    @work(thread=True, exclusive=True, group="detail")
    def follow(self) -> None:
        try:
            detail, curve = self.reload()
        except Exception:  # the run's files mid-rename, a removed run: keep what is shown
            return
        self.app.call_from_thread(self.show, detail, curve)

    def show(self, detail: RunDetail, curve: LossCurve) -> None:
        if not self.is_attached or self.closing:  # a reload that finished after esc
            return
        scroll = self.query_one("#detail-scroll", VerticalScroll)
        at_end = scroll.scroll_y >= scroll.max_scroll_y
        self.detail, self.curve = detail, curve
        self.query_one("#detail-body", Static).update(detail_text(detail))
        self.query_one("#curve", LossPlot).set_curve(curve)
        if at_end:
            scroll.call_after_refresh(scroll.scroll_end, animate=False)
        if not detail.active and self.timer is not None:  # ended: this is its last state
            self.timer.stop()
            self.timer = None
            self.subtitle()

    def action_close(self) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.stop()
        self.dismiss(None)


def _recent_text(r: RecentDataset) -> str:
    models = ", ".join(r.models[:2]) + (f" +{len(r.models) - 2}" if len(r.models) > 2
                                         else "")
    parts = [f"used by {'model' if len(r.models) == 1 else 'models'} {models}" if models
             else "used by a deleted model"]
    if r.runs:
        parts.append(f"{r.runs} run{'s' if r.runs != 1 else ''}")
    if r.train_tokens is not None:
        parts.append(f"{r.train_tokens:,} train tokens")
    if r.last_used_at:
        parts.append(f"last {format_clock(r.last_used_at)}")
    text = " · ".join(parts)
    return f"MISSING: no longer there · {text}" if r.missing else text


class DatasetOptions(OptionList):
    """The picker's list: Enter picks; j / k move as in the dashboard's lists."""

    BINDINGS = [
        Binding("enter", "select", "pick"),
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
    ]


def _short_path(spec: str) -> str:
    """A local dataset's absolute path as the list shows it: relative to the current folder
    when inside it, else with ~ for the user's home (the spec filled in stays absolute)."""
    path = Path(spec)
    if not path.is_absolute():
        return spec
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        if path.is_relative_to(base) and path != base:
            return prefix + str(path.relative_to(base))
    return spec


class DatasetPickerScreen(DashboardModal, ModalScreen[str | None]):
    """Pick a dataset: the built-in ones, those this home has trained on (most recent first)
    and the dataset files of the current folder, as the service lists them. Dismisses with
    the chosen spec, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    SPEC_WIDTH = 40  # the spec column at most; longer specs fold inside it

    def __init__(self, choices: DatasetChoices, current: str = "") -> None:
        super().__init__()
        self.choices = choices
        self.current = current.strip()
        self.specs: dict[str, str] = {}  # option id -> spec

    def compose(self) -> ComposeResult:
        c = self.choices
        # each entry: (what the list shows, the spec it fills in, what it is, missing)
        sections: list[tuple[str, list[tuple[str, str, str, bool]], str]] = [
            ("Built in", [(b.spec, b.spec, b.description, False) for b in c.builtins], ""),
            ("Used in this home, most recent first",
             [(_short_path(r.spec), r.spec, _recent_text(r), r.missing) for r in c.recent],
             "none yet: the datasets you train on are listed here"),
            (f"Files in {c.folder}",
             [(f.name + ("/" if f.is_dir else ""), f.spec,
               (f"folder of {f.files} file{'s' if f.files != 1 else ''}, " if f.is_dir
                else "") + format_bytes(f.size_bytes), False) for f in c.files],
             "no dataset files or folders here"),
        ]
        labels = [label for _t, entries, _e in sections for label, *_ in entries]
        width = min(max(map(len, labels), default=10), self.SPEC_WIDTH)
        options: list[Option | None] = []
        for title, entries, empty in sections:
            if options:
                options.append(None)  # a separator line between sections
            options.append(Option(Text(title, style="bold"), disabled=True))
            if not entries:
                options.append(Option(Text(f"  ({empty})", style="dim"), disabled=True))
            for label, spec, what, missing in entries:
                option_id = f"ds-{len(self.specs)}"
                self.specs[option_id] = spec
                grid = Table.grid(padding=(0, 2))
                grid.add_column(width=width + 2, overflow="fold")
                grid.add_column(ratio=1, style="red" if missing else "dim")
                grid.add_row(Text("  " + label), Text(what))
                options.append(Option(grid, id=option_id))
        with Vertical(id="picker-dialog"):
            yield DatasetOptions(*options, id="dataset-options")
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#picker-dialog")
        box.border_title = "Pick a dataset"
        box.border_subtitle = "enter pick · esc cancel"
        options = self.query_one(DatasetOptions)
        wanted = next((oid for oid, spec in self.specs.items() if spec == self.current),
                      next(iter(self.specs), None))
        if wanted is not None:
            options.highlighted = options.get_option_index(wanted)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        spec = self.specs.get(event.option_id or "")
        if spec is not None:
            self.dismiss(spec)

    def action_cancel(self) -> None:
        self.dismiss(None)
