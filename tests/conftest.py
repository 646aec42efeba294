"""Shared fixtures: a temp home, a synthetic corpus and one set of trained tiny models per
test run (helpers are in tests/helpers.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# torch in this process on one thread (read when torch is imported, after this): the models
# here are tiny, and splitting their small ops across cores costs more than it gains (on a
# busy machine several times more). Training runs set their own count (runtime.num_threads,
# or the home's share of the cores) and tests of those counts set it explicitly.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.helpers import corpus_text, train_tiny

# what the CLI formats to: a terminal's size, which the tests give explicitly where they mean one
TERMINAL_ENV = ("COLUMNS", "LINES")


@pytest.fixture(autouse=True)
def _no_terminal_size_leaks(request):
    """A test that leaves COLUMNS / LINES in this process's environment narrows every later
    test's CLI output in the same worker: name it."""
    before = {k: os.environ.get(k) for k in TERMINAL_ENV}
    yield
    after = {k: os.environ.get(k) for k in TERMINAL_ENV}
    if after != before:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        pytest.fail(f"{request.node.nodeid} left the terminal size in the environment: "
                    f"{before} -> {after}")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("LLM_TRAINER_HOME", str(h))
    return h


@pytest.fixture
def corpus(tmp_path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(corpus_text(), encoding="utf-8")
    return p


ZOO_BPE = ("--set", "data.tokenizer=bpe", "--set", "data.vocab_size=300")


@pytest.fixture(scope="session")
def trained_zoo(tmp_path_factory) -> Path:
    """A home with tiny models trained for 10 steps on ``one.txt``, shared by every test that
    needs some trained model and only reads it (generate, eval, export, show): ``demo`` (the
    tiny preset's char tokenizer), ``bytes`` (byte-level), ``bpe`` and ``nobias`` (a 300-token
    BPE; nobias also without biases, with gelu_tanh). Do not change it: take ``zoo_copy``."""
    home = tmp_path_factory.mktemp("zoo")
    (home / "one.txt").write_text(corpus_text(30_000, seed=1))
    common = ("--dataset", "one.txt", "--max-steps", "10")
    train_tiny(home, *common, "--name", "bpe", *ZOO_BPE)
    train_tiny(home, *common, "--name", "nobias", *ZOO_BPE, "--set", "model.bias=false",
               "--set", "model.activation=gelu_tanh")
    train_tiny(home, *common, "--name", "bytes", "--set", "data.tokenizer=byte")
    train_tiny(home, *common, "--name", "demo")
    return home


@pytest.fixture
def zoo_copy(trained_zoo, tmp_path) -> Path:
    """A copy of ``trained_zoo`` this test may change."""
    return Path(shutil.copytree(trained_zoo, tmp_path / "zoo"))
