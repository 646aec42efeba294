"""The dashboard driven from the keyboard with Textual's Pilot, over a real home folder:
real runs, real models, real worker processes."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from textual.widgets import DataTable, Input, Static

from llm_trainer.store.models import ModelStore
from llm_trainer.store.records import RunMeta, RunState
from llm_trainer.store.runs import RunStore
from llm_trainer.tui.app import TrainerApp
from llm_trainer.tui.panels.generate import OutputArea
from tests.helpers import TINY, corpus_text, run_cli, stop_all_runs, wait_until
from tests.tui.reading import asking, text_of

pytestmark = pytest.mark.slow  # real training processes


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("tui-src")
    (home / "corpus.txt").write_text(corpus_text(40_000))
    proc = run_cli("train", *TINY, "--dataset", "corpus.txt", "--name", "m1", "--max-steps",
                   "30", "--foreground", "--sample", "0", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return home


@pytest.fixture
def home(trained_home, tmp_path):
    copy = tmp_path / "home"
    shutil.copytree(trained_home, copy)
    yield copy
    stop_all_runs(copy)



def shown_bindings(app) -> dict[str, str]:
    """What the footer lists: key -> description, for the focused widget's chain."""
    out = {}
    for key, (_node, binding, _enabled, _tip) in app.active_bindings.items():
        if binding.show:
            out[binding.key_display or key] = binding.description
    return out


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_two_by_three_geometry(home, size):
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        r = {p.id: p.region for p in app.query(".panel")}
        width, height = size
        a, b, c, d, e = (r[k] for k in ("runs", "system", "train", "generate", "models"))
        assert a.x == c.x == d.x == 0 and b.x == e.x and b.x >= a.right
        assert a.y == b.y == 0 and c.y == a.bottom and d.y == c.bottom
        assert e.y == c.y and e.bottom == d.bottom  # E spans rows 2-3
        for region in r.values():
            assert region.right <= width and region.bottom <= height - 2  # mode line, footer
            assert region.width > 10 and region.height >= 5
        regions = list(r.values())
        for i, one in enumerate(regions):
            for other in regions[i + 1:]:
                assert not one.overlaps(other)
        for p in app.query(".panel"):
            assert p.border_title and p.styles.border_title_align == "center"


async def test_empty_states(tmp_path):
    app = TrainerApp(tmp_path, refresh_s=0.2)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.8)
        assert "No active runs." in text_of(app, "#runs-empty")
        assert "no active run" in text_of(app, "#system-body")
        assert "No models yet" in text_of(app, "#models-empty")
        assert "Selected Model: new model" in text_of(app, "#train-model")
        assert "Selected Model: none" in text_of(app, "#gen-model")
        await pilot.press("4", "g")
        await pilot.pause(0.2)
        log = app.query_one("#gen-output", OutputArea)
        assert "No model selected" in "\n".join(log.lines)


async def test_telemetry_fallback_is_shown_with_its_reason(tmp_path):
    app = TrainerApp(tmp_path, refresh_s=0.2)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.8)
        body = text_of(app, "#system-body")
        assert "GPU usage   n/a — " in body  # this machine has no NVIDIA driver: say why
        assert "CPU cores   2" in body or "CPU cores" in body
        assert "RAM" in body and "MB" in body


async def test_focus_keys_and_footer_follow_the_panel_and_mode(home):
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        footer = shown_bindings(app)
        assert footer["f"] == "finished runs" and footer["x"] == "stop run"
        assert footer["tab"] == "next" and footer["shift+tab"] == "back"
        assert "q" not in footer and "1" not in footer  # globals: only Tab / Shift-Tab
        await pilot.press("3")
        footer = shown_bindings(app)
        assert footer["s"] == "start" and footer["u"] == "resume" and footer["["] == "epochs-"
        assert "x" not in footer
        assert "C · Train Selected Model — ready" in text_of(app, "#modeline")
        assert footer["enter"] == "fields"
        await pilot.press("enter")  # into the form (Tab is the next panel)
        assert isinstance(app.focused, Input) and app.focused.id == "epochs"
        assert "editing epochs" in text_of(app, "#modeline")
        footer = shown_bindings(app)
        assert "s" not in footer  # typing, not shortcuts
        assert footer["enter"] == "done" and footer["escape"] == "leave field"
        await pilot.press("escape")
        assert app.focused.id == "train"
        await pilot.press("5")
        assert shown_bindings(app)["e"] == "rename"
        await pilot.press("e")
        assert "renaming" in text_of(app, "#modeline")
        assert shown_bindings(app)["enter"] == "save"
        await pilot.press("escape")
        assert "browsing" in text_of(app, "#modeline")
        await pilot.press("shift+tab")
        assert app.focused is not None


async def test_text_fields_take_every_printable_key(home):
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("4", "i")
        assert app.focused.id == "prompt"
        await pilot.press(*"so q 12345 [/] x", "space", "j", "k")
        assert app.query_one("#prompt", Input).value == "so q 12345 [/] x jk"
        assert app.is_running  # q did not quit, digits did not move focus
        assert app.focused.id == "prompt"


