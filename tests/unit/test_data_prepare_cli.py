"""`data prepare`'s options come from the config's own fields (one table, as the launch
options do), bad input is one line and exit 2, and one place words the progress and the
summary."""

from __future__ import annotations

import re
from dataclasses import fields

from llm_trainer import cli
from llm_trainer.app.options import DATA_OPTIONS, DataOptions
from llm_trainer.config import DataConfig
from llm_trainer.render import hold_out_text, prepare_line, prepare_stopped_line, prepared_lines
from llm_trainer.views import PreparedData
from tests.helpers import run_cli


def test_the_data_options_are_the_config_fields_with_their_help(capsys):
    own = {f.name: f.metadata["help"] for f in fields(DataConfig)}
    assert [(o.flag, o.config_key, o.help) for o in DATA_OPTIONS] == [
        ("--tokenizer", "data.tokenizer", own["tokenizer"]),
        ("--vocab-size", "data.vocab_size", own["vocab_size"]),
        ("--val-fraction", "data.val_fraction", own["val_fraction"]),
        ("--text-column", "data.text_column", own["text_column"])]
    assert DataOptions(tokenizer="char", val_fraction=0.2).overrides() == \
        {"data.tokenizer": "char", "data.val_fraction": 0.2}
    assert cli.main(["data", "prepare", "--help"]) == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for opt in DATA_OPTIONS:
        assert f"{opt.flag} " in text and opt.help in text
    assert "--num-proc" in text and "--json" in text


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "c.txt").write_text("some text\n" * 100)
    for args, says in (
            (["data", "prepare"], "Missing argument"),
            (["data", "prepare", "c.txt", "--num-proc", "0"], "--num-proc"),
            (["data", "prepare", "c.txt", "--vocab-size", "5"], "data.vocab_size"),
            (["data", "prepare", "c.txt", "--val-fraction", "0.9"], "data.val_fraction"),
            (["data", "prepare", "nowhere.txt"], "nowhere.txt")):
        proc = run_cli(*args, home=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.splitlines()
        assert lines[0].startswith("error: ") and says in lines[0], (args, proc.stderr)
        assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: "))
        assert not (tmp_path / "data" / "tokens").exists()



VIEW = PreparedData(
    spec="/h/big.txt", description="big.txt (plain text, 52.4 MB)", cache_dir="/h/data/tokens/k",
    from_cache=False, resumed_shards=0, shards=3, dtype="uint16",
    tokenizer={"kind": "char", "vocab_size": 80}, train_tokens=47_000_000,
    train_documents=120_000, val_tokens=5_200_000, val_documents=13_000,
    hold_out={"rule": "held out: the last 10% of the bytes, cut at a line break"},
    bytes=52_400_000,
    seconds=4.0, mb_per_s=13.1)


def test_the_summary_says_where_what_and_how_fast():
    lines = prepared_lines(VIEW)
    assert lines[0] == "prepared big.txt (plain text, 52.4 MB) in 4.0 s (52.4 MB of text, " \
                       "13.1 MB/s)"
    assert "  cache:      /h/data/tokens/k" in lines
    assert "  shards:     3 (uint16)" in lines
    assert "  train:      47,000,000 tokens in 120,000 documents" in lines
    assert "  val:        5,200,000 tokens in 13,000 documents" in lines
    assert "  val split:  held out: the last 10% of the bytes, cut at a line break" in lines
    resumed = prepared_lines(PreparedData(**{**VIEW.__dict__, "resumed_shards": 2}))
    assert resumed[0].endswith("; 2 of 3 shards were kept from an interrupted preparation")
    cached = prepared_lines(PreparedData(**{**VIEW.__dict__, "from_cache": True,
                                            "seconds": 0.1, "mb_per_s": None}))
    assert cached[0] == "already prepared: big.txt (plain text, 52.4 MB) (read from the " \
                        "cache in 0.1 s)"
    assert set(VIEW.to_json()) == {f.name for f in fields(PreparedData)}


def test_the_progress_line_and_the_stop_line():
    from llm_trainer.data.prepare import PrepareProgress

    vocab = PrepareProgress("vocabulary", 20_000_000, 100_000_000, 0, 2.0)
    assert prepare_line(vocab) == "building the vocabulary 20% (10.0 MB/s, ETA 8s)"
    tok = PrepareProgress("tokenizing", 99_900_000, 100_000_000, 50_000_000, 10.0)
    assert prepare_line(tok) == "tokenizing 99% (10.0 MB/s, 5,000,000 tok/s, ETA 0s)"
    unknown = PrepareProgress("tokenizing", 5_000_000, 0, 1_000_000, 1.0)  # size unknown
    assert prepare_line(unknown) == "tokenizing (5.0 MB/s, 1,000,000 tok/s)"
    assert prepare_stopped_line(3, 8) == \
        "stopped; 3 of about 8 shards kept; run the same command to resume"
    assert prepare_stopped_line(0, None) == \
        "stopped; 0 shards kept; run the same command to resume"


def test_a_capped_hold_out_says_so():
    rule = "held out: the last 10% of the bytes, cut at a line break"
    assert hold_out_text({"rule": rule, "capped": False, "val_max_tokens": 10}) == rule
    assert hold_out_text({"rule": rule, "capped": True, "val_max_tokens": 10_000_000}) == \
        rule + "; capped at 10,000,000 tokens (data.val_max_tokens), the rest trains"
