"""Panel C — Train Selected Model: options, validation, confirmation, Start / Resume.

The fine-tuning fields (init from, profile, LoRA, frozen layers) are passed on as typed,
exactly as `llm-trainer train --init-from / --profile / --lora / --freeze-layers` pass them:
the planner decides what they mean and refuses what it cannot do, in one line shown under the
form. Choosing a profile fills Epochs and Seq len with its values (the confirmation's
estimate lists all of them, with their reasons)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from llm_trainer.app.options import BY_NAME
from llm_trainer.render import estimate_lines
from llm_trainer.tui.panels.base import Field, FormScroll, FormSelect, Panel
from llm_trainer.views import ModelView

DEVICES = ("auto", "cpu", "cuda", "mps")
# the panel's fields that are launch options (app/options.py): field id -> option; each
# field's tooltip is the option's help, as `llm-trainer train --help` shows it
FIELD_OPTIONS = {"epochs": "epochs", "batch": "batch_size", "seq": "seq_len",
                 "device": "device", "precision": "precision", "dataset": "dataset",
                 "lora": "lora", "freeze": "freeze_layers"}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NO_PROFILE = "none"  # the Profile select's first choice: no --profile


@dataclass
class TrainForm:
    """What the user asked for, validated."""

    action: str  # "start" | "resume"
    model: str | None  # None: a new model
    epochs: int
    batch_size: int
    seq_len: int | None  # None: left empty, the default (the preset's, or the folder's)
    device: str
    precision: str
    preset: str
    dataset: str
    name: str | None
    init_from: str | None = None  # as typed: MODEL, a checkpoint folder or hf:FOLDER
    profile: str | None = None  # a use-case profile (--profile); None: none
    lora: str | None = None  # as typed: r=8,alpha=16,... (LaunchOptions.lora)
    freeze_layers: str | None = None  # as typed: the config checks it is a whole number >= 0

    def summary(self) -> str:
        target = f"model {self.model}" if self.model else (
            f"a new model {self.name}" if self.name else "a new model")
        if self.action == "resume":
            return (f"Resume {target} from its latest checkpoint ({self.epochs} more epoch"
                    f"{'s' if self.epochs != 1 else ''} if its plan is finished), device "
                    f"{self.device}, precision {self.precision}?")
        what = f"Fine-tune {self.init_from} as {target}" if self.init_from else \
            f"Train {target}"
        seq = f"sequence length {self.seq_len}" if self.seq_len else \
            "the default sequence length"
        tuning = "".join((f", profile {self.profile}" if self.profile else "",
                          f", LoRA {self.lora}" if self.lora else "",
                          f", freeze layers {self.freeze_layers}"
                          if self.freeze_layers else ""))
        return (f"{what} on {self.dataset} for {self.epochs} epoch"
                f"{'s' if self.epochs != 1 else ''}: preset {self.preset}, batch "
                f"{self.batch_size}, {seq}{tuning}, device "
                f"{self.device}, precision {self.precision}?")


def estimate_text(est: dict) -> str:
    """The service's dry-run estimate, for the confirmation (labelled as an estimate)."""
    return "\n".join(estimate_lines(est))