async def test_select_model_train_watch_generate(home):
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("5", "enter")  # set m1 active
        await wait_until(pilot, lambda: "Selected Model: m1" in text_of(app, "#train-model"))
        assert "Selected Model: m1" in text_of(app, "#gen-model")
        assert ModelStore(home).active().name == "m1"

        # C: train the selected model (long enough to watch it) with a bigger batch
        await pilot.press("3", "]", "B")
        assert app.query_one("#epochs", Input).value == "2"
        await pilot.press("enter")
        assert app.focused.id == "epochs"
        await pilot.press("backspace", *"300", "escape", "s")
        await wait_until(pilot, lambda: asking(app))
        await pilot.press("y")
        await wait_until(pilot, lambda: "started run" in text_of(app, "#train-result"))
        run_id = text_of(app, "#train-result").split()[2]
        table = app.query_one("#runs-table", DataTable)
        await wait_until(pilot, lambda: run_id in [k.value for k in table.rows])
        await wait_until(pilot, lambda: RunStore(home).read_state(run_id).step > 0)
        await pilot.press("1")
        assert "m1" in text_of(app, "#runs-summary")

        # D: generate while it trains; the prompt has spaces and markup-like text
        await pilot.press("4", "i", *"To be [/] or", "enter")
        await wait_until(pilot, lambda: not app.query_one("#generate").busy and
                         len("".join(app.query_one("#gen-output", OutputArea).lines)) > 20,
                         timeout=90)
        output = "\n".join(app.query_one("#gen-output", OutputArea).lines)
        assert "To be [/] or" in output and "error" not in output

        # A: the run detail, then stop it from the dashboard (esc leaves the prompt first)
        await pilot.press("escape", "1", "enter")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunDetailScreen")
        body = str(app.screen.query_one("#detail-body", Static).render())
        assert run_id in body and "last log lines:" in body
        await pilot.press("escape")
        await pilot.press("x")
        await wait_until(pilot, lambda: asking(app))
        await pilot.press("y")
        await wait_until(pilot, lambda: RunStore(home).read_state(run_id).status in
                         ("paused", "completed"), timeout=90)


async def test_rename_archive_delete_from_the_keyboard(home):
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("5", "e")
        box = app.query_one("#rename", Input)
        assert box.display and box.value == "m1"
        box.value = ""
        await pilot.press(*"[bold]x[/]", "enter")  # refused, shown exactly as typed
        await pilot.pause(0.5)
        message = text_of(app, "#models-message")
        assert "'[bold]x[/]'" in message and "use letters, digits" in message
        assert box.display  # still editing: fix the name
        box.value = ""
        await pilot.press(*"renamed.v2", "enter")
        await wait_until(pilot, lambda: ModelStore(home).exists("renamed.v2"))
        await wait_until(pilot, lambda: "renamed.v2" in
                         [str(c) for c in app.query_one("#models-table", DataTable)
                          .get_row_at(0)])
        await pilot.press("A")
        await wait_until(pilot, lambda: ModelStore(home).get("renamed.v2").archived)
        await pilot.press("h")  # show archived ones to act on it
        await wait_until(pilot, lambda: app.query_one("#models-table", DataTable).row_count)
        await pilot.press("D")
        await wait_until(pilot, lambda: asking(app))
        await pilot.press("n")
        await pilot.pause(0.3)
        assert ModelStore(home).exists("renamed.v2")
        await pilot.press("D")
        await wait_until(pilot, lambda: asking(app))
        await pilot.press("y")
        await wait_until(pilot, lambda: not ModelStore(home).exists("renamed.v2"))


async def test_refresh_with_200_runs_is_cheap_for_the_ui_thread(tmp_path):
    store = RunStore(tmp_path)
    for i in range(200):
        run_id = f"20261101-{i:06d}-fake"
        store.create(RunMeta(run_id=run_id), RunState(
            run_id=run_id, status="completed" if i % 10 else "running", model_id="m-x",
            step=i, total_steps=200, loss=2.0, val_loss=2.1, device="cpu", pid=1,
            create_time=1.0, created_at=time.time() - i))
    app = TrainerApp(tmp_path, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(1.0)
        await pilot.press("1", "f")  # show all 200
        await pilot.pause(1.0)
        assert app.query_one("#runs-table", DataTable).row_count == 200
        samples = []
        for _ in range(5):  # refreshes go on, updating the 200 keyed rows in place
            await pilot.pause(0.3)
            samples.append(app.last_refresh_ms["apply"])
            assert app.query_one("#runs-table", DataTable).row_count == 200
        assert all(isinstance(ms, float) and ms >= 0 for ms in samples), samples


async def test_quitting_leaves_background_runs_running(home):
    proc = run_cli("train", *TINY, "--dataset", "corpus.txt", "--name", "bg", "--max-steps",
                   "100000", home=home)
    run_id = proc.stdout.split()[2]
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("q")
        await asyncio.sleep(0.2)
    assert not app.is_running
    state = RunStore(home).read_state(run_id)
    assert state.status in ("queued", "running")
    run_cli("stop", run_id, "--now", home=home)
