"""`data inspect` at any size: the byte windows of a text sample give its paragraphs whole
and once, a split over the budget is sampled and its estimates are close to the true
figures (and say they are estimates), a table is counted whole and measured in part, and
memory is bounded by the caps, not by the number of documents."""

from __future__ import annotations

import json
import random
import tracemalloc

import pytest

from llm_trainer.data import inspect as data_inspect
from llm_trainer.data import sources
from llm_trainer.data.inspect import Hashes, Reservoir, _Measure, window_documents
from llm_trainer.data.spec import Document
from llm_trainer.data.tokenizer import TextTokenizer
from tests.helpers import WORDS, corpus_text


def inspect(path, tmp_path, **kw):
    kw = {"tokenizer": "byte", "vocab_size": 8192, "val_fraction": 0.1, "text_column": None,
          "seq_len": 128, "data_dir": tmp_path / "data", **kw}
    return data_inspect.inspect_dataset(str(path), **kw).to_json()


def paragraphs_of(n: int, seed: int) -> list[str]:
    """Paragraphs of very different lengths (3 to 400 words), as real text has."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([3, 8, 20, 60, 150, 400])))
            for _ in range(n)]


def test_windows_tiling_a_file_give_each_paragraph_once_and_whole(tmp_path):
    text = "\n\n  \n" + corpus_text(50_000) + "\n\nend caf\xe9\n\n\n \n"
    data = text.encode()
    path = tmp_path / "t.txt"
    path.write_bytes(data[:-20] + b"\xff" + data[-20:])  # one byte that is not UTF-8
    want = [(d.text, d.bad) for d in sources.paragraphs(sources.text_pieces(path, True), True)]
    size, rng = path.stat().st_size, random.Random(0)
    for _ in range(10):  # windows of 1 byte to 3 KB: cut inside separators, words, characters
        got, a = [], 0
        while a < size:
            b = min(size, a + rng.randint(1, 3000))
            got += [(d.text, d.bad) for d in window_documents(path, a, b, 0, size)]
            a = b
        assert got == want
    assert sum(bad for _, bad in want) == 1


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_a_text_over_the_budget_is_sampled_and_its_estimates_are_close(tmp_path):
    paras = paragraphs_of(6_000, seed=1)
    text = "\n\n".join(paras) + "\n"
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")  # ~3.6 MB of ASCII: bytes == characters == tokens
    budget = 512 << 10  # 16 windows of 32 KB, ~1,000 documents: about 3% off for a count
    r = inspect(path, tmp_path, sample_bytes=budget)
    train, val = r["splits"]
    assert r["sampled"] is True and train["sampled"]
    assert not val["sampled"] and val["share"] == 1.0  # 10%, under the budget: read whole
    assert 0.1 < train["share"] < 0.25 and train["bytes"] + val["bytes"] == len(text)
    assert train["documents_read"] < train["documents"]
    assert any("windows spread evenly" in n and "estimates" in n for n in r["notes"])
    true_docs, true_chars = len(paras), sum(len(p) for p in paras)
    docs = train["documents"] + val["documents"]
    chars = train["characters"] + val["characters"]
    assert abs(docs / true_docs - 1) < 0.08, (docs, true_docs)
    assert abs(chars / true_chars - 1) < 0.05, (chars, true_chars)
    assert train["tokens"] == train["characters"]  # byte tokenizer, ASCII
    lengths = sorted(len(p) for p in paras)
    assert abs(train["median_tokens"] / lengths[len(lengths) // 2] - 1) < 0.5
    # deterministic: the same windows, the same reservoir
    again = inspect(path, tmp_path, sample_bytes=budget)
    assert {**again, "seconds": 0} == {**r, "seconds": 0}


def test_the_tokenizer_is_trained_on_the_sample(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("\n\n".join(paragraphs_of(3_000, seed=2)), encoding="utf-8")
    r = inspect(path, tmp_path, tokenizer="bpe", vocab_size=300, sample_bytes=128 << 10)
    assert r["tokenizer"]["trained_on"].endswith("sample of the training split")
    assert any("bpe tokenizer was trained on a" in n for n in r["notes"])


@pytest.mark.slow  # imports datasets (the fast suite's 30 s budget)
def test_a_table_is_counted_whole_and_measured_in_part(tmp_path):
    paras = paragraphs_of(3_000, seed=3)
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in paras), encoding="utf-8")
    r = inspect(path, tmp_path, sample_bytes=64 << 10)
    train, val = r["splits"]
    assert train["sampled"] and train["documents_read"] < train["documents"]
    assert train["documents"] + val["documents"] == len(paras)  # counted: exact
    assert train["characters"] + val["characters"] == sum(len(p) for p in paras)
    assert abs(train["tokens"] / train["characters"] - 1) < 0.05  # measured: estimated
    assert any("every n-th document" in n for n in r["notes"])
    assert r["tokenizer"]["trained_on"] is None  # bytes: nothing to train


def test_duplicates_past_the_hash_cap_are_estimated():
    h = Hashes(cap=1_000)
    for i in range(10_000):  # 10,000 documents seen twice, 2,000 of them in val too
        h.add("train", f"document {i}")
        h.add("train", f"document {i}")
        if i % 5 == 0:
            h.add("val", f"document {i}")
    assert sum(map(len, h.seen.values())) <= 1_000 and h.scale > 1
    assert abs(h.duplicates("train") / 10_000 - 1) < 0.2
    assert abs(h.overlap() / 2_000 - 1) < 0.3
    exact = Hashes(cap=100_000)
    for i in range(300):
        exact.add("train", f"d{i % 200}")
    assert (exact.duplicates("train"), exact.scale) == (100, 1)


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_the_structures_stay_at_their_caps_for_200k_documents():
    h, res = Hashes(cap=4_096), Reservoir(size=1_024)
    for i in range(200_000):
        h.add("train", f"a document of its own, number {i}")
        res.add(i)
    assert sum(map(len, h.seen.values())) <= 4_096 and len(res.items) == 1_024
    assert abs(res.percentile(0.5) / 100_000 - 1) < 0.1  # a uniform sample of the stream
    assert abs(res.percentile(0.9) / 180_000 - 1) < 0.05


def _peak(n: int) -> tuple[int, int]:
    """The most memory measuring ``n`` documents takes (and the duplicates it estimates)."""
    tok = TextTokenizer.build_byte()
    tracemalloc.start()
    try:
        m = _Measure("train", "generated", tok, set(), Hashes())
        for i in range(n):  # each document once, and every tenth twice
            m.add(Document(f"doc {i} {i * 7919 % 100_003}"))
            if i % 10 == 0:
                m.add(Document(f"doc {i} {i * 7919 % 100_003}"))
        stats = m.finish()
        return tracemalloc.get_traced_memory()[1], stats.duplicates
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # 75,000 documents under tracemalloc: ~5 s
def test_memory_does_not_grow_with_the_documents(monkeypatch):
    """Twice the documents, the same peak: every document is hashed (short ones too, here)
    and the caps are small, so both runs are past them. The former inspect kept a length
    and a hash per document: ~170 bytes each. (The readers hold a read block, a window, a
    document at most; the 200k-document bound of the structures is the test above.)"""
    for name, value in {"HASH_CAP": 512, "RESERVOIR": 256, "DUPLICATE_MIN_CHARS": 8}.items():
        monkeypatch.setattr(data_inspect, name, value)
    (small, dup1), (large, dup2) = _peak(25_000), _peak(50_000)
    assert large - small < 25_000 * 4, (small, large)  # under 4 bytes per document more
    assert abs(dup1 / 2_500 - 1) < 0.5 and abs(dup2 / 5_000 - 1) < 0.5  # still estimated


@pytest.mark.slow  # a full pass and a sample of 3 MB in 1 KB reads: ~4 s
def test_a_text_without_blank_lines_is_sampled_in_documents_of_the_longest_length(
        tmp_path, monkeypatch):
    """One sentence a line, no blank line: training cuts it into documents of at most
    DOC_MAX_CHARS (at a line break); windows inside such a paragraph find about as many."""
    monkeypatch.setattr(sources, "DOC_MAX_CHARS", 4_000)
    monkeypatch.setattr(sources, "READ_BYTES", 1_000)  # paragraphs() cuts once a piece
    rng = random.Random(4)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
             for _ in range(40_000)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # ~3.6 MB
    full = inspect(path, tmp_path, full=True)
    r = inspect(path, tmp_path, sample_bytes=512 << 10)
    assert r["splits"][0]["sampled"] and not full["sampled"]
    for key in ("documents", "characters"):
        true, est = (sum(s[key] for s in x["splits"]) for x in (full, r))
        assert abs(est / true - 1) < 0.05, (key, est, true)


def test_full_trains_the_bpe_on_what_training_does(tmp_path, monkeypatch):
    """--full: training's own cap on the BPE's text (data.prepare.BPE_SAMPLE_BYTES), said."""
    from llm_trainer.data import prepare

    monkeypatch.setattr(prepare, "BPE_SAMPLE_BYTES", 64 << 10)
    path = tmp_path / "t.txt"
    path.write_text("\n\n".join(paragraphs_of(600, seed=5)), encoding="utf-8")  # ~350 KB
    r = inspect(path, tmp_path, tokenizer="bpe", vocab_size=300, full=True)
    assert r["sampled"] is False
    assert r["tokenizer"]["trained_on"] == "the first 0.1 MB of the training split"
    assert any(n.endswith(", as training's is") for n in r["notes"])
