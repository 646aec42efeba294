"""The dashboard as the user sees it at 80x24, 120x34 and 160x48: every panel's key fields on
screen, Tab between panels, focus drawn the same way everywhere, the new-model toggle, the
dataset a user picked kept across presets, and error pop-ups that show all of their text.
Real homes (records written straight to disk, a real process as the running worker), the
real Service; the screen is read as composed for the terminal (tests/tui/reading.py)."""

from __future__ import annotations

import re
import time

import pytest
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, OptionList, Select

from llm_trainer.store.runs import RunStore
from llm_trainer.tui.app import TrainerApp
from tests.helpers import wait_until
from tests.tui.reading import asking, panel_text, screen_lines, text_of

pytestmark = pytest.mark.slow  # a whole dashboard per test (the fast suite's 30 s budget)

SIZES = [(80, 24), (120, 34), (160, 48)]
ORDER = ["runs", "system", "train", "generate", "models"]


async def started(pilot, app) -> None:
    """The first refresh has filled the panels."""
    await wait_until(pilot, lambda: app.query_one("#runs-table", DataTable).row_count == 1
                     and app.query_one("#models-table", DataTable).row_count == 2,
                     timeout=20)
    await pilot.pause(0.2)


def flat(text: str) -> str:
    """Box-drawing and block characters out, whitespace collapsed: wrapped text as one line."""
    return " ".join(re.sub(r"[\u2500-\u259f▔▁]", " ", text).split())


@pytest.mark.parametrize("size", SIZES)
async def test_every_panel_shows_its_key_fields(dashboard_home, size):
    app = TrainerApp(dashboard_home, refresh_s=30)
    async with app.run_test(size=size) as pilot:
        await started(pilot, app)
        app.generate_panel.output.write("output line 1\noutput line 2\noutput line 3")
        await pilot.pause(0.2)

        runs = panel_text(app, "runs")
        assert "running" in runs and "1.8484" in runs, runs  # status and loss
        # a short label, not the run id: the model and its start time, with the date when that
        # was not today (the fixture's run started 90 s ago: yesterday just after midnight)
        store = RunStore(dashboard_home)
        run_id = next(r for r in store.run_ids() if r.endswith("-bard-long"))
        start = time.localtime(store.read_meta(run_id).created_at)
        day = "" if time.strftime("%Y%m%d", start) == time.strftime("%Y%m%d") else \
            time.strftime("%m-%d ", start)
        assert f"bard-long {day}{time.strftime('%H:%M', start)}" in runs, runs

        system = panel_text(app, "system")
        for field in ("CPU", "RAM", "Remaining"):
            assert field in system, system
        if "n/a" in system.split("CPU")[0]:  # no GPU here: one line says so
            assert sum("GPU" in ln or "VRAM" in ln for ln in system.splitlines()) == 1, system

        train = panel_text(app, "train")
        for field in ("Start", "Resume", "Epochs", "Dataset"):
            assert field in train, train

        generate = panel_text(app, "generate")
        for i in range(1, 4):
            assert f"output line {i}" in generate, generate

        models = panel_text(app, "models")
        assert "bard-long" in models and "1.948" in models, models  # name and loss


