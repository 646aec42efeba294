"""At 80 columns every table of the CLI fits, and every number and id in it is whole: on a
real terminal (a pseudo-terminal of 80 columns) and in a pipe with COLUMNS=80."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import corpus_text, fake_run, run_cli, run_cli_tty, train_tiny

RUNS = ["20261206-221509-shakespeare-char-modern-small-experiment",
        "20261206-221519-wikitext-2-default-1", "20261206-221529-notes"]
LONG_NAME = "a-model-with-a-long-name-to-crowd-the-table"


@pytest.fixture(scope="module")
def narrow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("narrow")
    for i, run_id in enumerate(RUNS):
        fake_run(home, run_id, {"train": {"lr": 0.001 * (i + 1)}, "model": {"n_layer": 4 + i}},
                 model=run_id[16:], train=((10, 3.2), (1_234_560, 2.5)),
                 evals=((1_234_560, 2.61234 + i),), tokens_per_s=1_234_567.0)
    (home / "big.txt").write_text(corpus_text(700_000), encoding="utf-8")
    return home


def visible(text: str) -> list[str]:
    """The lines a terminal shows: escape sequences out, carriage returns as line ends."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return [line.rstrip() for line in re.split(r"\r?\n|\r", text)]


PROSE = ("latest trained model:", "best val loss:")  # sentences, which a terminal wraps


def assert_fits(text: str, *whole: str) -> None:
    lines = visible(text)
    table = [line for line in lines if not line.startswith(PROSE)]
    assert max(len(line) for line in table) <= 80, "\n".join(lines)
    shown = "\n".join(lines)
    for item in whole:
        assert item in shown, f"{item!r} is not whole in:\n{shown}"
    assert "…" not in shown


def figures(home) -> list[str]:
    """The numbers `data inspect` prints for each split, as it formats them."""
    report = json.loads(run_cli("data", "inspect", "big.txt", "--preset", "tiny", "--json",
                                home=home, check=True).stdout)
    return [f"{s[key]:,}" for s in report["splits"] for key in ("documents", "tokens")]


@pytest.mark.slow  # the CLI on a pseudo-terminal
@pytest.mark.parametrize("command", ["data inspect", "compare", "status"])
def test_every_table_fits_an_80_column_terminal(narrow_home, command):
    home = narrow_home
    args, whole = {
        "data inspect": (["data", "inspect", "big.txt", "--preset", "tiny"], None),
        "compare": (["compare", *RUNS, "--no-plot"], [*RUNS, "1,234,567"]),
        "status": (["status"], [*RUNS, "1,234,560", "completed"])}[command]
    code, text = run_cli_tty(*args, home=home, columns=80)
    assert code == 0, text
    assert_fits(text, *(whole or figures(home)))


def test_columns_80_in_a_pipe(narrow_home):
    proc = run_cli("compare", *RUNS, "--no-plot", home=narrow_home, env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert_fits(proc.stdout, *RUNS, "1,234,567")
    assert "(not shown at 80 columns: " in proc.stdout
    wide = run_cli("compare", *RUNS, "--no-plot", home=narrow_home)  # a pipe: every column
    assert "not shown" not in wide.stdout and "DEVICE" in wide.stdout


@pytest.mark.slow  # trains a model, then the CLI on a pseudo-terminal
def test_models_list_fits_80_columns(home):
    (home / "c.txt").write_text(corpus_text(20_000))
    train_tiny(home, "--dataset", "c.txt", "--max-steps", "3", "--name", LONG_NAME)
    code, text = run_cli_tty("models", "list", home=home, columns=80)
    assert code == 0, text
    assert_fits(text, LONG_NAME, "ready")
