import json
import socket
from types import SimpleNamespace

import pytest

from llm_trainer.data.prepare import prepare_data
from llm_trainer.data.sources import BUILTIN_PYDOCS, hold_out, resolve_dataset, split_of
from llm_trainer.errors import DataError
from tests.helpers import corpus_text


def both(source):
    """Both splits' text (small test data only: training streams documents)."""
    return SimpleNamespace(train=source.text("train"), val=source.text("val"),
                           val_source=source.val_source)


def _resolve(spec, tmp_path, **kw):
    return resolve_dataset(str(spec), data_dir=tmp_path / "data", val_fraction=0.1,
                           text_column=kw.pop("text_column", None), **kw)


def test_txt_file_holds_out_the_last_tenth_by_position(tmp_path):
    text = corpus_text(10_000)
    (tmp_path / "a.txt").write_text(text)
    splits = both(_resolve(tmp_path / "a.txt", tmp_path))
    assert splits.val_source == "held out"
    assert splits.train + splits.val == text  # nothing shuffled or lost
    assert 0.08 < len(splits.val) / len(text) < 0.12


def test_hold_out_cuts_at_a_line_break():
    train, val = hold_out("line one\nline two\nline three\n" * 50, 0.1)
    assert train.endswith("\n") and val.startswith("line")


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_jsonl_with_autodetected_text_column(tmp_path):
    rows = [{"id": i, "text": f"document number {i} says hello"} for i in range(200)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    splits = both(_resolve(tmp_path / "d.jsonl", tmp_path))
    assert "document number 0 says hello" in splits.train
    assert "document number 199 says hello" in splits.val


def test_csv_with_named_column_and_missing_column(tmp_path):
    lines = ["title,summary"] + [f"t{i},summary text {i}" for i in range(100)]
    (tmp_path / "d.csv").write_text("\n".join(lines))
    with pytest.raises(DataError, match="cannot tell which column") as info:
        both(_resolve(tmp_path / "d.csv", tmp_path))
    assert "data.text_column" in info.value.hint
    splits = both(_resolve(tmp_path / "d.csv", tmp_path, text_column="summary"))
    assert "summary text 3" in splits.train
    with pytest.raises(DataError, match="has no column 'nope'"):
        both(_resolve(tmp_path / "d.csv", tmp_path, text_column="nope"))


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": [f"row {i} of parquet text" for i in range(100)]}),
                   tmp_path / "d.parquet")
    splits = both(_resolve(tmp_path / "d.parquet", tmp_path))
    assert "row 0 of parquet text" in splits.train


