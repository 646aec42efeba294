"""Data at any scale: separators, shards, resumable preparation, hold-out, bounded reading."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from llm_trainer.data import prepare as prep
from llm_trainer.data.batches import Batches, BatchPlan, DataPosition, Feistel
from llm_trainer.data.shards import TokenShards
from llm_trainer.data.tokenizer import EOT, TextTokenizer
from llm_trainer.errors import PrepareStopped
from tests.helpers import corpus_text


def _prepare(path, data_dir, tokenizer="char", **kw):
    if isinstance(tokenizer, TextTokenizer):  # a model's own tokenizer
        kw["tokenizer"], tokenizer = tokenizer, "char"
    return prep.prepare_data(dataset=str(path), tokenizer_spec=tokenizer, vocab_size=300,
                             val_fraction=kw.pop("val_fraction", 0.1), text_column=None,
                             data_dir=data_dir, **kw)


def _all(shards: TokenShards) -> np.ndarray:
    return np.asarray(shards)


# --------------------------------------------------------------------------- separators


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_each_document_ends_with_the_separator(tmp_path, kind):
    (tmp_path / "t.txt").write_text("First speech,\ntwo lines.\n\nSecond one.\n\n\nThird.\n\n"
                                    * 40 + "\nLast paragraph.\n")
    data = _prepare(tmp_path / "t.txt", tmp_path / "data", kind, val_fraction=0.2)
    tok = data.tokenizer
    assert tok.eot_id is not None and tok.tok.id_to_token(tok.eot_id) == EOT
    train = tok.decode(_all(data.train).tolist())
    assert train.startswith(f"First speech,\ntwo lines.{EOT}Second one.{EOT}Third.{EOT}")
    assert "\n\n" not in train  # blank lines between documents became separators
    val = tok.decode(_all(data.val).tolist())
    assert val.endswith(f"Last paragraph.{EOT}")
    docs = data.manifest["splits"]
    assert docs["train"]["documents"] + docs["val"]["documents"] == 40 * 3 + 1
    assert int((_all(data.train) == tok.eot_id).sum()) == docs["train"]["documents"]


def test_a_tokenizer_without_a_separator_reads_the_plain_text(tmp_path):
    """A model from before separators keeps its tokenizer: its data is the raw text."""
    text = corpus_text(5_000)
    (tmp_path / "t.txt").write_text(text)
    old = TextTokenizer.build_char(text, eot=False)
    assert old.eot_id is None
    data = _prepare(tmp_path / "t.txt", tmp_path / "data", tokenizer=old)
    assert old.decode(_all(data.train).tolist()) + old.decode(_all(data.val).tolist()) == text


def test_lookup_tables_encode_as_the_library_does():
    rng = random.Random(3)
    alphabet = "ab \n\t\r,.éü日本🙂\x00\u200b" + EOT
    text = "".join(rng.choice(alphabet) for _ in range(3000)) + EOT + "Ж"
    for tok in (TextTokenizer.build_char(text[:2000]), TextTokenizer.build_byte()):
        assert tok._table() is not None, tok.kind
        library = tok.tok.encode_batch([text, "", "x"], add_special_tokens=False)
        assert [a.tolist() for a in tok.encode_each([text, "", "x"])] == [
            e.ids for e in library]


def test_a_tokenizer_file_gets_a_separator_once(tmp_path):
    path = tmp_path / "tokenizer.json"
    TextTokenizer.build_byte(eot=False).save(path)
    tok = prep.get_tokenizer(None, str(path), 0, tmp_path)
    assert tok.vocab_size == 257 and tok.eot_id == 256
    assert tok.with_eot() is tok


# --------------------------------------------------------------------------- shards


def test_shards_read_as_one_array_across_their_boundaries(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text(corpus_text(60_000))
    whole = _prepare(tmp_path / "t.txt", tmp_path / "one")
    monkeypatch.setenv("LLM_TRAINER_SHARD_TOKENS", "5000")
    monkeypatch.setattr(prep, "TASK_CHARS", 2000)  # shards close between batches
    many = _prepare(tmp_path / "t.txt", tmp_path / "many")
    assert many.train.shards >= 5 and whole.train.shards == 1
    assert np.array_equal(_all(many.train), _all(whole.train))
    assert np.array_equal(_all(many.val), _all(whole.val))
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(many.train) - 40, size=(16, 1)) + np.arange(33)
    assert np.array_equal(many.train[idx], _all(whole.train)[idx])  # windows over boundaries
    assert many.train[-1] == whole.train[-1] and np.array_equal(many.train[10:20],
                                                                whole.train[10:20])
    files = sorted(p.name for p in many.cache_dir.iterdir())
    assert "manifest.json" in files and not [f for f in files if f.endswith(".tmp")]
    manifest = json.loads((many.cache_dir / "manifest.json").read_text())
    for rec in manifest["shards"]:  # every shard is hashed in the manifest
        digest = hashlib.sha256((many.cache_dir / rec["file"]).read_bytes()).hexdigest()
        assert digest == rec["sha256"]


def test_a_damaged_shard_is_never_served(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_TRAINER_SHARD_TOKENS", "5000")
    monkeypatch.setattr(prep, "TASK_CHARS", 2000)
    (tmp_path / "t.txt").write_text(corpus_text(30_000))
    first = _prepare(tmp_path / "t.txt", tmp_path / "data")
    want = _all(first.train).copy()
    shard = first.cache_dir / "train-00001.bin"
    del first
    shard.write_bytes(shard.read_bytes()[:-2])  # torn
    again = _prepare(tmp_path / "t.txt", tmp_path / "data")
    assert not again.from_cache  # prepared again, not read torn
    assert np.array_equal(_all(again.train), want)


def test_an_interrupted_preparation_resumes_from_its_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_TRAINER_SHARD_TOKENS", "20000")
    monkeypatch.setattr(prep, "TASK_CHARS", 4096)
    (tmp_path / "t.txt").write_text(corpus_text(200_000))
    calls = []

    def stop_later():
        calls.append(1)
        return len(calls) > 20

    with pytest.raises(PrepareStopped):  # byte: no vocabulary to build first
        _prepare(tmp_path / "t.txt", tmp_path / "data", "byte", stop=stop_later)
    folder = next((tmp_path / "data" / "tokens").glob("[!.]*"))
    progress = json.loads((folder / "progress.json").read_text())
    assert len(progress["shards"]) > 0 and not (folder / "manifest.json").exists()
    lines: list[str] = []
    resumed = _prepare(tmp_path / "t.txt", tmp_path / "data", "byte", log=lines.append)
    assert any(f"resuming after {len(progress['shards'])} finished shard" in m for m in lines)
    straight = _prepare(tmp_path / "t.txt", tmp_path / "other", "byte")
    assert np.array_equal(_all(resumed.train), _all(straight.train))
    assert np.array_equal(_all(resumed.val), _all(straight.val))


def test_a_cache_from_before_shards_is_read_as_it_is(tmp_path):
    """Version 1: meta.json + train.bin + val.bin, keyed by fingerprint|tokenizer|1."""
    (tmp_path / "t.txt").write_text(corpus_text(5_000))
    data_dir = tmp_path / "data"
    tok = TextTokenizer.build_char(corpus_text(5_000), eot=False)
    source = prep.resolve_dataset(str(tmp_path / "t.txt"), data_dir=data_dir, val_fraction=0.1,
                                  text_column=None)
    key = hashlib.sha256(f"{source.fingerprint}|{tok.sha256}|1".encode()).hexdigest()[:20]
    folder = data_dir / "tokens" / key
    folder.mkdir(parents=True)
    np.arange(100, dtype=np.uint16).tofile(folder / "train.bin")
    np.arange(10, dtype=np.uint16).tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"cache_version": 1, "dtype": "uint16",
                                                  "val_source": "held out"}))
    data = _prepare(tmp_path / "t.txt", data_dir, tokenizer=tok)
    assert data.from_cache and data.cache_dir == folder
    assert _all(data.train).tolist() == list(range(100)) and len(data.val) == 10


# --------------------------------------------------------------------------- hold-out


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_the_hold_out_is_deterministic_and_recorded(tmp_path):
    (tmp_path / "t.txt").write_text(corpus_text(40_000))
    a = _prepare(tmp_path / "t.txt", tmp_path / "a", num_proc=1)
    b = _prepare(tmp_path / "t.txt", tmp_path / "b", num_proc=2)  # a pool of workers
    assert np.array_equal(_all(a.train), _all(b.train))
    assert np.array_equal(_all(a.val), _all(b.val))
    assert a.hold_out == "held out: the last 10% of the bytes, cut at a line break"
    assert b.manifest["processes"] == 2


def test_a_table_holds_out_its_last_rows_and_the_cap_trains_the_rest(tmp_path):
    rows = [f"row number {i} " + "word " * (i % 7) for i in range(200)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    data = _prepare(tmp_path / "d.jsonl", tmp_path / "data")
    tok = data.tokenizer
    val = tok.decode(_all(data.val).tolist()).split(EOT)[:-1]
    assert val == rows[-20:] and data.hold_out == "held out: the last 10% of the rows"
    capped = _prepare(tmp_path / "d.jsonl", tmp_path / "data", val_max_tokens=100)
    val = tok.decode(_all(capped.val).tolist()).split(EOT)[:-1]
    train = tok.decode(_all(capped.train).tolist()).split(EOT)[:-1]
    assert val == rows[-20:-20 + len(val)] and 0 < len(val) < 20
    assert train == rows[:-20] + rows[-20 + len(val):]  # nothing lost
    assert "capped at 100 tokens" in capped.hold_out


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("in_memory", [True, False])
def test_ranks_read_disjoint_windows_that_together_are_one_process_batches(in_memory,
                                                                           monkeypatch):
    if not in_memory:
        monkeypatch.setattr("llm_trainer.data.batches.PERMUTE_IN_MEMORY", 10)
    tokens = TokenShards([np.arange(0, 3000, dtype=np.uint32),
                          np.arange(3000, 7000, dtype=np.uint32)], np.uint32)
    one = BatchPlan(n_tokens=len(tokens), seq_len=16, batch_size=3, grad_accum=4, seed=5)
    two = BatchPlan(n_tokens=len(tokens), seq_len=16, batch_size=3, grad_accum=2,
                    world_size=2, seed=5)
    single = Batches(tokens, one)
    ranks = [Batches(tokens, two, rank=r) for r in range(2)]
    pos = DataPosition(epoch=1, cursor=24)
    for _ in range(3):
        want = np.concatenate([single.get(pos, m)[0] for m in range(4)])
        got = [np.concatenate([b.get(pos, m)[0] for m in range(2)]) for b in ranks]
        starts = [set(x[:, 0].tolist()) for x in got]
        assert not starts[0] & starts[1]  # disjoint
        assert sorted(map(tuple, np.concatenate(got))) == sorted(map(tuple, want))
        pos.advance(one)
    x, y = single.get(pos)
    assert np.array_equal(x[:, 1:], y[:, :-1]) and (np.diff(x, axis=1) == 1).all()


def test_the_feistel_order_is_a_seeded_permutation():
    for n in (2, 7, 1000, 4097):
        f = Feistel(n, (1, 0))
        values = f.at(np.arange(n))
        assert sorted(values.tolist()) == list(range(n))
        assert np.array_equal(values, Feistel(n, (1, 0)).at(np.arange(n)))
    assert not np.array_equal(Feistel(1000, (1, 0)).at(np.arange(1000)),
                              Feistel(1000, (1, 1)).at(np.arange(1000)))


# --------------------------------------------------------------------------- bounded memory

MEMORY_PROBE = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    from llm_trainer.data.prepare import prepare_data

    def anon():  # resident memory that is not a mapped file (Arrow and token files are)
        with open("/proc/self/status") as fh:
            line = next(l for l in fh if l.startswith("RssAnon:"))
        return int(line.split()[1]) * 1024

    spec, data_dir, small = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    kw = dict(tokenizer_spec="char", vocab_size=300, val_fraction=0.1, text_column=None,
              num_proc=1)
    prepare_data(dataset=small, data_dir=data_dir / "warm", **kw)  # imports, tables, caches
    before, peak, done = anon(), [0], []

    def watch():
        while not done:
            peak[0] = max(peak[0], anon())
            time.sleep(0.005)

    t = threading.Thread(target=watch)
    t.start()
    data = prepare_data(dataset=spec, data_dir=data_dir / "big", **kw)
    done.append(1)
    t.join()
    assert len(data.train) > 0
    print(json.dumps({"before": before, "after": peak[0]}))
""")



