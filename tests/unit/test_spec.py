"""One DatasetSpec, parsed once, and one TextSource: documents streamed per split, joined to
exactly the text (and so the token cache) training had before the stream existed."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from types import SimpleNamespace

import pytest

from llm_trainer.data import sources
from llm_trainer.data.spec import (
    BUILTIN_PYDOCS,
    DatasetKind,
    DatasetSpec,
    Gap,
    check_dataset_spec,
    hold_out,
    hold_out_cut,
)
from llm_trainer.errors import DataError
from tests.helpers import corpus_text


def both(source):
    """Both splits' text (small test data only: training streams documents)."""
    return SimpleNamespace(train=source.text("train"), val=source.text("val"),
                           val_source=source.val_source)


def _source(spec, tmp_path, **kw):
    return sources.resolve_dataset(str(spec), data_dir=tmp_path / "data",
                                   val_fraction=kw.pop("val_fraction", 0.1),
                                   text_column=kw.pop("text_column", None), **kw)


def _joined(source, split, **kw) -> str:
    return "".join(d.raw for d in source.documents(split, **kw))


def test_a_spec_is_parsed_once_into_its_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "hfset").mkdir()
    wt = DatasetSpec.parse(" wikitext2 ")
    assert (wt.kind, wt.recorded, wt.for_launch) == (DatasetKind.WIKITEXT, "wikitext-2",
                                                     "wikitext2")
    assert DatasetSpec.parse(BUILTIN_PYDOCS).kind is DatasetKind.BUILTIN
    hub = DatasetSpec.parse("hf:roneneldan/TinyStories:cfg")
    assert (hub.kind, hub.name, hub.config, hub.path) == (
        DatasetKind.HF, "roneneldan/TinyStories", "cfg", None)
    assert hub.for_launch == hub.recorded == "hf:roneneldan/TinyStories:cfg"
    folder = DatasetSpec.parse("hf:hfset")  # a local folder: absolute for the worker
    assert folder.for_launch == f"hf:{tmp_path / 'hfset'}" and folder.recorded == "hf:hfset"
    local = DatasetSpec.parse("notes.txt")
    assert local.kind is DatasetKind.LOCAL and local.for_launch == str(tmp_path / "notes.txt")
    assert check_dataset_spec("notes.txt") == local.for_launch
    for bad, message in (("builtin:nope", "unknown built-in corpus"), ("hf:", "needs a dataset"),
                         ("nowhere.txt", "is not a file or folder")):
        with pytest.raises(DataError, match=message):
            DatasetSpec.parse(bad)


def test_the_spec_module_is_cheap_to_import():
    code = ("import sys, llm_trainer.data.spec; "
            "print([m for m in ('torch', 'datasets', 'numpy', 'tokenizers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_fingerprint_of_local_text_is_the_one_caches_were_keyed_by(tmp_path):
    """A token cache written before the documents stream must still be hit."""
    body = corpus_text(3000)
    (tmp_path / "a.txt").write_text(body)
    sha = hashlib.sha256(b"a.txt" + body.encode()).hexdigest()
    source = _source(tmp_path / "a.txt", tmp_path, text_column="x")
    assert source.fingerprint == f"local-{sha[:16]}-v0.1-cx"
    assert source.spec == str(tmp_path / "a.txt")


@pytest.mark.parametrize("seed", range(4))
def test_the_held_out_split_of_a_text_file_is_nanogpts_whatever_the_read_size(
        tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    pieces = ["word", " ", "\n", "\n\n", "\n \n", "\n\t\n\n", "é", "日本", "\r\n", "\n\n\n"]
    text = "".join(rng.choice(pieces) for _ in range(rng.randint(50, 400)))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    fraction = rng.choice([0.05, 0.1, 0.3, 0.5])
    monkeypatch.setattr(sources, "READ_BYTES", rng.choice([1, 3, 7, 64]))
    source = _source(tmp_path / "t.txt", tmp_path, val_fraction=fraction)
    data = text.encode()  # the cut is by byte offset (the file is never read whole)
    cut = hold_out_cut(len(data), fraction, lambda lo, hi: data.rfind(b"\n", lo, hi))
    while cut > 0 and (data[cut - 1] & 0xC0) == 0x80:  # not inside a character
        cut -= 1
    expected = (data[:cut].decode(), data[cut:].decode())
    if text.isascii():
        assert expected == hold_out(text, fraction)  # nanoGPT's split, by character
    assert (both(source).train, both(source).val) == expected
    for split, want in zip(("train", "val"), expected, strict=True):
        for lenient in (False, True):
            assert _joined(source, split, lenient=lenient) == want
        # every document holds text: blank lines travel as separators, never as documents
        assert all(d.text.strip() for d in source.documents(split)
                   if not isinstance(d, Gap))


def test_a_mixed_folder_joins_its_files_as_before(tmp_path):
    """Tables of one format are read as one (csv, json, parquet, then the text files), each
    file starting on a fresh line; empty and null rows add nothing, an empty file a newline."""
    folder = tmp_path / "mix"
    folder.mkdir()
    (folder / "a.txt").write_text("first paragraph\n\nsecond")
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                            for t in ["row one\n", None, "", "row two"]))
    (folder / "c.txt").write_text("")
    (folder / "d.txt").write_text("last\n")
    source = _source(folder, tmp_path, val_fraction=0.5)
    whole = "row one\n\nrow two\nfirst paragraph\n\nsecond\n\nlast\n"
    train, val = hold_out(whole, 0.5)
    assert both(source).train == train and both(source).val == val
    docs = [d.text for d in source.documents("train")] + [d.text for d in
                                                          source.documents("val")]
    assert [t for t in docs if t] == ["row one", "row two", "first paragraph", "second",
                                      "last"]  # a text's last line break ends it


def test_documents_are_rows_of_tables_and_paragraphs_of_text(tmp_path):
    folder = tmp_path / "hfset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"train row {i}"}) + "\n"
                                                for i in range(20)))
    (folder / "validation.jsonl").write_text(json.dumps({"text": "val row"}) + "\n")
    hf = _source(f"hf:{folder}", tmp_path)
    assert [d.text for d in hf.documents("val")] == ["val row"]
    assert len(list(hf.documents("train"))) == 20 and hf.layout.unit == "row"
    assert hf.columns[0].column == "text"
    pydocs = _source(BUILTIN_PYDOCS, tmp_path)
    first = next(pydocs.documents("train"))
    assert pydocs.layout.unit == "paragraph" and first.text and "\n\n" not in first.text
    assert both(pydocs).train.startswith(first.raw)


def test_training_refuses_what_inspect_counts(tmp_path):
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9 au lait\n" * 50)
    source = _source(tmp_path / "latin.txt", tmp_path)
    with pytest.raises(DataError, match=r"not UTF-8 text \(undecodable byte 0xe9 at offset 3\)"):
        source.text("train")
    bad = sum(d.bad for split in ("train", "val")
              for d in source.documents(split, lenient=True))
    assert bad == 50