async def test_tab_moves_between_panels_and_enter_reaches_the_fields(dashboard_home):
    app = TrainerApp(dashboard_home, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        assert app.current_panel().id == "runs"
        for expected in [*ORDER[1:], ORDER[0]]:
            await pilot.press("tab")
            assert app.current_panel().id == expected
        await pilot.press("shift+tab")
        assert app.current_panel().id == "models"

        # inside a panel: enter reaches its first field, down / up the next ones
        await pilot.press("3", "enter")
        assert isinstance(app.focused, Input) and app.focused.id == "epochs"
        await pilot.press("down")
        assert app.focused.id == "batch"
        await pilot.press("up")
        assert app.focused.id == "epochs"
        await pilot.press("down", "down", "down")  # batch, dataset (seq is fixed), a select
        assert app.focused.id == "preset" and not app.query_one("#preset", Select).expanded
        await pilot.press("escape")  # a select hands the keys back as a text field does
        assert app.focused is app.train_panel
        await pilot.press("enter")
        await pilot.press("tab")  # from a field too, Tab is the next panel
        assert app.current_panel().id == "generate"
        await pilot.press("enter")
        assert app.focused.id == "prompt"


async def test_every_panel_shows_focus_the_same_way(dashboard_home):
    app = TrainerApp(dashboard_home, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        focused, unfocused = set(), set()
        for key, name in zip("12345", ORDER, strict=True):
            await pilot.press(key)
            await pilot.pause(0.05)
            for panel in app.query(".panel"):
                border = panel.styles.border_top
                (focused if panel.id == name else unfocused).add(
                    (border[0], border[1].hex))
        assert len(focused) == 1 and len(unfocused) == 1, (focused, unfocused)
        assert focused != unfocused


async def test_new_model_toggle_is_visible_and_picking_a_model_ends_it(dashboard_home):
    app = TrainerApp(dashboard_home, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        def selected(name: str) -> bool:  # the model line names it (shortened at 80 columns)
            line = text_of(app, "#train-model")
            return line.startswith((f"Selected Model: {name} (", f"{name} ("))

        assert selected("bard-long")
        await pilot.press("3", "n")
        shown = flat(panel_text(app, "train"))
        assert "New model (n: back" in shown, shown  # the state, and how to go back
        assert "new model" in app.train_panel.border_subtitle
        assert not app.train_panel.query_one("#name").disabled
        await pilot.press("n")  # n again: back to the selected model
        assert selected("bard-long") and "new model" not in panel_text(app, "train").lower()

        await pilot.press("n", "5")
        table = app.query_one("#models-table", DataTable)
        table.move_cursor(row=[k.value for k in table.rows].index(
            next(m.id for m in app.models_panel.models if m.name == "bard")))
        await pilot.press("enter")  # pick bard
        await wait_until(pilot, lambda: selected("bard"), timeout=10)
        assert not app.train_panel.new_model
        assert not app.query_one("#resume").disabled


async def test_a_preset_keeps_the_dataset_the_user_picked(dashboard_home, monkeypatch):
    monkeypatch.chdir(dashboard_home)
    app = TrainerApp(dashboard_home, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        await pilot.press("3", "n", "d")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "DatasetPickerScreen",
                         timeout=10)
        picker = app.screen
        options = picker.query_one(OptionList)
        options.highlighted = options.get_option_index(next(
            oid for oid, spec in picker.specs.items() if spec == "builtin:python-docs"))
        await pilot.press("enter")
        dataset = app.query_one("#dataset", Input)
        await wait_until(pilot, lambda: dataset.value == "builtin:python-docs", timeout=5)
        app.query_one("#preset", Select).value = "shakespeare-char"
        await pilot.pause(0.3)
        assert app.query_one("#seq", Input).value == str(
            app.service.preset_defaults("shakespeare-char").seq_len)  # the preset applied
        assert dataset.value == "builtin:python-docs"  # and the picked dataset stayed
        form = app.train_panel.read_form("start")
        assert form is not None and form.dataset == "builtin:python-docs"
        assert form.preset == "shakespeare-char"
        shown = flat(panel_text(app, "train"))
        assert "builtin:python-docs" in shown and "wikitext-2" not in shown, shown


def popup_text(app) -> str:
    """The text of the pop-up on top, as far as it is on screen."""
    assert isinstance(app.screen, ModalScreen), type(app.screen).__name__
    region = app.screen.children[0].region
    rows = screen_lines(app)[region.y:region.bottom]
    return flat("\n".join(row[region.x:region.right] for row in rows))


async def test_an_error_pop_up_shows_all_of_its_text_wrapped(dashboard_home):
    app = TrainerApp(dashboard_home, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        await pilot.press("3", "n")
        app.query_one("#dataset", Input).value = "/nope/missing.txt"
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, ModalScreen), timeout=15)
        await pilot.pause(0.2)
        shown = popup_text(app)
        assert "dataset '/nope/missing.txt' is not a file or folder" in shown, shown
        assert "a folder with train.txt and valid.txt)" in shown, shown
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, ModalScreen)
        assert app.current_panel().id == "train"


async def test_the_start_confirmation_fits_80x24_with_its_buttons(dashboard_home):
    app = TrainerApp(dashboard_home, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot, app)
        await pilot.press("3", "n")
        app.query_one("#preset", Select).value = "tiny"
        await pilot.pause(0.1)
        app.query_one("#dataset", Input).value = str(dashboard_home / "corpus.txt")
        await pilot.press("s")
        await wait_until(pilot, lambda: asking(app),
                         timeout=60)
        await pilot.pause(0.2)
        dialog = app.screen.query_one("#dialog").region
        assert dialog.y >= 0 and dialog.bottom <= 23, dialog  # above the footer
        for button in ("#yes", "#no"):
            assert dialog.contains_region(app.screen.query_one(button).region), button
        shown = popup_text(app)
        assert "Start" in shown and "No" in shown, shown
        assert shown.startswith("Confirm Train a new model"), shown  # the question's start
        await pilot.press("n")
        await wait_until(pilot, lambda: "cancelled" in text_of(app, "#train-result"))
