"""``llm-trainer tui``: the keyboard-first dashboard.

Layout (2 columns x 3 rows): A runs | B system / C train | E models / D generate | E models.
All file and process I/O runs in thread workers that post results back; panels update their
widgets in place. Every action goes through ``Service`` exactly as the CLI's do.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Footer, Input, Static

from llm_trainer.app.chat import Chat
from llm_trainer.errors import LLMTrainerError
from llm_trainer.service import GenerationSettings, LaunchOptions, Service, TrainRequest
from llm_trainer.tui.modals import (
    ConfirmScreen,
    DatasetPickerScreen,
    ErrorScreen,
    RunDetailScreen,
)
from llm_trainer.tui.panels.base import Panel
from llm_trainer.tui.panels.generate import GenerateForm, GeneratePanel
from llm_trainer.tui.panels.models import ModelsPanel
from llm_trainer.tui.panels.runs import RunsPanel
from llm_trainer.tui.panels.system import SystemPanel
from llm_trainer.tui.panels.train import TrainForm, TrainPanel, estimate_text
from llm_trainer.views import (
    DatasetChoices,
    LossCurve,
    ModelView,
    RunDetail,
    RunView,
    SystemView,
)

REFRESH_S = 1.0
PANEL_ORDER = ("runs", "system", "train", "generate", "models")  # keys 1-5, Tab's order
TOAST_CHARS = 100  # an error toast shows about this much (3 lines at 80 columns); more: a pop-up


class Snapshot(Message):
    """Everything a refresh read from disk, posted from the worker thread."""

    def __init__(self, runs: list[RunView], models: list[ModelView],
                 system: SystemView, active_id: str | None, latest: str | None,
                 read_ms: float) -> None:
        super().__init__()
        self.runs, self.models, self.system = runs, models, system
        self.active_id, self.latest, self.read_ms = active_id, latest, read_ms


def error_text(exc: BaseException) -> str:
    if isinstance(exc, LLMTrainerError):
        return str(exc) + (f" ({exc.hint})" if exc.hint else "")
    return f"{type(exc).__name__}: {exc}"


class TrainerApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "llm-trainer"
    ENABLE_COMMAND_PALETTE = False
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]  # app.tcss: 80x24 is short
    BINDINGS = [
        Binding("tab", "next_panel", "next", show=True),
        Binding("shift+tab", "previous_panel", "back", show=True),
        Binding("1", "focus_panel('runs')", "runs", show=False),
        Binding("2", "focus_panel('system')", "system", show=False),
        Binding("3", "focus_panel('train')", "train", show=False),
        Binding("4", "focus_panel('generate')", "generate", show=False),
        Binding("5", "focus_panel('models')", "models", show=False),
        Binding("escape", "leave_field", "leave field", show=False),
        Binding("q", "quit", "quit", show=False),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, home: str | Path | None = None, *, refresh_s: float = REFRESH_S) -> None:
        super().__init__()
        self.service = Service(home)
        self.home = self.service.home
        self.refresh_s = refresh_s
        self.models_by_id: dict[str, ModelView] = {}
        self.active_id: str | None = None
        self.last_refresh_ms: dict[str, float] = {}
        self.generation_cancel = threading.Event()
        self.chat: Chat | None = None  # the generate panel's conversation (chat mode)
        self.chat_key: tuple[str, bool] | None = None  # its model, and with its base or not

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        # references, not queries: a modal on top must not hide the panels from refreshes
        self.runs_panel = RunsPanel()
        self.system_panel = SystemPanel()
        self.train_panel = TrainPanel(self.service.presets(), self.service.profiles())
        self.models_panel = ModelsPanel()
        self.generate_panel = GeneratePanel()
        with Container(id="grid"):
            yield self.runs_panel
            yield self.system_panel
            yield self.train_panel
            yield self.models_panel  # grid order: it takes rows 2-3 of the right column
            yield self.generate_panel
        yield Static(Text(""), id="modeline")
        yield Footer(compact=True)  # every key of the train panel fits 100 columns

    def on_mount(self) -> None:
        self.runs_panel.focus_target().focus()
        self.refresh_data()
        self.set_interval(self.refresh_s, self.refresh_data)
        self.update_mode_line()

    def panel(self, name: str) -> Panel:
        return {"runs": self.runs_panel, "system": self.system_panel, "train": self.train_panel,
                "generate": self.generate_panel, "models": self.models_panel}[name]

    # ------------------------------------------------------------------ focus and mode line
    def action_focus_panel(self, name: str) -> None:
        self.panel(name).focus_target().focus()

    def action_next_panel(self, delta: int = 1) -> None:
        """Tab / Shift-Tab: the next or previous panel, in the order of their keys 1-5,
        from anywhere inside a panel (a field too)."""
        current = self.current_panel()
        i = PANEL_ORDER.index(current.id) + delta if current is not None else 0
        self.action_focus_panel(PANEL_ORDER[i % len(PANEL_ORDER)])

    def action_previous_panel(self) -> None:
        self.action_next_panel(-1)

    def show_error(self, text: str, *, title: str = "Error") -> None:
        """An error the user must read: a toast when it is short, else a pop-up that wraps
        all of it (a toast is cut to the screen and goes after a few seconds)."""
        if len(text) <= TOAST_CHARS and "\n" not in text:
            self.notify(text, severity="error", markup=False, timeout=10)
        else:
            self.push_screen(ErrorScreen(text, title=title))

    def action_leave_field(self) -> None:
        """Esc in a field (a text field, a select, a box) returns the keys to its panel."""
        focused = self.focused
        models = self.models_panel
        if isinstance(focused, Input) and focused.id == "rename":
            models.end_rename("rename cancelled")
            return
        panel = self.current_panel()
        if panel is not None and panel.can_focus and focused is not panel:
            panel.focus()

    def current_panel(self) -> Panel | None:
        node = self.focused
        while node is not None:
            if isinstance(node, Panel):
                return node
            node = node.parent
        return None

    def update_mode_line(self) -> None:
        panel = self.current_panel()
        text = f"{panel.PANEL_TITLE} — {panel.mode()}" if panel else ""
        with contextlib.suppress(NoMatches):  # during shutdown
            self.query_one("#modeline", Static).update(Text(text))

    def on_descendant_focus(self, _event) -> None:
        self.update_mode_line()

    # ------------------------------------------------------------------ refresh (worker)
    @work(thread=True, exclusive=True, group="refresh")
    def refresh_data(self) -> None:
        t0 = time.perf_counter()
        svc = self.service
        runs = svc.list_runs()
        models = svc.list_models(include_archived=True)
        system = svc.system_snapshot(runs)
        active = next((m.id for m in models if m.active), None)
        latest = next((m.name for m in models if m.latest), None)
        self.post_message(Snapshot(runs, models, system, active, latest,
                                   (time.perf_counter() - t0) * 1000))

    def on_snapshot(self, snap: Snapshot) -> None:
        with contextlib.suppress(NoMatches):  # a refresh landing while the app shuts down
            self.apply_snapshot(snap)

    def apply_snapshot(self, snap: Snapshot) -> None:
        t0 = time.perf_counter()
        self.runs_panel.update_runs(snap.runs)
        self.system_panel.update_system(snap.system)
        self.models_by_id = {m.id: m for m in snap.models}
        fallback = next((m.id for m in snap.models if m.name == snap.latest), None)
        self.active_id = snap.active_id if snap.active_id in self.models_by_id else fallback
        self.models_panel.update_models(snap.models, self.active_id, snap.latest)
        selected = self.models_by_id.get(self.active_id) if self.active_id else None
        self.train_panel.set_model(selected)
        panel = self.generate_panel
        changed = selected is not None and (panel.model is None or panel.model.id != selected.id)
        self.generate_panel.set_model(
            selected, self.service.chat_base(selected) if selected is not None else None,
            chat=self.service.has_chat(selected) if changed else None)
        self.last_refresh_ms = {"read": snap.read_ms, "apply": (time.perf_counter() - t0) * 1000}

    # ------------------------------------------------------------------ A: runs
    def on_runs_panel_show_details(self, message: RunsPanel.ShowDetails) -> None:
        self.load_details(message.run_id)

    @work(thread=True, group="io")
    def load_details(self, run_id: str) -> None:
        def reload() -> tuple[RunDetail, LossCurve]:
            return self.service.run_detail(run_id, log_lines=20), self.service.loss_curve(run_id)

        try:
            detail, curve = reload()
        except Exception as exc:
            self.call_from_thread(self.show_error, error_text(exc))
            return
        self.call_from_thread(self.push_screen, RunDetailScreen(detail, curve, reload,
                                                                every=self.refresh_s))

    def on_runs_panel_stop_run(self, message: RunsPanel.StopRun) -> None:
        if not message.active:
            self.notify(f"run {message.run_id} is not running ({message.status})",
                        markup=False)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.stop_run(message.run_id)

        self.push_screen(ConfirmScreen(f"Stop run {message.run_id}? It finishes its step, "
                                       "writes a checkpoint and pauses.", yes_label="Stop"),
                         answer)

    @work(thread=True, group="io")
    def stop_run(self, run_id: str) -> None:
        try:
            self.service.stop(run_id, wait=False)
            self.call_from_thread(self.notify, f"asked run {run_id} to pause", markup=False)
        except Exception as exc:
            self.call_from_thread(self.show_error, error_text(exc))
        self.call_from_thread(self.refresh_data)

    # ------------------------------------------------------------------ C: train
    def on_train_panel_launch(self, message: TrainPanel.Launch) -> None:
        self.train_panel.show_result("estimating...")
        self.estimate_training(message.form)

    def on_train_panel_pick_dataset(self, message: TrainPanel.PickDataset) -> None:
        self.load_dataset_choices(message.current)

    @work(thread=True, exclusive=True, group="datasets")
    def load_dataset_choices(self, current: str) -> None:
        try:
            choices = self.service.dataset_choices()
        except Exception as exc:
            self.call_from_thread(self.train_panel.show_result, error_text(exc), error=True)
            return
        self.call_from_thread(self.pick_dataset, choices, current)

    def pick_dataset(self, choices: DatasetChoices, current: str) -> None:
        def picked(spec: str | None) -> None:
            if spec is not None:
                self.train_panel.set_dataset(spec)

        self.push_screen(DatasetPickerScreen(choices, current), picked)

    @work(thread=True, group="launch")
    def estimate_training(self, form: TrainForm) -> None:
        """The dry-run estimate (data, model, steps, memory; no timed steps: those would keep
        the question waiting for seconds to minutes) shown in the confirmation. An estimate
        that fails is the launch failing: say why and do not ask."""
        panel = self.train_panel
        try:
            if form.action == "resume":
                est = self.service.estimate_resume(form.model, timed_steps=0,
                                                   **self._resume_args(form))
            else:
                est = self.service.estimate(self._train_request(form), timed_steps=0)
        except Exception as exc:
            self.call_from_thread(panel.show_result, error_text(exc), error=True)
            return
        self.call_from_thread(self.confirm_training, form, estimate_text(est))

    def confirm_training(self, form: TrainForm, estimate: str) -> None:
        def answer(yes: bool | None) -> None:
            if yes:
                self.train_panel.show_result("starting...")
                self.launch_training(form)
            else:
                self.train_panel.show_result("cancelled")

        self.train_panel.show_result(estimate.splitlines()[0] if estimate else "")
        self.push_screen(ConfirmScreen(f"{form.summary()}\n\n{estimate}",
                                       yes_label="Start" if form.action == "start"
                                       else "Resume"), answer)

    def _resume_args(self, form: TrainForm) -> dict[str, Any]:
        return {"or_more_epochs": form.epochs,
                "options": LaunchOptions(device=form.device, precision=form.precision)}

    @work(thread=True, group="launch")
    def launch_training(self, form: TrainForm) -> None:
        panel = self.train_panel
        try:
            if form.action == "resume":
                launch = self.service.resume(form.model, command=["llm-trainer", "tui"],
                                             **self._resume_args(form))
            else:
                launch = self.service.train(self._train_request(form))
        except Exception as exc:
            self.call_from_thread(panel.show_result, error_text(exc), error=True)
            return
        notes = f" ({'; '.join(launch.notes)})" if launch.notes else ""
        self.call_from_thread(panel.show_result, f"started run {launch.run_id} (pid "
                                                 f"{launch.pid}) for {launch.model_name}{notes}")
        self.call_from_thread(self.refresh_data)

    def _train_request(self, form: TrainForm) -> TrainRequest:
        """The request `llm-trainer train` builds from the same options (its --lora,
        --freeze-layers and --init-from included); the planner checks them all."""
        options = LaunchOptions(epochs=form.epochs, batch_size=form.batch_size,
                                seq_len=form.seq_len, device=form.device,
                                precision=form.precision, dataset=form.dataset,
                                lora=form.lora, freeze_layers=form.freeze_layers)
        return self.service.panel_request(options, preset=form.preset, model=form.model,
                                          name=form.name, init_from=form.init_from,
                                          profile=form.profile)

    # ------------------------------------------------------------------ D: generate
    def on_generate_panel_generate(self, message: GeneratePanel.Generate) -> None:
        panel = self.generate_panel
        model = panel.model
        if model is None:
            return
        panel.set_busy(True)
        self.generation_cancel.clear()
        form = message.form
        if form.chat:
            panel.query_one("#prompt", Input).value = ""
            self.chat_turn(model.name, form)
            return
        panel.output.write_line("")
        panel.output.write(form.prompt)
        self.generate(model.name, form)

    def on_generate_panel_reset_chat(self, _message: GeneratePanel.ResetChat) -> None:
        if self.chat is not None:
            self.chat.reset()

    def on_generate_panel_cancel(self, _message: GeneratePanel.Cancel) -> None:
        self.generation_cancel.set()

    @work(thread=True, group="generate", exclusive=True)
    def generate(self, model_name: str, form: GenerateForm) -> None:
        panel = self.generate_panel
        out = panel.output
        try:
            settings = GenerationSettings(max_new_tokens=form.max_new_tokens,
                                          temperature=form.temperature, top_k=form.top_k)
            gen = self.service.generate(settings, model=model_name, device="auto")
            for note in gen.notes:
                self.call_from_thread(self.notify, note, severity="warning", markup=False)
            prompt_notes: list[str] = []
            buffer: list[str] = []
            last = time.monotonic()
            for piece in gen.stream(form.prompt, on_note=prompt_notes.append):
                if prompt_notes:
                    self.call_from_thread(self.notify, prompt_notes.pop(), markup=False)
                if self.generation_cancel.is_set():
                    buffer.append("\n[cancelled]")
                    break
                buffer.append(piece)
                if time.monotonic() - last > 0.05:  # batch UI updates: ~20 per second
                    self.call_from_thread(out.write, "".join(buffer))
                    buffer, last = [], time.monotonic()
            if buffer:
                self.call_from_thread(out.write, "".join(buffer))
        except Exception as exc:
            self.call_from_thread(out.write_line, f"\nerror: {error_text(exc)}")
        finally:
            self.call_from_thread(panel.set_busy, False)

    @work(thread=True, group="generate", exclusive=True)
    def chat_turn(self, model_name: str, form: GenerateForm) -> None:
        """One turn of the panel's conversation: the model (and its base) loaded on the first
        turn, or again when the model or the Base box changed; each reply streamed under its
        model's name."""
        panel = self.generate_panel
        out = panel.output
        try:
            settings = GenerationSettings(max_new_tokens=form.max_new_tokens,
                                          temperature=form.temperature, top_k=form.top_k)
            key = (model_name, form.compare_base)
            if self.chat is None or self.chat_key != key:
                self.chat, self.chat_key = None, None
                self.chat = self.service.chat(settings, model=model_name, device="auto",
                                              compare_base=form.compare_base)
                self.chat_key = key
                for note in self.chat.notes:
                    self.call_from_thread(self.notify, note, severity="warning", markup=False)
                names = " and ".join(side.label for side in self.chat.sides)
                self.call_from_thread(panel.show_line, f"-- new conversation with {names} --")
            conversation = self.chat
            conversation.set_system(form.system)
            self.call_from_thread(panel.show_line, f"you: {form.prompt}")
            def note(text: str) -> None:  # older exchanges left out of what the model sees
                self.call_from_thread(self.notify, text, markup=False)

            for side, stream in conversation.answers(form.prompt, settings, on_note=note):
                self.call_from_thread(panel.show_line, f"{side.label}: ", end="")
                cancelled = self._stream_into(out, stream)
                self.call_from_thread(out.write, "\n")
                if cancelled:
                    break
        except Exception as exc:
            self.call_from_thread(panel.show_line, f"error: {error_text(exc)}")
        finally:
            self.call_from_thread(panel.set_busy, False)

    def _stream_into(self, out, stream) -> bool:
        """Write a reply's pieces as they come (batched: ~20 UI updates a second); True when
        x cancelled it (the part written stays in the conversation)."""
        buffer: list[str] = []
        last = time.monotonic()
        cancelled = False
        for piece in stream:
            if self.generation_cancel.is_set():
                stream.close()
                buffer.append(" [cancelled]")
                cancelled = True
                break
            buffer.append(piece)
            if time.monotonic() - last > 0.05:
                self.call_from_thread(out.write, "".join(buffer))
                buffer, last = [], time.monotonic()
        if buffer:
            self.call_from_thread(out.write, "".join(buffer))
        return cancelled

    # ------------------------------------------------------------------ E: models
    def on_models_panel_action(self, message: ModelsPanel.Action) -> None:
        model = message.model
        if message.action == "activate":  # a model picked: the train form is for it again
            self.train_panel.end_new_model()
        if message.action == "refresh":
            self.refresh_data()
            return
        if message.action == "delete":
            self.confirm_delete(model)
            return
        self.model_action(message.action, model)

    @work(thread=True, group="io")
    def confirm_delete(self, model: ModelView) -> None:
        """Ask only when the service would allow it (a training model is refused first)."""
        panel = self.models_panel
        try:
            self.service.model_for_change(model.name, "delete")
        except Exception as exc:
            self.call_from_thread(panel.say, error_text(exc), error=True)
            return
        self.call_from_thread(self._ask_delete, model)

    def _ask_delete(self, model: ModelView) -> None:
        panel = self.models_panel

        def answer(yes: bool | None) -> None:
            if yes:
                self.model_action("delete", model)
            else:
                panel.say("delete cancelled")

        self.push_screen(ConfirmScreen(
            f"Delete model {model.name} and all its checkpoints? This cannot be undone.",
            yes_label="Delete"), answer)

    def on_models_panel_rename(self, message: ModelsPanel.Rename) -> None:
        self.rename_model(message.model, message.new_name)

    @work(thread=True, group="io")
    def rename_model(self, model: ModelView, new_name: str) -> None:
        panel = self.models_panel
        try:
            self.service.rename_model(model.name, new_name)
        except Exception as exc:
            self.call_from_thread(panel.end_rename, error_text(exc), error=True)
            return
        self.call_from_thread(panel.end_rename, f"renamed {model.name} to {new_name}")
        self.call_from_thread(self.refresh_data)

    @work(thread=True, group="io")
    def model_action(self, action: str, model: ModelView) -> None:
        panel = self.models_panel
        svc = self.service
        try:
            if action == "activate":
                svc.activate_model(model.name)
                text = f"active model: {model.name}"
            elif action == "archive":
                archived = not model.archived
                svc.archive_model(model.name, archived)
                text = f"{'archived' if archived else 'unarchived'} {model.name}"
            elif action == "delete":
                svc.delete_model(model.name)
                text = f"deleted {model.name}"
            else:  # pragma: no cover - the panel only sends the actions above
                return
        except Exception as exc:
            self.call_from_thread(panel.say, error_text(exc), error=True)
            return
        self.call_from_thread(panel.say, text)
        self.call_from_thread(self.refresh_data)


def run_tui(home: str | Path | None = None) -> None:
    TrainerApp(home).run()
