"""The generate panel's chat mode, driven from the keyboard with Textual's Pilot: turns shown
as turns (markup-like text kept as written), replies streamed from a worker, the base model
answering beside a fine-tuned one, and c starting afresh. Tiny models whose greedy replies are
known (tests/chat_models.py); no training."""

from __future__ import annotations

import pytest
from textual.widgets import Checkbox

from llm_trainer.store.models import ModelStore
from llm_trainer.tui.app import TrainerApp
from llm_trainer.tui.panels.generate import OutputArea
from tests.chat_models import base_and_fine_tuned, save_chat_model
from tests.helpers import wait_until

pytestmark = pytest.mark.slow  # a whole dashboard, and torch's import in its worker


@pytest.fixture
def chat_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    base_and_fine_tuned(home)
    ModelStore(home).set_active("ft-m")
    return home


def lines(app) -> list[str]:
    return list(app.query_one("#gen-output", OutputArea).lines)


async def test_chat_mode_turns_with_the_base_beside(chat_home):
    app = TrainerApp(chat_home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        panel = app.query_one("#generate")
        base_box = app.query_one("#compare-base", Checkbox)
        await wait_until(pilot, lambda: panel.model is not None and panel.model.name == "ft-m")
        assert base_box.display  # ft-m was started from base-m
        await wait_until(pilot, lambda: panel.chat_mode)  # a chat model starts in chat mode
        await pilot.press("4", "b")
        assert panel.chat_mode and panel.compare_base
        assert app.query_one("#max").value == "200"
        await pilot.press("i", *"hello [b]x[/b]", "enter")
        await wait_until(pilot, lambda: not panel.busy and any("yo" in x for x in lines(app)),
                         timeout=60)
        shown = lines(app)
        assert "you: hello [b]x[/b]" in shown
        assert "ft-m (step-00000001): hi" in shown
        assert "base: base-m (step-00000001): yo" in shown
        assert not any("error" in x for x in shown)
        assert app.query_one("#prompt").value == ""  # ready for the next turn

        await pilot.press(*"again", "enter")
        await wait_until(pilot, lambda: not panel.busy and
                         sum("you:" in x for x in lines(app)) == 2, timeout=60)
        await wait_until(pilot, lambda: not panel.busy and len(app.chat.session.turns) == 4)
        assert [m.content for m in app.chat.session.turns] == ["hello [b]x[/b]", "hi",
                                                               "again", "hi"]
        assert [m.content for m in app.chat.base.session.turns][-1] == "yo"

        await pilot.press("escape", "c")  # leave the prompt, then start afresh
        assert lines(app) == [] or lines(app) == [""]
        await wait_until(pilot, lambda: app.chat.session.turns == [])

        # a model trained from scratch has no Base box
        ModelStore(chat_home).set_active("base-m")
        await wait_until(pilot, lambda: panel.model.name == "base-m")
        assert not base_box.display and not panel.compare_base


async def test_chat_mode_starts_on_for_a_chat_model_only_and_stays_the_users(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    save_chat_model(home, "chatty", "hi")
    save_chat_model(home, "texty", "yo", chat=False)
    store = ModelStore(home)
    store.set_active("texty")
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        panel = app.query_one("#generate")
        await wait_until(pilot, lambda: panel.model is not None and panel.model.name == "texty")
        assert not panel.chat_mode
        store.set_active("chatty")
        await wait_until(pilot, lambda: panel.model.name == "chatty")
        assert panel.chat_mode
        await pilot.press("4", "h")  # the user turns it off: refreshes leave it off
        assert not panel.chat_mode
        await pilot.pause(0.6)
        assert not panel.chat_mode and panel.model.name == "chatty"
