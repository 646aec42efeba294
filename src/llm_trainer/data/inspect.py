"""`llm-trainer data inspect SPEC`: what a dataset is before you train on it.

The data is read through the ``TextSource`` training reads (``data.sources``: text read 1 MB
at a time, table rows from Arrow in batches), split as training splits it: one pass over
the documents gathers everything (documents, characters, tokens with the tokenizer
training would use, their lengths, empty and duplicate documents, bytes that are not UTF-8,
control and invisible characters), after one more pass over the training documents when
that tokenizer is trained on them (bpe, char), as training's is. Memory holds the figures
(a length and a 16-byte hash per document), not the text. A *document* is a row of a table
(.jsonl/.json/.csv/.parquet, a Hugging Face dataset) or a paragraph of a text file (text
between blank lines). Suggestions are plain sentences derived from those figures; the
thresholds are the constants below. No torch here.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.data.sources import LOCAL_HINT, Document, Gap, SourceFile, resolve_dataset
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
    lengths: list[int] = field(default_factory=list, repr=False)  # tokens per document

    def percentile(self, q: float) -> int:
        if not self.lengths:
            return 0
        ordered = sorted(self.lengths)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    tokenizer: dict[str, Any]  # spec, kind, vocab_size, used (distinct ids in train)
    splits: list[SplitStats]
    histogram: list[dict[str, int]]  # {"from", "to", "documents"} over token lengths, log2
    overlap: int  # validation documents that also appear in training
    seq_len: int
    suggestions: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for split, stats in zip(out["splits"], self.splits, strict=True):
            split.pop("lengths")
            split.update(median_tokens=stats.percentile(0.5), p90_tokens=stats.percentile(0.9))
        return out


# ---------------------------------------------------------------------------- the pass


class _Measure:
    """One split's figures, gathered document by document (tokens in batches)."""

    def __init__(self, name: str, origin: str, tokenizer: TextTokenizer | None,
                 seen_ids: set[int] | None) -> None:
        self.stats = SplitStats(name, origin)
        self.hashes: set[str] = set()
        self.tokenizer, self.seen_ids = tokenizer, seen_ids
        self.batch: list[str] = []

    def add(self, doc: Document) -> None:
        stats = self.stats
        stats.documents += 1
        stats.characters += len(doc.text)
        stats.undecodable_bytes += doc.bad
        stats.nonprintable += len(NONPRINTABLE.findall(doc.text))
        body = doc.text.strip()
        if not body:
            stats.empty += 1
            return
        if len(body) >= DUPLICATE_MIN_CHARS:
            digest = hashlib.blake2b(body.encode("utf-8", "surrogatepass"),
                                     digest_size=16).hexdigest()
            if digest in self.hashes:
                stats.duplicates += 1
            self.hashes.add(digest)
        self.batch.append(doc.text)
        if len(self.batch) >= 2048:
            self.flush()

    def flush(self) -> SplitStats:
        if self.tokenizer is not None and self.batch:
            for enc in self.tokenizer.tok.encode_batch(self.batch, add_special_tokens=False):
                self.stats.lengths.append(len(enc.ids))
                self.stats.tokens += len(enc.ids)
                if self.seen_ids is not None:
                    self.seen_ids.update(enc.ids)
        self.batch.clear()
        return self.stats


def _histogram(lengths: list[int]) -> list[dict[str, int]]:
    if not lengths:
        return []
    top = max(lengths)
    buckets, lo = [], 1
    while lo <= max(top, 1):
        hi = lo * 2
        buckets.append({"from": lo, "to": hi - 1,
                        "documents": sum(1 for n in lengths if lo <= n < hi)})
        lo = hi
    zero = sum(1 for n in lengths if n == 0)
    buckets = ([{"from": 0, "to": 0, "documents": zero}] if zero else []) + buckets
    while buckets and not buckets[0]["documents"]:  # only the range documents occupy
        buckets.pop(0)
    return buckets


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
    if share < SMALL_VAL_SHARE:
        out.append(f"val split is {share:.1%} of the data: its loss will be noisy; "
                   + ("raise data.val_fraction" if held_out else
                      "use a larger validation file, or remove it and set data.val_fraction"))
    elif share > LARGE_VAL_SHARE:
        out.append(f"val split is {share:.0%} of the data: the model never trains on it; "
                   + ("lower data.val_fraction" if held_out else "move some of it to training"))
    median = train.percentile(0.5)
    p90 = train.percentile(0.9)
    if report.document_unit == "row" and train.lengths and p90 * 2 <= report.seq_len:
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
        if s.documents and s.duplicates / s.documents > DUPLICATE_SHARE:
            out.append(f"{s.duplicates:,} duplicate documents in the {s.name} split "
                       f"({s.duplicates / s.documents:.1%}): deduplicate; repeats are "
                       "memorised rather than learned")
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


# ---------------------------------------------------------------------------- entry


def inspect_dataset(spec: str, *, tokenizer: str, vocab_size: int, val_fraction: float,
                    text_column: str | None, seq_len: int, data_dir: Path) -> DataReport:
    """Read ``spec`` through the TextSource training reads, one pass per split (after one
    over the training documents for a tokenizer trained on them), and describe it."""
    t0, spec = time.perf_counter(), spec.strip()
    source = resolve_dataset(spec, data_dir=data_dir, val_fraction=val_fraction,
                             text_column=text_column)
    tok = _tokenizer(tokenizer, vocab_size,
                     lambda: (d.text for d in source.documents("train", lenient=True)))
    used: set[int] = set()
    train = _Measure("train", source.origin("train"), tok, used)
    val = _Measure("val", source.origin("val"), tok, None)
    for m in (train, val):
        for d in source.documents(m.stats.name, lenient=True):
            if not isinstance(d, Gap):
                m.add(d)
    train_stats, val_stats = train.flush(), val.flush()
    if not train_stats.documents - train_stats.empty:
        raise DataError(f"the training split of {spec} has no text", hint=LOCAL_HINT)
    layout, col = source.layout, source.columns[0] if source.columns else None
    report = DataReport(
        spec=spec, format=layout.format,
        format_reason=layout.reason + (f" ({source.notice})" if source.notice else ""),
        files=list(layout.files), document_unit=layout.unit,
        text_column=col.column if col else None,
        column_candidates=list(col.candidates) if col else [],
        column_reason=col.reason if col else None,
        tokenizer={"spec": tokenizer, "kind": tok.kind if tok else None,
                   "vocab_size": tok.vocab_size if tok else None, "used": len(used)},
        splits=[train_stats, val_stats],
        histogram=_histogram(train_stats.lengths + val_stats.lengths),
        overlap=len(val.hashes & train.hashes), seq_len=seq_len, suggestions=[], seconds=0.0)
    report.suggestions = suggestions(report, vocab_size)
    report.seconds = time.perf_counter() - t0
    return report


def _tokenizer(spec: str, vocab_size: int, train_texts) -> TextTokenizer:
    """The tokenizer training would build for this data: a BPE trained on the training
    split, a char vocabulary of it (both need one streamed pass over it), bytes, or a
    tokenizer.json file. ``train_texts()`` yields the training documents afresh."""
    if spec == "bpe":
        return TextTokenizer.train_bpe_from(train_texts(), vocab_size)
    if spec == "char":
        chars: set[str] = set()
        for text in train_texts():
            chars.update(text)
        chars.add("\n")  # documents are joined by blank lines in training
        return TextTokenizer.build_char("".join(sorted(chars)))
    if spec == "byte":
        return TextTokenizer.build_byte()
    return TextTokenizer.from_file(Path(spec).expanduser())