def test_folder_with_train_and_valid_files(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("training words " * 100)
    (folder / "valid.txt").write_text("validation words " * 20)
    (folder / "test.txt").write_text("test words " * 20)
    splits = both(_resolve(folder, tmp_path))
    assert splits.val_source == "split"
    assert "training" in splits.train and "validation" not in splits.train
    assert "validation" in splits.val


def test_folder_like_the_wikitext_release(tmp_path):
    folder = tmp_path / "wt"
    folder.mkdir()
    (folder / "wiki.test.tokens").write_text(" = Test = \n" * 100)
    (folder / "wiki.valid.tokens").write_text(" = Valid = \n" * 20)
    splits = both(_resolve(folder, tmp_path))
    assert "Test" in splits.train and "Valid" in splits.val


def test_split_names():
    from pathlib import Path

    assert split_of(Path("wiki.train.tokens")) == "train"
    assert split_of(Path("dev.jsonl")) == "val"
    assert split_of(Path("my_validation_set.csv")) == "val"
    assert split_of(Path("notes.txt")) is None


@pytest.mark.parametrize("content,needle", [
    (b"", "is empty"),
    (b"\x00\x01\x02binary" * 100, "looks like a binary file"),
    (b"caf\xe9 au lait " * 100, "not UTF-8 text (undecodable byte 0xe9 at offset 3)"),
])
def test_unusable_files_say_why(tmp_path, content, needle):
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        both(_resolve(tmp_path / "bad.txt", tmp_path))


def test_unknown_specs(tmp_path):
    with pytest.raises(DataError, match="is not a file or folder") as info:
        _resolve(tmp_path / "missing.txt", tmp_path)
    assert "--dataset" in info.value.hint
    (tmp_path / "x.docx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported file type .docx"):
        _resolve(tmp_path / "x.docx", tmp_path)
    with pytest.raises(DataError, match="unknown built-in corpus"):
        _resolve("builtin:nope", tmp_path)


def test_builtin_python_docs_corpus(tmp_path):
    source = _resolve(BUILTIN_PYDOCS, tmp_path)
    splits = both(source)
    assert len(splits.train) > 300_000
    assert source.spec == BUILTIN_PYDOCS


@pytest.fixture
def connections(monkeypatch):
    """The address of every TCP connection this test attempts (the hub check's and any the
    hub client makes): a decision made without retries is counted, not timed."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        attempts.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_wikitext_offline_without_cache_falls_back_fast_when_not_explicit(tmp_path,
                                                                          monkeypatch,
                                                                          connections):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = _resolve("wikitext-2", tmp_path, explicit=False)
    assert connections == []  # offline: decided without trying the network
    assert source.spec == BUILTIN_PYDOCS
    assert "WikiText-2 is not available" in source.notice


def test_wikitext_offline_fails_when_the_user_named_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="cannot use wikitext-2") as info:
        _resolve("wikitext-2", tmp_path, explicit=True)
    assert "local" in info.value.hint


def test_unreachable_hub_is_decided_without_retries(tmp_path, monkeypatch, connections):
    """The real hub code path with the network down: one short connect check, not the hub
    client's ~25 s of retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(DataError, match="unreachable"):
        _resolve("hf:someone/some-dataset", tmp_path, explicit=True)
    assert connections == [("127.0.0.1", 9)]  # the check, then no attempt by the client


def test_hf_spec_with_a_local_dataset_folder(tmp_path):
    folder = tmp_path / "hfdata"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": f"train row {i}"})
                                                  for i in range(50)))
    (folder / "validation.jsonl").write_text("\n".join(json.dumps({"text": f"val row {i}"})
                                                       for i in range(10)))
    source = _resolve(f"hf:{folder}", tmp_path)
    splits = both(source)
    assert "train row 0" in splits.train and "val row 3" in splits.val
    assert source.test() is None  # no test split: eval --split test is refused

    (folder / "test.jsonl").write_text("\n".join(json.dumps({"text": f"test row {i}"})
                                                 for i in range(5)))
    source = _resolve(f"hf:{folder}", tmp_path)
    assert source.test() == "\n".join(f"test row {i}" for i in range(5))
    assert "test row" not in both(source).train + both(source).val


def test_the_test_split_of_a_local_folder_is_read_like_the_others(tmp_path):
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train.txt").write_text("train text\n" * 20)
    (folder / "valid.txt").write_text("valid text\n")
    (folder / "test.jsonl").write_text(json.dumps({"body": "test row"}))
    source = _resolve(folder, tmp_path, text_column="body")
    assert source.test() == "test row"
    (folder / "test.jsonl").write_text(json.dumps({"body": " "}))
    with pytest.raises(DataError, match="the test split of split .* is empty"):
        _resolve(folder, tmp_path, text_column="body").test()
    assert _resolve(folder / "train.txt", tmp_path).test() is None  # one file: no splits
    assert resolve_dataset(BUILTIN_PYDOCS, data_dir=tmp_path, val_fraction=0.1,
                           text_column=None).test() is None


def test_tokens_are_cached_on_disk(tmp_path):
    (tmp_path / "a.txt").write_text(corpus_text(20_000))
    kw = dict(dataset=str(tmp_path / "a.txt"), tokenizer_spec="bpe", vocab_size=300,
              val_fraction=0.1, text_column=None, data_dir=tmp_path / "data")
    first = prepare_data(**kw)
    second = prepare_data(**kw)
    assert not first.from_cache and second.from_cache
    assert (first.train[:] == second.train[:]).all() and first.tokenizer.sha256 == \
        second.tokenizer.sha256
    other = prepare_data(**{**kw, "tokenizer_spec": "char"})
    assert not other.from_cache and other.cache_dir != first.cache_dir