def _write_kind(kind: str, folder, n_chars: int):
    """A dataset of ``kind`` with about ``n_chars`` characters of text."""
    folder.mkdir(parents=True, exist_ok=True)
    text = corpus_text(min(n_chars, 2_000_000), seed=1)
    repeat = max(1, n_chars // len(text))
    paras = [p for p in text.split("\n\n") if p.strip()]
    if kind == "txt":
        path = folder / "big.txt"
        with open(path, "w") as fh:
            for _ in range(repeat):
                fh.write(text)
        return path
    if kind == "folder":
        for i in range(4):
            with open(folder / f"part{i}.txt", "w") as fh:
                for _ in range(max(1, repeat // 4)):
                    fh.write(text)
        return folder
    path = folder / f"big.{kind}"
    if kind == "jsonl":
        with open(path, "w") as fh:
            for _ in range(repeat):
                fh.writelines(json.dumps({"text": p}) + "\n" for p in paras)
        return path
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pa.table({"text": paras * repeat})
    if kind == "csv":
        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path, row_group_size=2000)
    return path


def _peak_growth(kind: str, folder, size: int) -> int:
    spec = _write_kind(kind, folder / "big", size)
    small = _write_kind(kind, folder / "small", 200_000)
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(spec), str(folder / "d"),
                          str(small)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    return rss["after"] - rss["before"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["txt", "folder", "jsonl", "csv", "parquet"])
def test_every_source_kind_streams_in_bounded_memory(tmp_path, kind):
    """Preparing 3x more text must not take 3x the memory: the peak of anonymous memory
    (what is not a memory-mapped file: Arrow tables and token shards are) grows by far less
    than the text added. A source that materialised its text would grow by at least that
    much (a Python string of it); a fixed overhead (Arrow's readers) does not grow."""
    small, large = 16_000_000, 48_000_000
    a = _peak_growth(kind, tmp_path / "a", small)
    b = _peak_growth(kind, tmp_path / "b", large)
    assert b - a < (large - small) / 2, (
        f"{kind}: the peak grew by {a / 1e6:.0f} MB for {small / 1e6:.0f} MB of text and by "
        f"{b / 1e6:.0f} MB for {large / 1e6:.0f} MB")
    if kind in ("txt", "folder"):  # text files: a few batches in memory, whatever the size
        assert b < 64e6, f"{kind}: {b / 1e6:.0f} MB"


def test_a_hub_dataset_streams_when_the_hub_is_reachable(tmp_path, monkeypatch):
    """The hub is the one thing this machine lacks: its loader is replaced by the same
    ``datasets`` streaming reader over local files; the rest is real."""
    import datasets

    from llm_trainer.data import sources

    rows = [f"story {i}: " + "once upon a time " * (i % 5) for i in range(120)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": r}) + "\n"
                                                  for r in rows))
    asked = []

    def hub(name, config, data_dir, *, offline, streaming=False):
        asked.append((name, offline, streaming))
        return datasets.load_dataset("json", data_files={"train": str(tmp_path /
                                                                      "train.jsonl")},
                                     streaming=streaming)

    monkeypatch.setattr(sources, "_hf_load", hub)
    source = sources.resolve_dataset("hf:someone/stories", data_dir=tmp_path / "data",
                                     val_fraction=0.1, text_column=None,
                                     reachable=lambda: True)
    assert asked == [("someone/stories", False, True)]
    assert not hasattr(source.dsd["train"], "select")  # an iterable, streamed dataset
    assert [d.text for d in source.documents("val")] == rows[-12:]
    assert [d.text for d in source.documents("train")] == rows[:-12]
    data = prep.load_tokens(source, TextTokenizer.build_byte(), tmp_path / "data")
    assert data.tokenizer.decode(_all(data.val).tolist()).split(EOT)[:-1] == rows[-12:]


def test_a_text_without_blank_lines_is_cut_into_documents_at_line_breaks():
    from llm_trainer.data.sources import DOC_MAX_CHARS, paragraphs

    text = ("a line of thirty characters..\n" * 120_000)  # 3.6 MB, no blank line
    for pieces in ([text], [text[i:i + (1 << 20)] for i in range(0, len(text), 1 << 20)]):
        docs = list(paragraphs(pieces))
        assert "".join(d.raw for d in docs) == text  # nothing lost or added
        assert len(docs) == 4 and all(len(d.text) <= DOC_MAX_CHARS for d in docs)
        assert all(d.text.endswith("..") for d in docs)  # cut at line breaks
