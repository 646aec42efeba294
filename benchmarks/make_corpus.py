"""A synthetic plain-text corpus made of real-looking lines, for the data-scale benchmarks.

    python benchmarks/make_corpus.py --size-gb 0.25 --out /tmp/corpus-0.25.txt [--seed 0]
                                     [--words-from FILE]

What it writes (all from ``--seed``; the same seed gives the same bytes, and a smaller file
is a prefix of a bigger one up to its last paragraph):

- a vocabulary of 30,000 pseudo-words built from syllables (short ones at the top ranks, ~1%
  with an accented letter, so the file is UTF-8 with a few multi-byte characters); with
  ``--words-from`` the most frequent words of that text take the top ranks instead;
- words drawn with a Zipf-Mandelbrot law (p(rank) ~ 1 / (rank + 2.7)), the first word of a
  line capitalised, a comma now and then, lines closed by . , ; ? ! or nothing;
- lines of 5-25 words, paragraphs of 1-12 lines, paragraphs separated by one blank line;
- the file stops at the last paragraph that fits in ``--size-gb`` (decimal: 1 GB = 10**9
  bytes) and ends with a newline.

It is written in blocks of about 8 MB built with numpy (bounded memory, ~100 MB/s here).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

VOCAB = 30_000
LINES_PER_BLOCK = 80_000  # ~8 MB of text per block
ZIPF_BITS = 22
ONSETS = ("b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gl gr pl pr sc sh sk "
          "sl sm sn sp st str sw th tr wh").split()
VOWELS = "a e i o u a e i o ea ou ai ie".split()
CODAS = [""] * 6 + "n r s t l m d ng st nd rk ck".split()
ACCENTED = "éèàüöñç"
# separators after a word: index 0-1 inside a line, 2.. at a line's end
MID = [" ", ", "]
COMMA_P = 0.06
END = [".", ",", ";", "?", "!", ""]
END_P = [0.55, 0.15, 0.05, 0.06, 0.04, 0.15]


def pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct word-like strings, shortest first (the frequent ranks get short words)."""
    words: dict[str, None] = {}
    while len(words) < n:
        m = 4 * (n - len(words)) + 16
        syl = rng.choice([1, 2, 3, 4], size=m, p=[0.3, 0.4, 0.22, 0.08])
        ons = rng.integers(0, len(ONSETS), size=(m, 4))
        vow = rng.integers(0, len(VOWELS), size=(m, 4))
        cod = rng.integers(0, len(CODAS), size=(m, 4))
        bare = rng.random((m, 4)) < 0.2  # a syllable without onset
        acc = rng.random(m) < 0.01
        acc_ch = rng.integers(0, len(ACCENTED), size=m)
        for i in range(m):
            parts = []
            for j in range(syl[i]):
                onset = "" if bare[i, j] and j else ONSETS[ons[i, j]]
                parts.append(onset + VOWELS[vow[i, j]] + (CODAS[cod[i, j]] if j == syl[i] - 1
                                                          else ""))
            w = "".join(parts)
            if acc[i]:
                k = len(w) // 2
                w = w[:k] + ACCENTED[acc_ch[i]] + w[k + 1:]
            words.setdefault(w, None)
            if len(words) >= n:
                break
    out = list(words)
    out.sort(key=len)  # stable: ties keep their (seeded) order
    return out


def real_words(path: Path, limit: int) -> list[str]:
    """The most frequent words of a text, most frequent first (ties alphabetical)."""
    counts = Counter(re.findall(r"[a-z']+", path.read_text(encoding="utf-8").lower()))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def vocabulary(seed: int, size: int = VOCAB, words_from: Path | None = None) -> list[str]:
    rng = np.random.default_rng([seed, 1])
    top = real_words(words_from, size) if words_from is not None else []
    seen = set(top)
    rest = [w for w in pseudo_words(rng, size + len(top)) if w not in seen]
    return (top + rest)[:size]


class PieceTable:
    """Every piece of text a block is made of, one per word: (plain | Capitalised) word
    followed by one of the separators (" ", ", ", an end of line, an end of paragraph), as
    one flat byte array plus offsets, so a block is a single numpy gather. Piece id:
    ``(case * SEPS + separator) * n + word``."""

    def __init__(self, words: list[str]) -> None:
        self.n = len(words)
        caps = [w[:1].upper() + w[1:] for w in words]
        seps = [*MID, *(e + "\n" for e in END), *(e + "\n\n" for e in END)]
        self.end0, self.par0 = len(MID), len(MID) + len(END)
        self.seps = len(seps)
        pieces = [(w + sep).encode("utf-8") for case in (words, caps) for sep in seps
                  for w in case]
        lens = np.array([len(p) for p in pieces], dtype=np.int32)
        self.flat = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        self.starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int32)
        self.lens = lens

    def gather(self, ids: np.ndarray) -> bytes:
        lens = self.lens[ids]
        ends = np.cumsum(lens)
        total = int(ends[-1])
        # position k of the output reads flat[start(piece) + k - out_start(piece)]
        shift = self.starts[ids] - (ends - lens)
        idx = np.repeat(shift, lens)
        idx += np.arange(total, dtype=np.int32)
        return self.flat[idx].tobytes()


