"""The datasets a home has used (newest first, one entry per dataset) and the dataset files of
a folder: what the TUI's dataset picker lists, read from real run and model records."""

from __future__ import annotations

from llm_trainer.app.datasets import dataset_files
from llm_trainer.service import Service
from llm_trainer.store.models import ModelRecord, ModelStore
from llm_trainer.store.runs import RunStore
from tests.helpers import fake_run


def trained_on(home, run_id: str, spec: str, model: ModelRecord, when: float,
               tokens: int = 1000) -> None:
    """A finished run of ``model`` whose worker read ``spec`` (meta.json names the dataset it
    resolved, as the worker writes it when training starts)."""
    fake_run(home, run_id, {"data": {"dataset": spec}}, model=model.name, created_at=when)
    runs = RunStore(home)
    runs.write_meta(runs.read_meta(run_id).updated(
        model={"id": model.id, "name": model.name},
        dataset={"spec": spec, "fingerprint": f"fp-{spec}", "train_tokens": tokens,
                 "val_tokens": 10}))


def test_recent_datasets_newest_first_one_entry_each(home):
    (home / "corpus.txt").write_text("some text\n")
    models = ModelStore(home)
    a = models.create("a", default_base="m", last_trained_at=300.0)
    b = models.create("b", default_base="m", last_trained_at=200.0)
    trained_on(home, "20260101-000100-a", "corpus.txt", a, 100.0, tokens=111)
    # the same file spelled as a full path: one dataset, shown as the latest run spelled it
    trained_on(home, "20260101-000200-b", str(home / "corpus.txt"), b, 200.0, tokens=222)
    trained_on(home, "20260101-000300-a", "builtin:python-docs", a, 300.0)
    trained_on(home, "20260101-000050-a", "gone.txt", a, 50.0)  # deleted since
    # a run that failed before reading its data (a typo) suggests nothing
    fake_run(home, "20260101-000400-a", {"data": {"dataset": "corpsu.txt"}}, model="a",
             created_at=400.0, status="failed")
    # a model whose runs were deleted: its record still says what it was trained on
    models.create("c", default_base="m", last_trained_at=75.0,
                  datasets=[{"spec": "hf:someone/stories", "fingerprint": "x", "epochs": 1.0}])
    models.rename("a", "a2")  # runs refer to models by id: the current name is shown

    recent = Service(home).recent_datasets()

    assert [r.spec for r in recent] == ["builtin:python-docs", str(home / "corpus.txt"),
                                        "hf:someone/stories", str(home / "gone.txt")]
    pydocs, corpus, stories, gone = recent
    assert corpus.models == ["b", "a2"] and corpus.runs == 2 and corpus.train_tokens == 222
    assert corpus.last_used_at == 200.0 and not corpus.missing
    assert pydocs.models == ["a2"] and not pydocs.missing
    assert stories.models == ["c"] and stories.runs == 0 and stories.train_tokens is None
    assert gone.missing and gone.models == ["a2"]


def test_recent_datasets_of_an_empty_home(tmp_path):
    assert Service(tmp_path).recent_datasets() == []


def test_dataset_files_one_level_sorted_home_records_left_out(tmp_path):
    home = tmp_path
    for name, text in (("notes.md", "x"), ("rows.jsonl", '{"text": "x"}\n'), ("b.TXT", "yy"),
                       ("script.py", "x"), (".hidden.txt", "x"), ("shards/train.txt", "abc"),
                       ("shards/valid.txt", "de"), ("shards/readme", "x"),
                       ("nested/deeper/x.txt", "x"), ("data/tokens.json", "{}")):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(text)
    (home / "empty").mkdir()

    files = dataset_files(home, home=home)
    assert [(f.spec, f.is_dir, f.files, f.size_bytes) for f in files] == [
        ("b.TXT", False, 1, 2), ("notes.md", False, 1, 1), ("rows.jsonl", False, 1, 14),
        ("shards", True, 2, 5)]
    # elsewhere than the home, specs are full paths (training runs in the home) and a
    # data/ folder is a dataset like any other
    elsewhere = dataset_files(home, home=tmp_path / "other")
    assert [f.name for f in elsewhere] == ["b.TXT", "data", "notes.md", "rows.jsonl", "shards"]
    assert elsewhere[0].spec == str(home / "b.TXT")
