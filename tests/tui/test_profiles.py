"""The train panel's Profile choice: it offers the use-case profiles, fills Epochs and Seq len
with the chosen one's values, and a start sends it through the same request as
`llm-trainer train --profile` (the confirmation shows the dry run's reasons; the run records
the profile)."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select, Static

from llm_trainer.profiles import list_profiles, load_profile
from llm_trainer.store.runs import RunStore
from llm_trainer.tui.app import TrainerApp
from tests.helpers import corpus_text, make_hf_gpt2, wait_until
from tests.tui.reading import asking, text_of

pytestmark = pytest.mark.slow  # a Pilot app each: kept out of the fast suite (its 30 s budget)




async def test_the_profile_choice_fills_epochs_and_context(ft_home):
    app = TrainerApp(ft_home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("3")
        select = app.query_one("#profile", Select)
        assert [str(label) for label, _ in select._options] == ["none", *list_profiles()]
        assert select.value == "none"
        app.query_one("#preset").value = "tiny"
        await pilot.pause(0.2)
        assert app.query_one("#seq", Input).value == "32"  # the preset's
        select.value = "code"
        await pilot.pause(0.2)
        assert app.query_one("#epochs", Input).value == "3"
        assert app.query_one("#seq", Input).value == "2048"
        assert text_of(app, "#train-result") == \
            f"profile code: {load_profile('code').description}"
        # another preset keeps the profile over it
        app.query_one("#preset").value = "default"
        await pilot.pause(0.2)
        assert app.query_one("#seq", Input).value == "2048"
        select.value = "none"
        await pilot.pause(0.2)
        assert app.query_one("#seq", Input).value == "128"  # the default preset's again


async def test_start_with_a_profile_shows_its_reasons_and_records_it(ft_home, tmp_path):
    home = ft_home
    folder = make_hf_gpt2(tmp_path / "tiny-gpt2", corpus_text(30_000, seed=1))
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("3")
        app.query_one("#preset").value = "tiny"
        await pilot.pause(0.2)
        app.query_one("#dataset", Input).value = str(home / "corpus.txt")
        app.query_one("#batch", Input).value = "4"
        app.query_one("#init-from", Input).value = f"hf:{folder}"
        app.query_one("#profile", Select).value = "qa"
        await pilot.pause(0.2)
        app.query_one("#epochs", Input).value = "1"  # the field over the profile's 3
        await pilot.press("s")
        await wait_until(pilot, lambda: asking(app),
                         timeout=60)
        question = str(app.screen.query_one("#question", Static).render())
        assert "profile qa, " in question  # the summary
        assert "  profile:     qa: " in question
        qa = load_profile("qa")
        for v in qa.values:
            assert v.why in question, v.key
        assert "overridden by --epochs; the profile's 3" in question
        # the Seq len field still holds the profile's 512: the profile's, cut to the folder's
        assert "(cut from 512 to the 64 positions of tiny-gpt2)" in question
        await pilot.press("y")
        await wait_until(pilot, lambda: "started run" in text_of(app, "#train-result"),
                         timeout=60)
        run_id = text_of(app, "#train-result").split()[2]
        cfg = RunStore(home).read_meta(run_id).config
        assert cfg["finetune"]["profile"] == "qa" and cfg["finetune"]["lora_r"] == 8
        assert cfg["train"]["epochs"] == 1 and cfg["train"]["lr"] == 2e-4
        assert cfg["model"]["block_size"] == 64
