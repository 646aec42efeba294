"""Fine-tuning from the train panel: the Init from / LoRA / Freeze layers fields build the same
request as `llm-trainer train --init-from --lora --freeze-layers`, and the planner's refusals
come back as the panel's one error line."""

from __future__ import annotations

import contextlib
import re

import pytest
from textual.widgets import Input, Static

from llm_trainer.store.runs import RunStore
from llm_trainer.tui.app import TrainerApp
from tests.helpers import corpus_text, home_contents, make_hf_gpt2, wait_until
from tests.tui.reading import asking, text_of


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny GPT-2 folder as transformers saves it: 2 blocks, 64 positions."""
    return make_hf_gpt2(tmp_path_factory.mktemp("hf") / "my-gpt2", corpus_text(30_000, seed=1))




@contextlib.asynccontextmanager
async def train_panel(home, size=(160, 48)):
    """The dashboard at ``size`` with panel C filled in (fill_training_fields): (app, pilot)."""
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.3)
        await fill_training_fields(app, pilot, home)
        yield app, pilot


async def fill_training_fields(app, pilot, home) -> None:
    """Panel C with the tiny preset, the test corpus and a short context."""
    await pilot.press("3")
    app.query_one("#preset").value = "tiny"
    await pilot.pause(0.2)
    app.query_one("#dataset", Input).value = str(home / "corpus.txt")
    app.query_one("#batch", Input).value = "4"
    app.query_one("#seq", Input).value = "32"


@pytest.mark.slow  # a real LoRA run on a tiny imported model
async def test_fine_tune_fields_start_a_lora_run_from_the_keyboard(ft_home, hf_folder):
    home = ft_home
    async with train_panel(home) as (app, pilot):
        app.query_one("#init-from", Input).focus()
        await pilot.pause()
        # the fine-tune fields follow each other with Down, before the name
        order = [app.focused.id]
        for _ in range(3):
            await pilot.press("down")
            order.append(app.focused.id)
        assert order == ["init-from", "lora", "freeze", "name"]
        for field, hint in (("init-from", "a model, a checkpoint folder or hf:FOLDER"),
                            ("lora", "r=8,alpha=16"),
                            ("freeze", "N")):
            assert app.query_one(f"#{field}", Input).placeholder.startswith(hint)
        await pilot.press("up", "up", "up")
        assert app.focused.id == "init-from"
        await pilot.press(*f"hf:{hf_folder}", "down",
                          *"r=2,alpha=4,dropout=0.0,targets=c_attn,c_fc",
                          "down", "1", "down", *"adapted", "enter")
        assert app.focused.id == "train"  # Enter hands the keys back: s starts
        await pilot.press("s")
        await wait_until(pilot, lambda: asking(app))
        question = str(app.screen.query_one("#question", Static).render())
        assert question.startswith(f"Fine-tune hf:{hf_folder} as a new model adapted on ")
        assert "LoRA r=2,alpha=4,dropout=0.0,targets=c_attn,c_fc" in question
        assert "freeze layers 1" in question
        # the estimate is the service's, for the fine-tune: only the adapters train
        total, trainable = (int(n.replace(",", "")) for n in re.search(
            r"([\d,]+) parameters \(([\d,]+) trainable\)", question).groups())
        assert 0 < trainable < total / 5, question
        await pilot.press("y")
        await wait_until(pilot, lambda: "started run" in text_of(app, "#train-result"))
        run_id = text_of(app, "#train-result").split()[2]
        cfg = RunStore(home).read_meta(run_id).config
        assert cfg["finetune"]["init_from"] == f"hf:{hf_folder}"
        assert (cfg["finetune"]["lora_r"], cfg["finetune"]["lora_alpha"]) == (2, 4)
        assert cfg["finetune"]["lora_targets"] == ["c_attn", "c_fc"]
        assert cfg["finetune"]["freeze_layers"] == 1
        assert cfg["train"]["lr"] == 2e-4  # the planner's LoRA default, as on the CLI
        assert cfg["model"]["n_layer"] == 2 and cfg["model"]["block_size"] == 32
        await wait_until(pilot, lambda: RunStore(home).read_state(run_id).status in
                         ("completed", "failed"), timeout=180)
        assert RunStore(home).read_state(run_id).status == "completed"

        # the new model is selected: a fine-tune starts a new model, so Init from waits for n
        await wait_until(pilot, lambda: "Selected Model: adapted" in text_of(app, "#train-model"))
        assert app.query_one("#init-from", Input).disabled
        await pilot.press("3", "n")
        assert not app.query_one("#init-from", Input).disabled
        assert app.query_one("#init-from", Input).value == f"hf:{hf_folder}"


SLOW = pytest.mark.slow  # a Pilot app each: kept out of the fast suite (its 30 s budget)


@pytest.mark.parametrize(("init_from", "lora", "freeze", "error"), [
    pytest.param("HF", "", "", "--init-from takes the architecture from my-gpt2: "
                 "model.block_size=128 (the folder's model has 64)", marks=SLOW),
    pytest.param("", "r=8,alpha=16", "", "LoRA and frozen layers fine-tune a pretrained "
                 "model: they need --init-from", marks=SLOW),
    pytest.param("", "", "2", "LoRA and frozen layers fine-tune a pretrained model: they "
                 "need --init-from", marks=SLOW),
    pytest.param("", "rank=8", "", "--lora: unknown setting 'rank'", marks=SLOW),
    pytest.param("hf:/no/such/folder", "r=8", "", "--init-from: /no/such/folder is not a "
                 "folder", marks=SLOW),
    pytest.param("", "", "-1", "finetune.freeze_layers must be an integer >= 0", marks=SLOW),
])
async def test_refusals_are_the_planners_one_line(ft_home, init_from, lora, freeze, error,
                                                 request):
    home = ft_home
    if init_from == "HF":
        init_from = f"hf:{request.getfixturevalue('hf_folder')}"
    async with train_panel(home, size=(100, 30)) as (app, pilot):
        app.query_one("#seq", Input).value = "128"
        app.query_one("#init-from", Input).value = init_from
        app.query_one("#lora", Input).value = lora
        app.query_one("#freeze", Input).value = freeze
        await pilot.press("s")
        await wait_until(pilot, lambda: error in text_of(app, "#train-result"), timeout=30)
        assert app.screen.__class__.__name__ != "ConfirmScreen"
        # on a short terminal the error stays in sight below the scrolling form
        result = app.query_one("#train-result", Static).region
        assert result.height and result.bottom <= app.query_one("#train").region.bottom
    assert home_contents(home, "runs") == [] and home_contents(home, "checkpoints") == []


@pytest.mark.slow  # the estimate loads the imported weights
async def test_an_empty_seq_len_takes_the_folders_context(ft_home, hf_folder):
    home = ft_home
    async with train_panel(home) as (app, pilot):
        app.query_one("#seq", Input).value = ""
        app.query_one("#init-from", Input).value = f"hf:{hf_folder}"
        await pilot.press("s")
        await wait_until(pilot, lambda: asking(app))
        question = str(app.screen.query_one("#question", Static).render())
        assert "the default sequence length" in question
        assert "context 64," in question  # the folder's n_positions, as the planner chose
        parameters, trainable = re.search(r"([\d,]+) parameters \(([\d,]+) trainable\)",
                                          question).groups()
        assert parameters == trainable  # a full fine-tune trains everything
        await pilot.press("n")
        await wait_until(pilot, lambda: "cancelled" in text_of(app, "#train-result"))
    assert home_contents(home, "runs") == [] and home_contents(home, "checkpoints") == []
