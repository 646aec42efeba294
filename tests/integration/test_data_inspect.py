"""`llm-trainer data inspect` through the real CLI on small crafted files: format and column
detection, splits, figures, each suggestion, the --json schema and the text report."""

from __future__ import annotations

import json
import random

import pytest

from llm_trainer.data.tokenizer import TextTokenizer
from tests.helpers import corpus_text, run_cli

pytestmark = pytest.mark.slow  # a CLI process per case (datasets is imported for tables)

LONG = ("This paragraph is long enough to count when it repeats: the quick brown fox jumps "
        "over the lazy dog again and again.")


def inspect(home, *args):
    proc = run_cli("data", "inspect", *args, "--json", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "river", "stone", "light",
                                "north", "quiet", "ember"]) for _ in range(n))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_text_file_and_the_json_schema(home):
    (home / "notes.txt").write_text(corpus_text(30_000), encoding="utf-8")
    r = inspect(home, "notes.txt", "--tokenizer", "byte")
    assert set(r) == {"spec", "format", "format_reason", "files", "document_unit",
                      "text_column", "column_candidates", "column_reason", "tokenizer",
                      "splits", "histogram", "overlap", "seq_len", "suggestions", "sampled",
                      "notes", "seconds", "chat"}
    assert r["chat"] is None  # text, not conversations
    assert r["format"] == "text" and "suffix .txt" in r["format_reason"]
    assert r["document_unit"] == "paragraph" and r["text_column"] is None
    train, val = r["splits"]
    assert set(train) == {"name", "origin", "documents", "characters", "tokens", "empty",
                          "duplicates", "undecodable_bytes", "nonprintable", "median_tokens",
                          "p90_tokens", "sampled", "share", "documents_read", "bytes"}
    assert r["sampled"] is False and r["notes"] == [] and train["share"] == 1.0
    assert (train["name"], val["name"]) == ("train", "val")
    assert val["origin"] == "held out: the last 10%"
    # byte tokenizer: one token per byte (the corpus is ASCII), so tokens == characters
    assert train["tokens"] == train["characters"] and val["tokens"] == val["characters"]
    assert 0.08 < val["characters"] / (train["characters"] + val["characters"]) < 0.12
    byte_vocab = TextTokenizer.build_byte().vocab_size  # 256 bytes and the separator
    assert r["tokenizer"] == {"spec": "byte", "kind": "byte", "vocab_size": byte_vocab,
                              "used": r["tokenizer"]["used"], "trained_on": None}
    assert sum(b["documents"] for b in r["histogram"]) == train["documents"] + val["documents"]


def test_jsonl_picks_a_usual_column_name_and_lists_the_others(home):
    write_jsonl(home / "d.jsonl", [{"id": i, "title": f"t{i}", "body": words(30, i)}
                                   for i in range(200)])
    r = inspect(home, "d.jsonl", "--tokenizer", "byte")
    assert r["format"] == "json" and "suffix .jsonl" in r["format_reason"]
    assert r["text_column"] == "body" and r["column_candidates"] == ["title", "body"]
    assert "usual text columns" in r["column_reason"]
    assert r["document_unit"] == "row"
    assert r["splits"][0]["documents"] + r["splits"][1]["documents"] == 200


def test_csv_with_one_text_column_and_parquet(home):
    rows = [{"score": i % 5, "review": words(20, i)} for i in range(150)]
    (home / "r.csv").write_text("score,review\n" + "".join(f"{x['score']},{x['review']}\n"
                                                           for x in rows), encoding="utf-8")
    r = inspect(home, "r.csv", "--tokenizer", "byte")
    assert r["format"] == "csv" and r["text_column"] == "review"
    assert r["column_reason"] == "the only text column"

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [x["review"] for x in rows], "n": list(range(150))}),
                   home / "p.parquet")
    r = inspect(home, "p.parquet", "--tokenizer", "byte")
    assert r["format"] == "parquet" and r["text_column"] == "text"


def test_an_hf_dataset_reports_its_splits_and_text_column(home):
    """hf: with a local dataset folder (no hub here): rows of its train / validation splits."""
    folder = home / "hfset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"label": i % 3, "content": words(25, i),
                                          "source": "web"} for i in range(120)])
    write_jsonl(folder / "validation.jsonl", [{"label": 0, "content": words(25, 1000 + i),
                                               "source": "web"} for i in range(12)])
    r = inspect(home, f"hf:{folder}", "--tokenizer", "byte")
    assert r["format"] == f"Hugging Face dataset {folder}" and r["document_unit"] == "row"
    assert r["text_column"] == "content" and r["column_candidates"] == ["content", "source"]
    assert [(s["origin"], s["documents"]) for s in r["splits"]] == [
        ("the train split", 120), ("the validation split", 12)]


def test_a_folder_takes_its_splits_from_the_file_names(home):
    folder = home / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text(corpus_text(40_000, seed=1), encoding="utf-8")
    (folder / "valid.txt").write_text(corpus_text(4_000, seed=2), encoding="utf-8")
    r = inspect(home, "corpus", "--tokenizer", "byte")
    assert r["format"] == "folder of text" and "splits from the file names" in \
        r["format_reason"]
    assert {(f["path"], f["split"]) for f in r["files"]} == {("train.txt", "train"),
                                                            ("valid.txt", "val")}
    assert [s["origin"] for s in r["splits"]] == ["train.txt", "valid.txt"]
    assert r["suggestions"] == []  # clean data, a sensible split: nothing to say


