"""benchmarks/make_corpus.py: the synthetic corpus of the data-scale benchmarks."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # writes and reads whole corpora (seconds)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "make_corpus.py"


@pytest.fixture(scope="module")
def make_corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_same_seed_same_bytes_other_seed_other_bytes(make_corpus, tmp_path):
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    assert make_corpus.write_corpus(a, 20_000, seed=3) == a.stat().st_size
    make_corpus.write_corpus(b, 20_000, seed=3)
    make_corpus.write_corpus(c, 20_000, seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert not (tmp_path / "a.txt.tmp").exists()


def test_paragraphs_of_lines_of_words_within_the_size(make_corpus, tmp_path):
    out = tmp_path / "corpus.txt"
    size = make_corpus.write_corpus(out, 30_000, seed=0)
    text = out.read_text(encoding="utf-8")  # valid UTF-8
    assert 20_000 < size <= 30_000 and len(text.encode()) == size
    assert text.endswith("\n") and not text.endswith("\n\n") and not text.startswith("\n")
    paragraphs = text.rstrip("\n").split("\n\n")
    assert len(paragraphs) >= 10
    for par in paragraphs:
        lines = par.split("\n")
        assert 1 <= len(lines) <= 12
        for line in lines:
            assert 5 <= len(line.split(" ")) <= 25, line
            assert line[0].isupper()
    words = [w.strip(".,;?!") for w in text.split()]
    assert len(set(words)) > 500  # a vocabulary, not a few repeated words
    # Zipf-like: the most frequent word is far more frequent than the 100th
    counts = sorted((words.count(w) for w in set(words)), reverse=True)
    assert counts[0] > 10 * counts[100]


def test_a_smaller_corpus_is_a_prefix_of_a_bigger_one(make_corpus, tmp_path):
    small, big = tmp_path / "s.txt", tmp_path / "b.txt"
    make_corpus.write_corpus(small, 5_000, seed=1)
    make_corpus.write_corpus(big, 50_000, seed=1)
    assert big.read_bytes().startswith(small.read_bytes().rstrip(b"\n"))


def test_command_line(tmp_path):
    out = tmp_path / "c.txt"
    done = subprocess.run([sys.executable, str(SCRIPT), "--size-gb", "0.00001", "--out",
                           str(out), "--seed", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and out.stat().st_size <= 10_000
    bad = subprocess.run([sys.executable, str(SCRIPT), "--size-gb", "0", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--size-gb must be positive" in bad.stderr
