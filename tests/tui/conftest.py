"""Fixtures shared by the dashboard tests."""

from __future__ import annotations

import pytest

from tests.helpers import corpus_text, stop_all_runs


@pytest.fixture
def ft_home(home):
    """A home with a corpus to fine-tune on; its runs are stopped afterwards."""
    (home / "corpus.txt").write_text(corpus_text(20_000))
    yield home
    stop_all_runs(home)