@functools.lru_cache(maxsize=4)
def piece_table(seed: int, words_from: Path | None = None) -> PieceTable:
    return PieceTable(vocabulary(seed, words_from=words_from))


def blocks(seed: int, words_from: Path | None = None):
    """Endless blocks of text (up to ~8 MB), each ending at a paragraph's end."""
    table = piece_table(seed, words_from)
    # inverse-CDF lookup table: a uniform integer below 2**ZIPF_BITS -> a rank (the table's
    # resolution, 2**-22, is below the rarest rank's probability, ~3e-6)
    ranks = np.arange(table.n, dtype=np.float64)
    cdf = np.cumsum(1.0 / (ranks + 2.7))
    cdf /= cdf[-1]
    lookup = np.searchsorted(cdf, (np.arange(1 << ZIPF_BITS) + 0.5) / (1 << ZIPF_BITS),
                             side="right").astype(np.int32)
    np.minimum(lookup, table.n - 1, out=lookup)
    rng = np.random.default_rng([seed, 2])
    lines = LINES_PER_BLOCK >> 8  # small blocks first (a tiny corpus is quick), then doubling
    while True:
        par = rng.integers(1, 13, size=lines // 6 + 64)
        par = par[: int(np.searchsorted(np.cumsum(par), lines)) + 1]
        lines = min(2 * lines, LINES_PER_BLOCK)
        n_lines = int(par.sum())
        line_len = rng.integers(5, 26, size=n_lines)
        n_words = int(line_len.sum())
        word = lookup[rng.integers(0, 1 << ZIPF_BITS, size=n_words, dtype=np.int32)]
        sep = (rng.random(n_words, dtype=np.float32) < COMMA_P).astype(np.int32)
        line_end = np.cumsum(line_len) - 1
        end_kind = rng.choice(len(END), size=n_lines, p=END_P)
        last_line = np.zeros(n_lines, dtype=bool)
        last_line[np.cumsum(par) - 1] = True
        sep[line_end] = np.where(last_line, table.par0, table.end0) + end_kind
        line_start = np.concatenate(([0], line_end[:-1] + 1))
        sep[line_start] += table.seps  # capitalised
        word += sep * table.n
        yield table.gather(word)


def write_corpus(out: Path, size_bytes: int, seed: int = 0, words_from: Path | None = None,
                 progress=None) -> int:
    """Write the corpus; returns its size in bytes. Written to ``out.tmp`` then renamed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    written = 0
    with open(tmp, "wb") as f:
        for block in blocks(seed, words_from):
            room = size_bytes - written
            if len(block) >= room:
                # the last paragraph that fits (ends "\n\n"); keep its first "\n" only
                cut = block.rfind(b"\n\n", 0, max(room, 0))
                if cut < 0:  # not one whole paragraph fits: take the first
                    cut = block.find(b"\n\n") if written == 0 else -1
                if cut >= 0:
                    f.write(block[:cut + 1])
                    written += cut + 1
                break
            f.write(block)
            written += len(block)
            if progress is not None:
                progress(written)
    if written and not _ends_single_newline(tmp, written):
        with open(tmp, "r+b") as f:  # the previous block ended "\n\n": drop the blank line
            f.truncate(written - 1)
        written -= 1
    tmp.replace(out)
    return written


def _ends_single_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(max(0, size - 2))
        return not f.read().endswith(b"\n\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, required=True, help="size in GB (10**9 bytes)")
    ap.add_argument("--out", type=Path, required=True, help="the file to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--words-from", type=Path, default=None,
                    help="a text whose most frequent words take the top ranks "
                    "(e.g. shared/data/tinyshakespeare.txt)")
    args = ap.parse_args(argv)
    if not args.size_gb > 0:
        ap.error(f"--size-gb must be positive, got {args.size_gb} (e.g. --size-gb 0.25)")
    if args.words_from is not None and not args.words_from.is_file():
        ap.error(f"--words-from: no such file: {args.words_from}")
    size = int(args.size_gb * 1e9)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int) -> None:
        now = time.perf_counter()
        if sys.stderr.isatty() and now - last[0] > 0.5:
            last[0] = now
            print(f"\r{done / 1e9:.2f} / {size / 1e9:.2f} GB", end="", file=sys.stderr)

    written = write_corpus(args.out, size, args.seed, args.words_from, progress)
    dt = time.perf_counter() - t0
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"wrote {args.out}: {written:,} bytes in {dt:.1f}s ({written / 1e6 / dt:.0f} MB/s, "
          f"seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