def _folder(home, name, train: str, valid: str):
    folder = home / name
    folder.mkdir()
    (folder / "train.txt").write_bytes(train.encode() if isinstance(train, str) else train)
    (folder / "valid.txt").write_bytes(valid.encode() if isinstance(valid, str) else valid)
    return name


CASES = {
    "small val": (lambda h: _folder(h, "sv", corpus_text(200_000, 1), corpus_text(1_000, 2)),
                  ["--tokenizer", "byte"], "val split is 0.5% of the data"),
    "large val": (lambda h: _folder(h, "lv", corpus_text(10_000, 1), corpus_text(20_000, 2)),
                  ["--tokenizer", "byte"], "val split is 67% of the data: the model never"),
    "short documents": (lambda h: write_jsonl(h / "s.jsonl", [{"text": words(8, i)}
                                                               for i in range(300)]) or "s.jsonl",
                        ["--tokenizer", "byte", "--seq-len", "512"],
                        "most documents are shorter than seq_len 512"),
    "unused vocab": (lambda h: (h / "v.txt").write_text(corpus_text(20_000)) and "v.txt",
                     ["--tokenizer", "bpe", "--vocab-size", "8192"],
                     "vocab_size 8192 leaves"),
    "empty rows": (lambda h: write_jsonl(h / "e.jsonl", [{"text": words(20, i) if i % 4
                                                          else "  "} for i in range(200)])
                   or "e.jsonl", ["--tokenizer", "byte"], "empty rows in the train split"),
    "duplicates": (lambda h: (h / "dup.txt").write_text(
        "\n\n".join([LONG] * 40 + [words(30, i) for i in range(200)])) and "dup.txt",
        ["--tokenizer", "byte"], "duplicate documents in the train split"),
    "not utf-8": (lambda h: _folder(h, "latin", corpus_text(20_000, 1).encode() + b"caf\xe9\n",
                                    corpus_text(4_000, 2)),
                  ["--tokenizer", "byte"], "1 bytes in the train split are not UTF-8"),
    "control characters": (lambda h: (h / "c.txt").write_text(
        corpus_text(20_000).replace("e", "e\u200b", 500)) and "c.txt",
        ["--tokenizer", "byte"], "control or invisible characters"),
    "train/val overlap": (lambda h: _folder(h, "ov", "\n\n".join(
        [LONG + f" {i}" for i in range(30)] + [corpus_text(20_000, 1)]), "\n\n".join(
        [LONG + f" {i}" for i in range(5)] + [corpus_text(3_000, 2)])),
        ["--tokenizer", "byte"], "5 validation documents also appear in training"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_suggestion_is_triggered_by_a_crafted_file(home, case):
    make, args, expected = CASES[case]
    spec = make(home)
    r = inspect(home, spec, *args)
    hits = [s for s in r["suggestions"] if expected in s]
    assert len(hits) == 1, r["suggestions"]


def test_the_text_report_shows_figures_histogram_and_suggestions(home):
    (home / "dup.txt").write_text("\n\n".join([LONG] * 40 + [words(30, i) for i in range(200)]))
    proc = run_cli("data", "inspect", "dup.txt", "--tokenizer", "byte", home=home)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "format:     text (the suffix .txt is read as plain text)" in out
    assert "document length in tokens" in out and "#" in out
    assert "suggestions:\n  - 39 duplicate documents in the train split" in out


def test_a_missing_dataset_is_one_line(home):
    proc = run_cli("data", "inspect", "nowhere.txt", home=home)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: dataset 'nowhere.txt' is not a file or folder")


def test_a_text_over_the_sample_size_is_sampled_and_says_so(home):
    (home / "big.txt").write_text(corpus_text(3_000_000, seed=3), encoding="utf-8")
    proc = run_cli("data", "inspect", "big.txt", "--tokenizer", "byte", "--sample-mb", "1",
                   home=home)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sampled:    the figures marked ~ are estimates from a sample" in out
    assert "% read)" in out and "~" in out
    assert "note: the train split is 2.6 MB: 1.0 MB of it (" in out
    assert "windows spread evenly" in out and "--full reads it all" in out
    r = inspect(home, "big.txt", "--tokenizer", "byte", "--sample-mb", "1")
    assert r["sampled"] is True and r["splits"][0]["sampled"] is True
    assert 0.3 < r["splits"][0]["share"] < 0.45
    assert abs(r["splits"][0]["characters"] / 2_700_000 - 1) < 0.05
    full = inspect(home, "big.txt", "--tokenizer", "byte", "--full")
    assert full["sampled"] is False and full["notes"] == []


@pytest.mark.parametrize("args, message", [
    (["--sample-mb", "0"], "error: --sample-mb must be > 0 (got 0)"),
    (["--full", "--sample-mb", "8"], "error: --full reads everything: it takes no --sample-mb"),
])
def test_bad_sampling_options_are_one_line(home, args, message):
    (home / "t.txt").write_text(corpus_text(2_000), encoding="utf-8")
    proc = run_cli("data", "inspect", "t.txt", *args, home=home)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message)
