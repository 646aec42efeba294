"""The train panel asks the service for the dry-run estimate before it asks to start."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static

from llm_trainer.tui.app import TrainerApp
from tests.helpers import corpus_text, home_contents, wait_until
from tests.tui.reading import asking

pytestmark = pytest.mark.slow  # sets up the real model and data


async def test_start_shows_the_estimate_then_cancel_writes_nothing(home):
    (home / "corpus.txt").write_text(corpus_text(20_000))
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("3")
        app.query_one("#preset").value = "tiny"
        await pilot.pause(0.2)
        app.query_one("#dataset", Input).value = str(home / "corpus.txt")
        app.query_one("#epochs", Input).value = "1"
        await pilot.press("s")
        await wait_until(pilot, lambda: asking(app))
        question = str(app.screen.query_one("#question", Static).render())
        assert "dry run (train, a new model)" in question and "steps:" in question
        assert "per epoch" in question and "memory (estimate" in question
        assert "time:        not measured" in question
        await pilot.press("n")
        await pilot.pause(0.3)
        assert "cancelled" in str(app.query_one("#train-result", Static).render())
    assert home_contents(home, "runs") == [] and home_contents(home, "checkpoints") == []