class TrainPanel(Panel):
    PANEL_TITLE = "C · Train Selected Model"
    FIELDS = ("epochs", "batch", "seq", "dataset", "preset", "profile", "device", "precision",
              "init-from", "lora", "freeze", "name")
    can_focus = True
    BINDINGS = [
        Binding("s", "launch('start')", "start"),
        Binding("u", "launch('resume')", "resume"),
        Binding("left_square_bracket", "bump('epochs', -1)", "epochs-", key_display="["),
        Binding("right_square_bracket", "bump('epochs', 1)", "epochs+", key_display="]"),
        Binding("b", "bump('batch', -1)", "batch-"),
        Binding("B", "bump('batch', 1)", "batch+"),
        Binding("n", "new_model", "new model"),
        Binding("d", "pick_dataset", "dataset"),
    ]

    @dataclass
    class Launch(Message):
        form: TrainForm

    @dataclass
    class PickDataset(Message):
        """Open the dataset picker (the app reads the choices from the service)."""

        current: str

    def __init__(self, presets: list[str], profiles: list[str] | None = None) -> None:
        super().__init__(id="train")
        self.presets = presets or ["default"]
        self.profiles = profiles or []
        self.model: ModelView | None = None  # the selected (active) model
        self.new_model = False  # n: a new model instead of the selected one, until n again
        # the dataset the user picked (d) or typed: kept over presets and model changes,
        # which otherwise fill the field with theirs
        self.dataset_chosen = False
        self.model_line: tuple[str, str] | None = None  # the model line, and its short form

    def compose(self) -> ComposeResult:
        # the selected model and the buttons on top, outside the scrolling form: on a short
        # terminal what is trained, and how to start it, stay in sight
        with Horizontal(classes="row", id="train-head"):
            yield Static(Text("Selected Model: new model"), id="train-model")
            yield Button("Start", id="start", compact=True, variant="success")
            yield Button("Resume", id="resume", compact=True, variant="primary")
        with FormScroll(id="train-form"):
            with Horizontal(classes="row"):
                yield Label("Epochs")
                yield Field("1", id="epochs", type="integer", compact=True, classes="num")
                yield Label("Batch")
                yield Field("12", id="batch", type="integer", compact=True, classes="num")
                yield Label("Seq len")
                yield Field("128", id="seq", type="integer", compact=True, classes="num",
                            placeholder="default")
            with Horizontal(classes="row"):
                yield Label("Dataset")
                yield Field("wikitext-2", id="dataset", compact=True)
            with Horizontal(classes="row"):
                yield Label("Preset")
                yield FormSelect([(p, p) for p in self.presets], id="preset",
                                 allow_blank=False, compact=True,
                                 value="default" if "default" in self.presets
                                 else self.presets[0])
                yield Label("Profile")
                yield FormSelect([(NO_PROFILE, NO_PROFILE), *((p, p) for p in self.profiles)],
                                 value=NO_PROFILE, id="profile", allow_blank=False,
                                 compact=True)
            with Horizontal(classes="row"):
                yield Label("Device")
                yield FormSelect([(d, d) for d in DEVICES], value="auto", id="device",
                                 allow_blank=False, compact=True)
                yield Label("Precision")
                yield FormSelect([(p, p) for p in PRECISIONS], value="auto", id="precision",
                                 allow_blank=False, compact=True)
            with Horizontal(classes="row"):
                yield Label("Init from")
                yield Field("", id="init-from", compact=True,
                            placeholder="a model, a checkpoint folder or hf:FOLDER to start "
                                        "from (empty: train from scratch)")
            with Horizontal(classes="row"):
                yield Label("LoRA")
                yield Field("", id="lora", compact=True,
                            placeholder="r=8,alpha=16,dropout=0.05,targets=c_attn,c_proj")
                yield Label("Freeze layers")
                yield Field("", id="freeze", type="integer", compact=True, classes="num",
                            placeholder="N")
            with Horizontal(classes="row"):
                yield Label("Name")
                yield Field("", id="name", placeholder="(automatic)", compact=True)
        # outside the scrolling form: an error stays in sight on a short terminal (one line;
        # a longer one also opens in a pop-up, wrapped)
        result = Static(Text(""), id="train-result")
        result.display = False
        yield result

    def on_mount(self) -> None:
        for field_id, name in FIELD_OPTIONS.items():
            self.query_one(f"#{field_id}").tooltip = BY_NAME[name].help
        self.query_one("#profile").tooltip = (
            "a use-case profile: LoRA, learning rate, epochs, loss_on, context and sampling "
            "for a fine-tune (needs Init from); the estimate lists each value with its reason")

    # ------------------------------------------------------------------ state from the app
    def set_model(self, model: ModelView | None) -> None:
        """Called on every refresh: fields are filled from the model only when the selection
        changes, so what the user typed survives."""
        changed = (model.id if model else None) != (self.model.id if self.model else None)
        self.model = model
        seq = self.query_one("#seq", Input)
        name = self.query_one("#name", Input)
        init_from = self.query_one("#init-from", Input)
        profile = self.query_one("#profile", Select)
        if model is None or self.new_model:
            # the toggle's state in words, with the way back (n) while a model is selected
            self.show_model_line("Selected Model: new model" if model is None else
                                 f"New model (n: back to {model.name})",
                                 "new model" if model is None else "New model (n: back)")
            self.border_subtitle = "new model" if self.new_model and model is not None else ""
            seq.disabled = name.disabled = init_from.disabled = profile.disabled = False
            self.query_one("#resume", Button).disabled = True
        else:
            arch = model.architecture or {}
            self.show_model_line(f"Selected Model: {model.name} ({model.status}, "
                                 f"{model.epochs_completed or 0:.2f} epochs)",
                                 f"{model.name} ({model.status})")
            self.border_subtitle = ""
            if changed:
                if arch.get("block_size"):
                    seq.value = str(arch["block_size"])
                if model.datasets and not self.dataset_chosen:
                    self.query_one("#dataset", Input).value = model.datasets[-1]["spec"]
            # the architecture of a model is fixed; a fine-tune starts a new model (press n)
            seq.disabled = name.disabled = init_from.disabled = profile.disabled = True
            self.query_one("#resume", Button).disabled = False

    def show_model_line(self, text: str, short: str) -> None:
        """The model line beside Start / Resume: ``short`` where ``text`` does not fit."""
        label = self.query_one("#train-model", Static)
        self.model_line = (text, short)
        width = label.size.width
        chosen = text if not width or len(text) <= width else short
        label.update(Text(chosen, no_wrap=True, overflow="ellipsis"))

    def on_resize(self) -> None:
        if self.model_line is not None:
            self.show_model_line(*self.model_line)

    def end_new_model(self) -> None:
        """A model picked in Model Selection: the form is for it again, not a new model."""
        if self.new_model:
            self.action_new_model()

    def show_result(self, text: str, *, error: bool = False) -> None:
        """One line under the form; an error longer than the line also opens in a pop-up,
        wrapped, so that none of it is cut."""
        line = self.query_one("#train-result", Static)
        line.display = bool(text)
        line.update(Text(text, style="red" if error else "green", no_wrap=True,
                         overflow="ellipsis"))
        if error and (len(text) > self.content_size.width or "\n" in text):
            show_error = getattr(self.app, "show_error", None)
            if show_error is not None:
                show_error(text, title="Cannot train")

    def mode(self) -> str:
        focused = self.app.focused
        if isinstance(focused, Input):
            return f"editing {focused.id}"
        return "ready"

    # ------------------------------------------------------------------ actions
    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "preset" and event.value is not Select.BLANK:
            self.apply_preset(str(event.value))
        elif event.select.id == "profile" and event.value is not Select.BLANK:
            self.apply_profile(str(event.value))

    def chosen_profile(self) -> str | None:
        value = self.query_one("#profile", Select).value
        return None if value in (NO_PROFILE, Select.BLANK) else str(value)

    def apply_profile(self, profile: str) -> None:
        """A profile's epochs and context in their fields, and what it is for below the form;
        back to none: the preset's context again."""
        if profile == NO_PROFILE:
            self.apply_preset(str(self.query_one("#preset", Select).value))
            return
        try:
            own = self.app.service.profile_defaults(profile)
        except Exception as exc:  # a user profile with an error: say so, keep the form
            self.show_result(str(exc), error=True)
            return
        if own.epochs is not None:
            self.query_one("#epochs", Input).value = str(own.epochs)
        if own.seq_len is not None and (self.model is None or self.new_model):
            self.query_one("#seq", Input).value = str(own.seq_len)
        self.show_result(f"profile {own.name}: {own.description}")

    def apply_preset(self, preset: str) -> None:
        try:
            defaults = self.app.service.preset_defaults(preset)
        except Exception as exc:  # a user preset with an error: say so, keep the form
            self.show_result(str(exc), error=True)
            return
        self.query_one("#batch", Input).value = str(defaults.batch_size)
        dataset = self.query_one("#dataset", Input)
        if not self.dataset_chosen:
            dataset.value = defaults.dataset
        elif dataset.value.strip() != defaults.dataset:  # say so: the field is the user's
            self.show_result(f"dataset kept: {dataset.value.strip()}")
        if self.model is None or self.new_model:
            self.query_one("#seq", Input).value = str(defaults.seq_len)
        profile = self.chosen_profile()
        if profile is not None:  # the profile sits over the preset
            self.apply_profile(profile)

    def action_new_model(self) -> None:
        self.new_model = not self.new_model
        model, self.model = self.model, None
        self.set_model(model)
        if self.new_model:
            self.apply_preset(str(self.query_one("#preset", Select).value))

    def action_pick_dataset(self) -> None:
        self.post_message(self.PickDataset(self.query_one("#dataset", Input).value))

    def set_dataset(self, spec: str) -> None:
        """The picker's choice, in the Dataset field (typed over like anything typed there)."""
        self.dataset_chosen = True
        box = self.query_one("#dataset", Input)
        box.value = spec
        box.cursor_position = len(spec)
        self.show_result(f"dataset: {spec}")

    def action_bump(self, field: str, delta: int) -> None:
        box = self.query_one(f"#{field}", Input)
        try:
            value = int(box.value or 0)
        except ValueError:
            value = 1
        box.value = str(max(1, value + delta))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("start", "resume"):
            event.stop()
            self.action_launch(event.button.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "dataset" and event.input.has_focus:  # typed by the user
            self.dataset_chosen = bool(event.value.strip())

    def action_launch(self, action: str) -> None:
        form = self.read_form(action)
        if form is not None:
            self.post_message(self.Launch(form))

    def read_form(self, action: str) -> TrainForm | None:
        def number(field: str, label: str, minimum: int) -> int | None:
            text = self.query_one(f"#{field}", Input).value.strip()
            try:
                value = int(text)
            except ValueError:
                self.show_result(f"{label} must be a whole number (got {text!r})", error=True)
                return None
            if value < minimum:
                self.show_result(f"{label} must be at least {minimum} (got {value})", error=True)
                return None
            return value

        def text(field: str) -> str | None:  # None: left empty
            return self.query_one(f"#{field}", Input).value.strip() or None

        epochs = number("epochs", "Epochs", 1)
        batch = number("batch", "Batch size", 1) if epochs else None
        if batch is None:
            return None
        seq = None  # empty: not asked for, as when `llm-trainer train` has no --seq-len
        if text("seq") is not None:
            seq = number("seq", "Sequence length", 2)
            if seq is None:
                return None
        dataset = self.query_one("#dataset", Input).value.strip()
        if not dataset:
            self.show_result("Dataset cannot be empty: wikitext-2, builtin:python-docs, "
                             "hf:NAME or a path", error=True)
            return None
        existing = None if (self.model is None or self.new_model) else self.model.name
        if action == "resume" and existing is None:
            self.show_result("Resume needs a trained model: pick one in Model Selection (5)",
                             error=True)
            return None
        return TrainForm(action=action, model=existing, epochs=epochs, batch_size=batch,
                         seq_len=seq, device=str(self.query_one("#device", Select).value),
                         precision=str(self.query_one("#precision", Select).value),
                         preset=str(self.query_one("#preset", Select).value), dataset=dataset,
                         name=None if existing else text("name"),
                         init_from=None if existing else text("init-from"),
                         profile=None if existing else self.chosen_profile(),
                         lora=text("lora"), freeze_layers=text("freeze"))
