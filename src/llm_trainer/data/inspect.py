"""`llm-trainer data inspect SPEC`: what a dataset is before you train on it.

The data is read through the ``TextSource`` training reads (``data.sources``: text read 1 MB
at a time, table rows from Arrow in batches), split as training splits it, and measured
document by document: documents, characters, tokens with the tokenizer training would use
(trained first on the training documents for bpe and char, as training's is), their
lengths, empty and duplicate documents, bytes that are not UTF-8, control and invisible
characters. A *document* is a row of a table (.jsonl/.json/.csv/.parquet, a Hugging Face
dataset) or a paragraph of a text file (text between blank lines). Suggestions are plain
sentences derived from those figures; the thresholds are the constants below. No torch here.

Memory is bounded whatever the size of the data: document lengths are kept in a seeded
reservoir sample (``RESERVOIR`` of them, for the percentiles; the histogram is counted in
full), and document hashes (duplicates, train/val overlap) up to ``HASH_CAP`` distinct ones;
past that only the hashes in a share of the hash space are kept (halved each time it
fills), so the repeats of those documents are still all seen and the counts are scaled up:
estimates, and the report says so.

Time is bounded too, unless ``full``: a split of more than ``SAMPLE_BYTES`` of text is
sampled. A split of plain-text files is read in byte windows spread evenly over it (not its
head), the documents that start in a window measured whole; documents, characters and
tokens are the sample's divided by the share read. Other sources (tables, Hugging Face
datasets) have no random access: every document is counted (documents, characters, empty,
bad bytes: exact), but past ``SAMPLE_BYTES`` of characters only every n-th is measured (n
doubling as the split's characters double); tokens and control characters are scaled from
the measured ones. The tokenizer (bpe, char) is then trained on the sample of the training
split, or its first ``SAMPLE_BYTES``. The report says what was sampled and how much.

Chat data (a table whose columns are a conversation format) is measured a conversation at a
time, rendered with its template as training renders it; every row is checked, and the chat
figures (format, turns, prompt and response tokens, malformed rows) are ``data.inspect_chat``'s.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.data import sources
from llm_trainer.data.inspect_chat import (
    ChatMeasure,
    ChatStats,
    TemplateView,
    example,
    legend,
    row_where,
)
from llm_trainer.data.inspect_chat import suggestions as chat_suggestions
from llm_trainer.data.sources import LOCAL_HINT, Document, Gap, SourceFile, resolve_dataset
from llm_trainer.data.spec import DatasetKind, TextSource, file_format
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError

# control characters (but tab, newline, carriage return), C1 controls, zero-width and
# direction marks, BOM, private use and specials (not U+FFFD: undecodable bytes count apart):
# what a cleaned text does not contain
NONPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e"
                          "\u2060-\u2064\ufeff\ue000-\uf8ff\ufff0-\ufffc\ufffe\uffff]")

SMALL_VAL_SHARE = 0.01  # a validation split under 1% of the data gives a noisy val loss
LARGE_VAL_SHARE = 0.3  # over 30% is data the model never trains on
UNUSED_VOCAB = 0.2  # a BPE vocabulary with over 20% of its tokens unused is too large
DUPLICATE_SHARE = 0.01
DUPLICATE_MIN_CHARS = 64  # shorter repeats (headings, "ROMEO:") are not worth reporting
NONPRINTABLE_SHARE = 0.001

SAMPLE_BYTES = 64 << 20  # a split of more text than this is sampled (--full reads it all)
WINDOW_BYTES = 1 << 20  # a text sample is read in windows of this size ...
MIN_WINDOWS = 16  # ... and at least this many (smaller windows for a small budget)
RESERVOIR = 1 << 16  # document lengths kept for the percentiles
HASH_CAP = 1 << 17  # distinct document hashes kept for duplicates and overlap
TOKENIZE_BATCH = 2048  # documents tokenized at a time, at most ...
BATCH_CHARS = 1 << 19  # ... and characters (a token's encoding takes ~100 bytes)
PIECE_CHARS = 1 << 14  # a longer document is tokenized in pieces (cut at a space)
SEED = 0  # the reservoir's: the same data gives the same report

SEPARATOR = re.compile(rb"\n[ \t\r\f\v]*\n")  # sources.PARAGRAPH, on bytes
LEADING = re.compile(rb"(?:[ \t\r\f\v]*\n)+")  # sources.LEADING, on bytes
ESCAPED = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by surrogateescape


@dataclass
class SplitStats:
    name: str  # train | val
    origin: str  # where it comes from, in words
    documents: int = 0
    characters: int = 0
    tokens: int = 0
    empty: int = 0  # documents with nothing but whitespace
    duplicates: int = 0  # documents (of 64+ characters) seen before in this split
    undecodable_bytes: int = 0
    nonprintable: int = 0  # control / invisible characters
    median_tokens: int = 0
    p90_tokens: int = 0
    sampled: bool = False  # the figures above are estimates from a sample of the split
    share: float = 1.0  # of the split's text measured
    documents_read: int = 0  # documents measured (all of them unless sampled)
    bytes: int | None = None  # the split's size on disk, where known (text files)


@dataclass
class DataReport:
    spec: str
    format: str
    format_reason: str
    files: list[SourceFile]
    document_unit: str  # "row" | "paragraph"
    text_column: str | None
    column_candidates: list[str]
    column_reason: str | None
    tokenizer: dict[str, Any]  # spec, kind, vocab_size, used (distinct ids), trained_on
    splits: list[SplitStats]
    histogram: list[dict[str, int]]  # {"from", "to", "documents"} over token lengths, log2
    overlap: int  # validation documents that also appear in training
    seq_len: int
    suggestions: list[str]
    sampled: bool  # some figures are estimates from a sample (see notes)
    notes: list[str]  # what was sampled or estimated, in words
    seconds: float
    chat: ChatStats | None = None  # chat data: its format, turns, lengths and bad rows

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["chat"] = self.chat.to_json() if self.chat else None
        return out


# ---------------------------------------------------------------------------- bounded memory


class Reservoir:
    """A uniform sample of at most ``size`` of the numbers added (Vitter's algorithm R,
    seeded): the percentiles of a stream in bounded memory."""

    def __init__(self, size: int | None = None, seed: int = SEED) -> None:
        self.size, self.seen = size or RESERVOIR, 0
        self.items = array("q")
        self.rng = random.Random(seed)

    def add(self, x: int) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(x)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = x

    def percentile(self, q: float) -> int:
        if not self.items:
            return 0
        ordered = sorted(self.items)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Hashes:
    """How often each document was seen, per split, by a 64-bit hash, for at most ``cap``
    distinct hashes: when full, only hashes below a limit are kept (the limit halved, the
    others dropped), so every repeat of a kept document is still counted, and the counts
    of the kept share of the hash space, scaled by ``scale``, estimate the whole."""

    def __init__(self, cap: int | None = None) -> None:
        self.cap, self.level = cap or HASH_CAP, 0
        self.seen: dict[str, dict[int, int]] = {"train": {}, "val": {}}

    @property
    def limit(self) -> int:
        return (1 << 64) >> self.level

    @property
    def scale(self) -> int:
        return 1 << self.level

    def add(self, split: str, text: str) -> None:
        h = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                           digest_size=8).digest(), "little")
        if h >= self.limit:
            return
        seen = self.seen[split]
        seen[h] = seen.get(h, 0) + 1
        if len(seen) + len(self.seen["val" if split == "train" else "train"]) > self.cap:
            self._halve()

    def _halve(self) -> None:
        while sum(map(len, self.seen.values())) > self.cap:
            self.level += 1
            limit = self.limit
            self.seen = {k: {h: c for h, c in v.items() if h < limit}
                         for k, v in self.seen.items()}

    def duplicates(self, split: str) -> int:
        return sum(c - 1 for c in self.seen[split].values()) * self.scale

    def overlap(self) -> int:
        return len(self.seen["train"].keys() & self.seen["val"].keys()) * self.scale


# ---------------------------------------------------------------------------- measuring


class _Measure:
    """One split's figures, gathered document by document (tokens in batches). ``every``
    (documents past the first ``budget`` characters, for a stream that is sampled): how
    many documents per measured one; all are counted."""

    def __init__(self, name: str, origin: str, tokenizer: TextTokenizer | None,
                 used: set[int] | None, hashes: Hashes, budget: int | None = None) -> None:
        self.stats = SplitStats(name, origin)
        self.tokenizer, self.used, self.hashes = tokenizer, used, hashes
        self.batch: list[str] = []  # pieces of documents to tokenize
        self.ends: list[bool] = []  # whether each piece ends its document
        self.batch_chars = self.partial = 0  # partial: tokens of the document so far
        self.lengths = Reservoir()
        self.buckets: dict[int, int] = {}  # bit length of a token count -> documents
        self.budget, self.every, self.next_double = budget, 1, budget
        self.skipped_chars = 0  # of the documents not measured

    def add(self, doc: Document) -> bool:
        """Count ``doc``; measure it unless the stream is thinned past it (then False)."""
        stats = self.stats
        stats.documents += 1
        stats.characters += len(doc.text)
        stats.undecodable_bytes += doc.bad
        body = doc.text.strip()
        if not body:
            stats.empty += 1
            return False
        if self.budget is not None and stats.characters > self.next_double:
            self.every *= 2  # a stream sampled: as the characters double, measure half
            self.next_double *= 2
        if self.every > 1 and stats.documents % self.every:
            self.skipped_chars += len(doc.text)
            return False
        stats.documents_read += 1
        stats.nonprintable += len(NONPRINTABLE.findall(doc.text))
        if len(body) >= DUPLICATE_MIN_CHARS:
            self.hashes.add(stats.name, body)
        for piece, last in _pieces(doc.text):
            self.batch.append(piece)
            self.ends.append(last)
            self.batch_chars += len(piece)
            if len(self.batch) >= TOKENIZE_BATCH or self.batch_chars >= BATCH_CHARS:
                self.flush()
        return True

    def flush(self) -> None:
        if self.tokenizer is not None and self.batch:
            encodings = self.tokenizer.tok.encode_batch(self.batch, add_special_tokens=False)
            for enc, last in zip(encodings, self.ends, strict=True):
                self.partial += len(enc)
                if self.used is not None and len(self.used) < self.tokenizer.vocab_size:
                    self.used.update(enc.ids)
                if last:  # a document's last piece: its length is known
                    n, self.partial = self.partial, 0
                    self.lengths.add(n)
                    self.buckets[n.bit_length()] = self.buckets.get(n.bit_length(), 0) + 1
                    self.stats.tokens += n
        self.batch.clear()
        self.ends.clear()
        self.batch_chars = 0

    def finish(self, share: float | None = None, size: int | None = None) -> SplitStats:
        """The figures, scaled up by ``share`` (of the split's text read, for byte windows)
        or by the characters measured (a thinned stream)."""
        self.flush()
        s = self.stats
        s.bytes = size
        if share is None:  # a stream: all documents counted, some measured
            share = 1 - self.skipped_chars / s.characters if s.characters else 1.0
            if share < 1.0:
                s.tokens, s.nonprintable = _scaled(s.tokens, share), _scaled(s.nonprintable,
                                                                             share)
        elif share < 1.0:  # byte windows: every document read was measured
            for key in ("documents", "characters", "tokens", "empty", "undecodable_bytes",
                        "nonprintable"):
                setattr(s, key, _scaled(getattr(s, key), share))
        s.sampled, s.share = share < 1.0, share
        s.duplicates = self.hashes.duplicates(s.name)
        s.median_tokens, s.p90_tokens = self.lengths.percentile(0.5), self.lengths.percentile(0.9)
        return s


def _pieces(text: str) -> Iterator[tuple[str, bool]]:
    """``text`` in pieces of at most about ``PIECE_CHARS``, cut before a space (where the
    tokenizers split words anyway), each with whether it is the last."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        cut = text.rfind(" ", start + 1, start + PIECE_CHARS)
        cut = cut if cut > start else start + PIECE_CHARS
        yield text[start:cut], False
        start = cut
    yield text[start:], True


def _mb(n: int) -> str:
    mb = n / (1 << 20)
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def _scaled(n: int, share: float) -> int:
    return round(n / share) if share > 0 else n


def _histogram(buckets: dict[int, int]) -> list[dict[str, int]]:
    """Documents per token length in powers of two (``buckets``: by the length's bit
    length), over the range documents occupy."""
    out = [{"from": 0, "to": 0, "documents": buckets[0]}] if buckets.get(0) else []
    bits = sorted(b for b, n in buckets.items() if b and n)
    for b in range(bits[0], bits[-1] + 1) if bits else ():
        lo = 1 << (b - 1)
        out.append({"from": lo, "to": 2 * lo - 1, "documents": buckets.get(b, 0)})
    return out


# ---------------------------------------------------------------------------- text samples


@dataclass
class _Segment:
    path: Path
    start: int  # byte range of the file in the split
    end: int


@dataclass
class _TextPlan:
    """How a split of plain-text files is sampled: ``windows`` (file, from, to, and the
    range the file has in the split) spread evenly over its ``size`` bytes."""

    size: int
    windows: list[tuple[Path, int, int, int, int]] = field(default_factory=list)

    @property
    def read(self) -> int:
        return sum(b - a for _, a, b, _, _ in self.windows)

    @property
    def share(self) -> float:
        return self.read / self.size if self.size else 1.0


def _text_groups(source: TextSource) -> dict[str, list[_Segment]] | None:
    """Each split's byte ranges of files, for a local dataset of plain-text files only
    (None otherwise: it is streamed). Held out, the files laid end to end are cut where
    training cuts them: the last ``val_fraction`` of their bytes, at a line break."""
    files = getattr(source, "files", None)
    groups = getattr(source, "groups_of", None)
    if (source.dataset.kind is not DatasetKind.LOCAL or not files or groups is None
            or any(file_format(f) != "text" for f in files)):
        return None
    if source.held_out:
        sizes = [(f, f.stat().st_size) for f in groups["train"]]
        total = sum(n for _, n in sizes)
        byte_cut = getattr(source, "_byte_cut", None)  # training's cut, when it has one
        cut = (byte_cut([n for _, n in sizes]) if byte_cut else
               int(total * (1 - source.val_fraction)))
        return {"train": _range(sizes, 0, cut), "val": _range(sizes, cut, total)}
    return {split: _range([(f, f.stat().st_size) for f in groups[split]], 0, 1 << 62)
            for split in ("train", "val")}


def _range(sizes: list[tuple[Path, int]], lo: int, hi: int) -> list[_Segment]:
    """The bytes ``[lo, hi)`` of files laid end to end, per file."""
    out, pos = [], 0
    for f, n in sizes:
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            out.append(_Segment(f, a - pos, b - pos))
        pos += n
    return out


def _plan(segments: list[_Segment], budget: int) -> _TextPlan | None:
    """Windows spread evenly over the segments, ``budget`` bytes in all; None when they
    hold no more than that (read whole, as training reads them)."""
    size = sum(s.end - s.start for s in segments)
    if size <= budget:
        return None
    plan = _TextPlan(size)
    n = max(MIN_WINDOWS, budget // WINDOW_BYTES)
    width = max(1, budget // n)
    bounds, pos = [], 0
    for s in segments:
        bounds.append((pos, s))
        pos += s.end - s.start
    k = 0
    for i in range(n):
        g = (i * size) // n + (size // n - width) // 2  # a window centred in each n-th
        while k + 1 < len(bounds) and bounds[k + 1][0] <= g:
            k += 1
        base, s = bounds[k]
        a = s.start + (g - base)
        plan.windows.append((s.path, a, min(a + width, s.end), s.start, s.end))
    return plan


def _plan_documents(plan: _TextPlan) -> Iterator[Document]:
    for path, a, b, r0, r1 in plan.windows:
        yield from window_documents(path, a, b, r0, r1)


def window_documents(path: Path, a: int, b: int, r0: int, r1: int) -> Iterator[Document]:
    """The documents of ``path`` that start in bytes ``[a, b)`` of the range ``[r0, r1)`` it
    has in a split, each read whole, as ``sources.paragraphs`` cuts them: a paragraph (text
    between blank lines) starts at ``r0`` or after a blank line, and one longer than
    ``DOC_MAX_CHARS`` is cut into documents at the last line break before that length. A
    window that starts inside such a long paragraph cannot see where it began: its first
    document there is taken to start at the first line break after a point drawn (seeded by
    ``a``) in the next ``DOC_MAX_CHARS`` bytes, so that windows find as many as there are,
    on average. Undecodable bytes are counted
    (``bad``) and shown as U+FFFD, as a lenient ``TextSource`` does. Memory: the window and
    one document."""
    limit = sources.DOC_MAX_CHARS
    try:
        with open(path, "rb") as fh:
            s0 = a if a <= r0 else max(r0, a - 64)  # a blank line may end just after a
            fh.seek(s0)
            buf = bytearray(fh.read(b - s0))

            def reach(upto: int) -> None:  # read on to byte upto (of the file), or r1
                while s0 + len(buf) < min(upto, r1):
                    more = fh.read(min(WINDOW_BYTES, min(upto, r1) - s0 - len(buf)))
                    if not more:
                        break
                    buf.extend(more)

            if a <= r0:
                pos = a
            else:  # the first blank line ending in the window, or a long paragraph's cut
                first = next((s0 + m.end() for m in SEPARATOR.finditer(buf)
                              if s0 + m.end() >= a), b)
                grid = a + random.Random(a).randrange(limit)  # not aligned with windows
                nl = buf.find(b"\n", grid - s0, first - s0) if grid < first else -1
                pos = s0 + nl + 1 if nl >= 0 else first
            docs = []
            while pos < b:
                while True:  # the blank line that ends this paragraph, read up to a document
                    m = SEPARATOR.search(buf, pos - s0)
                    have = s0 + len(buf)
                    if m is not None or have >= min(pos + limit + 64, r1):
                        break
                    reach(min(have + WINDOW_BYTES, pos + limit + 64))
                    if s0 + len(buf) == have:
                        break
                end = s0 + m.start() if m else s0 + len(buf)
                if end - pos > limit:  # cut as paragraphs() cuts a long one
                    nl = buf.rfind(b"\n", pos - s0, pos - s0 + limit + 1)
                    if nl > pos - s0:
                        docs.append(_document(bytes(buf[pos - s0:nl])))
                        pos = s0 + nl + 1
                    else:
                        cut = pos - s0 + limit
                        while cut > pos - s0 and (buf[cut] & 0xC0) == 0x80:
                            cut -= 1  # not inside a character
                        docs.append(_document(bytes(buf[pos - s0:cut])))
                        pos = s0 + cut
                    continue
                text = bytes(buf[pos - s0:end - s0])
                if m is None and end >= r1:  # the range's last line break ends it
                    text = text.rstrip(b" \t\r\f\v")
                    text = text[:-1] if text.endswith(b"\n") else bytes(buf[pos - s0:end - s0])
                docs.append(_document(text))
                if m is None:
                    break
                pos = s0 + m.end()
                del buf[:max(0, pos - s0 - 64)]  # what is read stays bounded
                s0 += max(0, pos - s0 - 64)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    for d in docs:
        if d is not None:
            yield d


def _document(data: bytes) -> Document | None:
    lead = LEADING.match(data)  # blank lines it starts with are a separator's, as in sources
    text = (data[lead.end():] if lead else data).decode("utf-8", "surrogateescape")
    if not text.strip():
        return None
    bad = len(ESCAPED.findall(text))
    return Document(ESCAPED.sub("\ufffd", text) if bad else text, bad=bad)


# ---------------------------------------------------------------------------- advice


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _size(chars: int) -> str:
    return f"{chars / 1e6:.1f} MB" if chars >= 1e6 else f"{chars / 1e3:.0f} KB"


def suggestions(report: DataReport, requested_vocab: int) -> list[str]:
    """Plain-words advice from the figures (each rule's threshold is a module constant)."""
    out: list[str] = []
    train, val = report.splits
    total = train.characters + val.characters
    share = val.characters / total if total else 0.0
    held_out = val.origin.startswith("held out")
    if total and share < SMALL_VAL_SHARE:  # (no text: chat rows all malformed)
        out.append(f"val split is {share:.1%} of the data: its loss will be noisy; "
                   + ("raise data.val_fraction" if held_out else
                      "use a larger validation file, or remove it and set data.val_fraction"))
    elif share > LARGE_VAL_SHARE:
        out.append(f"val split is {share:.0%} of the data: the model never trains on it; "
                   + ("lower data.val_fraction" if held_out else "move some of it to training"))
    median, p90 = train.median_tokens, train.p90_tokens
    if report.document_unit == "row" and train.documents_read and p90 * 2 <= report.seq_len:
        out.append(f"most documents are shorter than seq_len {report.seq_len} (median {median}, "
                   f"90% under {p90} tokens): consider {max(32, _pow2_at_least(p90))}")
    tok = report.tokenizer
    if tok["kind"] == "bpe" and tok.get("used"):
        unused = 1 - tok["used"] / requested_vocab
        if unused > UNUSED_VOCAB:
            out.append(f"vocab_size {requested_vocab} leaves {unused:.0%} of the vocabulary "
                       f"unused on {_size(train.characters)} of text: consider "
                       f"data.vocab_size={max(260, _pow2_at_least(tok['used']) // 2)}")
    for s in report.splits:
        if s.empty:
            out.append(f"{s.empty:,} empty {report.document_unit}s in the {s.name} split: "
                       "they add nothing; drop them")
        if s.documents_read and s.duplicates / s.documents_read > DUPLICATE_SHARE:
            out.append(f"{s.duplicates:,} duplicate documents in the {s.name} split"
                       + (" sample" if s.sampled else "")
                       + f" ({s.duplicates / s.documents_read:.1%}): deduplicate; repeats "
                       "are memorised rather than learned")
        if s.undecodable_bytes:
            out.append(f"{s.undecodable_bytes:,} bytes in the {s.name} split are not UTF-8: "
                       "training refuses such files; convert them "
                       "(iconv -f latin1 -t utf-8 in.txt > out.txt)")
        if s.characters and s.nonprintable / s.characters > NONPRINTABLE_SHARE:
            out.append(f"{s.nonprintable / s.characters:.2%} of the {s.name} split's characters "
                       "are control or invisible characters: clean the text")
    if report.overlap:
        out.append(f"{report.overlap:,} validation documents also appear in training: the val "
                   "loss will look better than it is")
    return out


def _notes(splits: list[SplitStats], plans: dict[str, _TextPlan], hashes: Hashes,
           tokenizer: str, trained_on: str | None) -> list[str]:
    out = []
    for s in splits:
        if not s.sampled:
            continue
        plan = plans.get(s.name)
        if plan is not None:
            out.append(f"the {s.name} split is {_mb(plan.size)}: {_mb(plan.read)} of it "
                       f"({s.share:.1%}) were read, in {len(plan.windows)} windows "
                       "spread evenly; its documents, characters and tokens are estimates "
                       "(--full reads it all)")
        else:
            out.append(f"the {s.name} split's documents were all counted but {s.share:.1%} of "
                       "its text was measured (every n-th document past the first "
                       "part); its tokens and control characters are estimates (--full "
                       "measures it all)")
    if any(s.sampled for s in splits):
        out.append("duplicates and overlap are counted among the documents read: a sample "
                   "finds only some of the repeats")
    if hashes.level:
        out.append(f"duplicates and overlap were tracked on 1/{hashes.scale:,} of the documents "
                   f"(chosen by hash, past {hashes.cap:,} distinct ones) and scaled up: "
                   "estimates")
    if trained_on and ("sample" in trained_on or "first" in trained_on):
        out.append(f"the {tokenizer} tokenizer was trained on {trained_on}"
                   + (", as training's is" if not any(x.sampled for x in splits) else
                      " only (--full trains it as training does)"))
    return out


# ---------------------------------------------------------------------------- entry


def inspect_dataset(spec: str, *, tokenizer: str, vocab_size: int, val_fraction: float,
                    text_column: str | None, seq_len: int, data_dir: Path,
                    full: bool = False, sample_bytes: int = SAMPLE_BYTES,
                    data_format: str = "auto", loss_on: str = "assistant",
                    on_bad_rows: str = "auto", truncate: bool = True,
                    model_folder: Path | None = None) -> DataReport:
    """Read ``spec`` as training reads it, split by split (after the training documents for
    a tokenizer trained on them), and describe it. Unless ``full``, a split of more than
    ``sample_bytes`` of text is sampled (see the module's text). Chat data (``data_format``,
    ``data.format``) is measured as training renders it, a document per conversation, and
    described in ``DataReport.chat`` (``loss_on``, ``on_bad_rows``, ``truncate``: the
    settings training would use; see ``data.inspect_chat``). ``model_folder``: a Hugging Face
    folder the run imports (``--init-from``): its own chat template, else ChatML."""
    t0, spec = time.perf_counter(), spec.strip()
    budget = None if full else sample_bytes
    source = resolve_dataset(spec, data_dir=data_dir, val_fraction=val_fraction,
                             text_column=text_column, data_format=data_format)
    groups = _text_groups(source)
    plans: dict[str, _TextPlan] = {}
    if groups is not None and budget is not None:
        plans = {k: p for k, v in groups.items() if (p := _plan(v, budget)) is not None}
    chat = template = None
    if source.chat_format is not None:
        template = chat_template(model_folder)
        chat = ChatMeasure(source, template, loss_on=loss_on, seq_len=seq_len,
                           on_bad_rows=on_bad_rows, truncate=truncate)

    def read(split: str) -> Iterator[Document]:
        if split in plans:
            return _plan_documents(plans[split])
        return (d for d in source.documents(split, lenient=True) if not isinstance(d, Gap))

    def documents(split: str) -> Iterator[Document]:
        if chat is None:
            return read(split)
        return (Document(template.render(messages)) for _, messages in
                chat.conversations(split, read(split), record=False))

    head_cut: list[bool] = []  # the tokenizer's texts stopped at the budget
    limit = budget
    if budget is None and tokenizer == "bpe":  # training's own cap on the BPE's text
        from llm_trainer.data.prepare import BPE_SAMPLE_BYTES
        limit = BPE_SAMPLE_BYTES

    def train_texts() -> Iterator[str]:
        texts = (d.text for d in documents("train"))
        return texts if limit is None or "train" in plans else _head(texts, limit, head_cut)

    def val_texts() -> Iterator[str]:
        return (d.text for d in documents("val"))

    tok, trained_on = _tokenizer(tokenizer, vocab_size, train_texts, val_texts)
    if chat is not None:
        from llm_trainer.data.chat import with_chat_tokens

        tok = with_chat_tokens(tok, template)
    if trained_on and "train" in plans:
        trained_on = trained_on.replace("the training split",
                                        f"a {_mb(plans['train'].read)} sample of the "
                                        "training split")
    elif trained_on and head_cut:
        trained_on = trained_on.replace("the training split",
                                        f"the first {_mb(limit)} of the training split")
    used: set[int] = set()
    hashes = Hashes()
    stats = []
    for name in ("train", "val"):
        m = _Measure(name, source.origin(name), tok, used if name == "train" else None, hashes,
                     budget if name not in plans else None)
        if chat is None:
            for d in documents(name):
                m.add(d)
        else:  # every row checked; a conversation measured as training renders it
            for _, messages in chat.conversations(name, read(name), record=True):
                if m.add(Document(template.render(messages))):
                    chat.measure(tok, messages)
        plan = plans.get(name)
        stats.append((m, m.finish(plan.share if plan else None,
                                  plan.size if plan else _bytes_of(groups, name))))
    (train_m, train), (val_m, val) = stats
    chat_stats = chat.finish() if chat is not None else None
    if not train.documents - train.empty and not (chat_stats and chat_stats.rows):
        raise DataError(f"the training split of {spec} has no text", hint=LOCAL_HINT)
    buckets = dict(train_m.buckets)
    for k, v in val_m.buckets.items():
        buckets[k] = buckets.get(k, 0) + v
    layout, col = source.layout, source.columns[0] if source.columns else None
    notes = _notes([train, val], plans, hashes, tokenizer, trained_on)
    if chat_stats is not None:
        col = None  # the columns a conversation is read from are the chat format's
    report = DataReport(
        spec=spec, format=layout.format,
        format_reason=layout.reason + (f" ({source.notice})" if source.notice else ""),
        files=list(layout.files),
        document_unit="conversation" if chat_stats else layout.unit,
        text_column=col.column if col else None,
        column_candidates=list(col.candidates) if col else [],
        column_reason=col.reason if col else None,
        tokenizer={"spec": tokenizer, "kind": tok.kind if tok else None,
                   "vocab_size": tok.vocab_size if tok else None, "used": len(used),
                   "trained_on": trained_on},
        splits=[train, val], histogram=_histogram(buckets), overlap=hashes.overlap(),
        seq_len=seq_len, suggestions=[], sampled=train.sampled or val.sampled, notes=notes,
        seconds=0.0, chat=chat_stats)
    report.suggestions = suggestions(report, vocab_size)
    if chat_stats is not None:
        report.suggestions += chat_suggestions(chat_stats)
    report.seconds = time.perf_counter() - t0
    return report


def _bytes_of(groups: dict[str, list[_Segment]] | None, split: str) -> int | None:
    return sum(s.end - s.start for s in groups[split]) if groups else None


def _head(texts: Iterator[str], chars: int, cut: list[bool]) -> Iterator[str]:
    """The texts until ``chars`` characters have gone by; ``cut`` gets True if some are
    left."""
    n = 0
    for t in texts:
        yield t
        n += len(t)
        if n >= chars:
            if next(texts, None) is not None:
                cut.append(True)
            return


def _tokenizer(spec: str, vocab_size: int, train_texts: Callable[[], Iterator[str]],
               val_texts: Callable[[], Iterator[str]]) -> tuple[TextTokenizer, str | None]:
    """The tokenizer training would build for this data, and what it was built from: a BPE
    trained on the training documents, a char vocabulary of both splits' (one streamed pass),
    bytes, or a tokenizer.json file. ``train_texts()`` and ``val_texts()`` yield the
    documents afresh."""
    if spec == "bpe":
        return TextTokenizer.train_bpe_from(train_texts(), vocab_size), "the training split"
    if spec == "char":
        chars: set[str] = set()
        for text in itertools.chain(train_texts(), val_texts()):
            chars.update(text)
        return (TextTokenizer.build_char("".join(sorted(chars))),
                "the training split and the validation split")
    if spec == "byte":
        return TextTokenizer.build_byte(), None
    return TextTokenizer.from_file(Path(spec).expanduser()), None


def template_examples(spec: str, n: int, *, tokenizer: str, vocab_size: int,
                      val_fraction: float, text_column: str | None, data_dir: Path,
                      data_format: str = "auto", loss_on: str = "assistant",
                      sample_bytes: int = SAMPLE_BYTES,
                      model_folder: Path | None = None) -> TemplateView:
    """The first ``n`` usable conversations of chat data ``spec`` (training split first)
    rendered with the template training would use (``model_folder``'s own, else ChatML), each
    with the character spans whose tokens are trained (``encode_conversation``'s mask under
    ``loss_on``), for the tokenizer inspect builds (a BPE or char vocabulary from the first
    ``sample_bytes`` of the training conversations, the template's markers added)."""
    from llm_trainer.data.chat import with_chat_tokens

    spec = spec.strip()
    source = resolve_dataset(spec, data_dir=data_dir, val_fraction=val_fraction,
                             text_column=text_column, data_format=data_format)
    if source.chat_format is None:
        raise DataError(f"{spec} holds no conversations: --show-template shows chat data",
                        hint="chat data is a table (.jsonl, .json, .csv, .parquet, hf:) with a "
                             "messages, conversations, instruction/output or prompt/completion "
                             "column")
    template = chat_template(model_folder)
    chat = ChatMeasure(source, template, loss_on=loss_on, seq_len=0, on_bad_rows="skip",
                       truncate=True)

    def conversations(split: str):
        docs = (d for d in source.documents(split, lenient=True) if not isinstance(d, Gap))
        return chat.conversations(split, docs, record=False)

    def texts(split: str) -> Iterator[str]:
        return (template.render(messages) for _, messages in conversations(split))

    tok, _ = _tokenizer(tokenizer, vocab_size, lambda: _head(texts("train"), sample_bytes, []),
                        lambda: texts("val"))
    tok = with_chat_tokens(tok, template)
    examples = []
    for split in ("train", "val"):
        for row, messages in itertools.islice(conversations(split), n - len(examples)):
            examples.append(example(tok, template, messages, row_where(split, row, source),
                                    loss_on))
        if len(examples) >= n:
            break
    return TemplateView(spec, source.chat_format, chat.stats.reason, template.kind,
                        {"spec": tokenizer, "kind": tok.kind, "vocab_size": tok.vocab_size},
                        loss_on, legend(loss_on), examples)


def chat_template(model_folder: Path | None):
    """The template training renders chat data with: an imported Hugging Face folder's own
    ``chat_template``, else (a model of ours, or a folder without one) ChatML."""
    from llm_trainer.data.chat import ChatTemplate

    own = ChatTemplate.from_hf_folder(model_folder) if model_folder is not None else None
    return own or ChatTemplate.chatml()
