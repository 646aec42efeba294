"""The train panel's dataset picker (`d`): built-in datasets, the ones this home has trained
on and the dataset files of the current folder; Enter fills the Dataset field, Esc leaves it.
A real Service over real run and model records (written, not trained)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets import Input, OptionList

from llm_trainer.store.models import ModelStore
from llm_trainer.store.runs import RunStore
from llm_trainer.tui.app import TrainerApp
from tests.helpers import fake_run, wait_until
from tests.tui.reading import text_of


def picker_lines(app) -> list[str]:
    """Each option of the open picker as plain text, whitespace collapsed."""
    options = app.screen.query_one(OptionList)
    lines = []
    for i in range(options.option_count):
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(options.get_option_at_index(i).prompt)
        lines.append(" ".join(console.export_text().split()))
    return lines


def highlighted_line(app) -> str:
    options = app.screen.query_one(OptionList)
    return picker_lines(app)[options.highlighted]


@pytest.mark.slow  # a whole dashboard (the fast suite's 30 s budget)
async def test_pick_a_dataset_with_the_keyboard(home, monkeypatch):
    (home / "corpus.txt").write_text("To be or not to be.\n")
    (home / "shards").mkdir()
    (home / "shards" / "train.txt").write_text("text\n")
    (home / "notes.py").write_text("not a dataset\n")
    corpus = str(home / "corpus.txt")  # training records local datasets as absolute paths
    rec = ModelStore(home).create("m1", default_base="m", last_trained_at=1_800_000_060.0,
                                  datasets=[{"spec": corpus, "fingerprint": "fp",
                                             "epochs": 1.0}])
    run_id = fake_run(home, "20270115-080000-m1", {"data": {"dataset": corpus}}, model="m1")
    runs = RunStore(home)
    runs.write_meta(runs.read_meta(run_id).updated(
        model={"id": rec.id, "name": "m1"},
        dataset={"spec": corpus, "fingerprint": "fp", "train_tokens": 4321}))
    monkeypatch.chdir(home)  # the picker lists the files of the current folder

    app = TrainerApp(home, refresh_s=30)  # the first refresh is all this needs
    async with app.run_test(size=(160, 48)) as pilot:
        dataset = app.query_one("#dataset", Input)
        # m1 is the latest trained model: the panel shows the dataset it was trained on
        await wait_until(pilot, lambda: dataset.value == corpus, timeout=10)
        await pilot.press("3")
        assert "d" in {b.binding.key for b in app.active_bindings.values() if b.binding.show}

        await pilot.press("d")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "DatasetPickerScreen",
                         timeout=10)
        lines = picker_lines(app)
        joined = "\n".join(lines)
        for title in ("Built in", "Used in this home, most recent first", f"Files in {home}"):
            assert title in lines, joined
        assert lines.index("Built in") < lines.index("Used in this home, most recent first")
        assert any(ln.startswith("wikitext-2 ") for ln in lines), joined
        assert any(ln.startswith("builtin:python-docs ") for ln in lines), joined
        # the list shows it relative to the current folder; picking it fills in the path
        recent = next(ln for ln in lines if ln.startswith("corpus.txt used by"))
        assert "used by model m1" in recent and "1 run" in recent and "4,321 train" in recent
        files = lines[lines.index(f"Files in {home}") + 1:]
        assert [ln.split()[0] for ln in files] == ["corpus.txt", "shards/"], joined
        assert "folder of 1 file" in files[1] and "notes.py" not in joined
        # the highlight starts on what the field holds; Esc leaves the field as it was
        assert highlighted_line(app).startswith("corpus.txt used by")
        await pilot.press("up", "escape")
        await wait_until(pilot, lambda: type(app.screen).__name__ != "DatasetPickerScreen")
        assert dataset.value == corpus and app.focused is app.train_panel
        await pilot.pause()
        assert "C · Train Selected Model — ready" in text_of(app, "#modeline")

        # up moves past the section title to the built-in corpus; Enter puts it in the field
        await pilot.press("d")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "DatasetPickerScreen",
                         timeout=10)
        await pilot.press("up")
        assert highlighted_line(app).startswith("builtin:python-docs ")
        await pilot.press("enter")
        await wait_until(pilot, lambda: type(app.screen).__name__ != "DatasetPickerScreen")
        assert dataset.value == "builtin:python-docs"
        assert "dataset: builtin:python-docs" in text_of(app, "#train-result")

        # while typing in a field, d is a letter like any other
        dataset.focus()
        await pilot.press("end", "d")
        assert dataset.value == "builtin:python-docsd"
        assert type(app.screen).__name__ == "Screen"
