"""`data inspect`'s streaming reader: the figures do not depend on where reads cut the file."""

from __future__ import annotations

from llm_trainer.data import inspect as data_inspect
from llm_trainer.data import sources
from llm_trainer.data.spec import hold_out
from tests.helpers import corpus_text


def report(path, tmp_path):
    return data_inspect.inspect_dataset(str(path), tokenizer="byte", vocab_size=8192,
                                        val_fraction=0.1, text_column=None, seq_len=128,
                                        data_dir=tmp_path / "data").to_json()


def test_figures_are_the_same_whatever_the_read_size(tmp_path, monkeypatch):
    text = corpus_text(30_000) + "\n\ncaf\xe9 \u200b end\n"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8")[:-3] + b"\xff\n\n" + b"tail\n")
    whole = report(path, tmp_path)
    monkeypatch.setattr(sources, "READ_BYTES", 7)  # cuts inside words and characters
    pieces = report(path, tmp_path)
    for r in (whole, pieces):
        r.pop("seconds")
    assert pieces == whole
    train, val = whole["splits"]
    assert val["undecodable_bytes"] == 1 and val["nonprintable"] == 1
    # the paragraphs of the training and the held-out text, split as training splits it
    train_text, val_text = hold_out(path.read_bytes().decode("utf-8", "replace"), 0.1)
    assert (train["documents"], val["documents"]) == (paragraphs(train_text),
                                                      paragraphs(val_text))
    assert paragraphs(train_text + val_text) == paragraphs(text) + 1  # "tail", after the bad byte


def paragraphs(text: str) -> int:
    return sum(1 for p in sources.PARAGRAPH.split(text) if p.strip())
