"""Shared fixtures: a temp home and a synthetic corpus (helpers are in tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# torch in this process on one thread (read when torch is imported, after this): the models
# here are tiny, and splitting their small ops across cores costs more than it gains (on a
# busy machine several times more). Training runs set their own count (runtime.num_threads,
# or the home's share of the cores) and tests of those counts set it explicitly.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.helpers import corpus_text


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
