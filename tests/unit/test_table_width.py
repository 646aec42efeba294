"""Every table the CLI prints fits the terminal (80 columns here) by leaving columns out or
wrapping text, and never cuts a number or an id (`cli/format.print_table`)."""

import re

from rich.console import Console

from llm_trainer.cli.format import Column, print_table

RUN_IDS = ["20261206-221509-shakespeare-char-modern-small-experiment",
           "20261206-221519-wikitext-2-default-1"]


def printed(columns, rows, width=80, **options) -> str:
    console = Console(width=width, record=True, color_system=None)
    print_table(console, columns, rows, **options)
    return console.export_text()


def test_low_priority_columns_go_first_and_ids_and_numbers_stay_whole():
    columns = [Column("RUN_ID"), Column("MODEL", drop=2), Column("TOK/S"),
               Column("DEVICE", drop=3), Column("NOTE", whole=False, drop=1)]
    rows = [[run_id, "model-" + run_id[-12:], "1,234,567", "cuda:0 (NVIDIA H100 80GB)",
             "a long remark"] for run_id in RUN_IDS]
    text = printed(columns, rows, box=None, pad_edge=False)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for run_id in RUN_IDS:
        assert re.search(rf"^{run_id} +1,234,567", text, re.M), text
    assert "…" not in text
    assert "(not shown at 80 columns: MODEL, DEVICE, NOTE)" in text
    # wide enough: every column, no note
    wide = printed(columns, rows, width=200)
    assert "cuda:0 (NVIDIA H100 80GB)" in wide and "not shown" not in wide


def test_text_wraps_before_a_column_is_left_out_when_only_essentials_remain():
    columns = [Column("split"), Column("from", whole=False), Column("tokens", justify="right")]
    rows = [["train", "the first 90% of every file in the folder, in name order " * 2,
             "123,456,789,012"]]
    text = printed(columns, rows, box=None)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "123,456,789,012" in text and "not shown" not in text and "…" not in text


def test_ids_too_wide_for_any_terminal_wrap_rather_than_being_cut():
    columns = [Column("KEY"), *(Column(f"#{i}") for i in range(1, 9))]
    rows = [["train.some_long_config_key", *(f"{1e-4 * i:g}" for i in range(1, 9))]]
    text = printed(columns, rows, width=40, box=None)
    assert max(len(line) for line in text.splitlines()) <= 40, text
    assert "…" not in text
    every_character = "".join(c.header for c in columns) + "".join(rows[0])
    assert len(re.sub(r"\s+", "", text)) == len(every_character)  # all of it, wrapped
