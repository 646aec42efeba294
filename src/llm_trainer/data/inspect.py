"""`llm-trainer data inspect SPEC`: what a dataset is before you train on it.

Local files are streamed (text read 1 MB at a time, table rows from Arrow in batches): one
pass over the documents gathers everything (documents, characters, tokens with the tokenizer
training would use, their lengths, empty and duplicate documents, bytes that are not UTF-8,
control and invisible characters), after one more pass over the training documents when
that tokenizer is trained on them (bpe, char), as training's is. Memory holds the figures
(a length and a 16-byte hash per document), not the text. A *document* is a row of a table
(.jsonl/.json/.csv/.parquet, a Hugging Face dataset) or a paragraph of a text file (text
between blank lines). Suggestions are plain sentences derived from those figures; the
thresholds are the constants below. No torch here.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.data.sources import (
    LOCAL_HINT,
    TABLE_SUFFIXES,
    TEXT_SUFFIXES,
    WIKITEXT,
    check_dataset_spec,
    hf_splits,
    load_hf,
    local_files,
    open_table,
    resolve_dataset,
    split_files,
    split_of,
)
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError

PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
# control characters (but tab, newline, carriage return), C1 controls, zero-width and
# direction marks, BOM, private use and specials (not U+FFFD: undecodable bytes count apart):
# what a cleaned text does not contain
NONPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e"
                          "\u2060-\u2064\ufeff\ue000-\uf8ff\ufff0-\ufffc\ufffe\uffff]")
ESCAPED = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by surrogateescape

READ_BYTES = 1 << 20  # text files are read this much at a time
SMALL_VAL_SHARE = 0.01  # a validation split under 1% of the data gives a noisy val loss
LARGE_VAL_SHARE = 0.3  # over 30% is data the model never trains on
UNUSED_VOCAB = 0.2  # a BPE vocabulary with over 20% of its tokens unused is too large
DUPLICATE_SHARE = 0.01
DUPLICATE_MIN_CHARS = 64  # shorter repeats (headings, "ROMEO:") are not worth reporting
NONPRINTABLE_SHARE = 0.001


@dataclass
class SourceFile:
    path: str
    format: str  # text | json | csv | parquet
    split: str  # train | val | both (held out)


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


# ---------------------------------------------------------------------------- documents


@dataclass
class _Doc:
    text: str
    at: float = 0.0  # where it starts in the whole data, 0..1 (bytes of files, table rows)
    bad: int = 0  # bytes in it that were not UTF-8 (shown as U+FFFD)


def _split_paragraphs(text: str):
    """(offset, paragraph) for each paragraph of ``text`` (blank lines separate them)."""
    pos = 0
    for m in PARAGRAPH.finditer(text):
        yield pos, text[pos:m.start()]
        pos = m.end()
    yield pos, text[pos:]


def _paragraphs(text: str) -> list[str]:
    return [p for _, p in _split_paragraphs(text) if p.strip()] if text else []


def _text_docs(path: Path, start: int, total: int) -> Iterator[_Doc]:
    """The paragraphs of a text file, read 1 MB at a time (never the whole file at once);
    positions count characters as bytes, exact for ASCII."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    pending, base = "", 0  # base: characters of the file before ``pending``

    def emit(text: str):
        for offset, para in _split_paragraphs(text):
            if para.strip():
                bad = len(ESCAPED.findall(para))
                yield _Doc(ESCAPED.sub("\ufffd", para) if bad else para,
                           (start + base + offset) / total, bad)

    with open(path, "rb") as fh:
        while block := fh.read(READ_BYTES):
            pending += decoder.decode(block)
            last = None
            for last in PARAGRAPH.finditer(pending):  # noqa: B007 - the last one is wanted
                pass
            if last is not None:
                yield from emit(pending[:last.start()])
                base += last.end()
                pending = pending[last.end():]
        pending += decoder.decode(b"", final=True)
        yield from emit(pending)


def _table_docs(path: Path, fmt: str, text_column: str | None, cache_dir: Path, start: int,
                total: int, choice: list) -> Iterator[_Doc]:
    """The rows of a table file, read from Arrow in batches; a row's position is its share
    of the file's rows."""
    ds, how = open_table([path], fmt, text_column, cache_dir)
    choice.append(how)
    size, n, i = path.stat().st_size, max(1, ds.num_rows), 0
    for batch in ds.iter(batch_size=1024):
        for value in batch[how.column]:
            yield _Doc("" if value is None else str(value), (start + size * i / n) / total)
            i += 1


def _file_docs(files: list[Path], text_column: str | None, cache_dir: Path,
               choice: list) -> Iterator[_Doc]:
    """Every document of ``files`` in order, streamed."""
    total = max(1, sum(f.stat().st_size for f in files))
    start = 0
    for f in files:
        fmt = TABLE_SUFFIXES.get(f.suffix.lower())
        yield from (_text_docs(f, start, total) if fmt is None else
                    _table_docs(f, fmt, text_column, cache_dir, start, total, choice))
        start += f.stat().st_size


# ---------------------------------------------------------------------------- the pass


class _Measure:
    """One split's figures, gathered document by document (tokens in batches)."""

    def __init__(self, name: str, origin: str, tokenizer: TextTokenizer | None,
                 seen_ids: set[int] | None) -> None:
        self.stats = SplitStats(name, origin)
        self.hashes: set[str] = set()
        self.tokenizer, self.seen_ids = tokenizer, seen_ids
        self.batch: list[str] = []

    def add(self, doc: _Doc) -> None:
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
    """Read ``spec`` as training would, in one pass per split, and describe it."""
    t0 = time.perf_counter()
    check_dataset_spec(spec)
    choice: list = []
    files: list[SourceFile] = []
    spec = spec.strip()
    path = Path(spec).expanduser()
    unit = "paragraph"
    if path.exists():
        found, root = local_files(path)
        groups = split_files(found)
        kinds = sorted({TABLE_SUFFIXES.get(f.suffix.lower(), "text") for f in found})
        if path.is_dir():
            fmt = "folder of " + " + ".join(kinds)
            by_name = ("splits from the file names (train / valid / test)" if groups else
                       f"no validation file: the last {val_fraction:.0%} is held out")
            reason = f"a folder with {len(found)} readable files; {by_name}"
        else:
            fmt = kinds[0]
            reason = f"the suffix {path.suffix.lower()} " + (
                "is read as plain text" if path.suffix.lower() in TEXT_SUFFIXES else
                f"is read as {fmt} rows through Hugging Face datasets")
        unit = "row" if kinds == ["csv"] or kinds == ["json"] or kinds == ["parquet"] else \
            "paragraph" if kinds == ["text"] else "document"
        cache = data_dir / "hf"
        if groups is None:
            cut = 1 - val_fraction

            def stream(which: str) -> Iterator[_Doc]:
                return (d for d in _file_docs(found, text_column, cache, choice)
                        if (d.at < cut) == (which == "train"))

            origins = (f"all but the last {val_fraction:.0%}", f"held out: the last "
                                                                f"{val_fraction:.0%}")
            files = [SourceFile(str(f.relative_to(root)), _fmt(f), "both") for f in found]
        else:
            def stream(which: str) -> Iterator[_Doc]:
                return _file_docs(groups[which], text_column, cache, choice)

            origins = tuple(", ".join(f.name for f in groups[k]) for k in ("train", "val"))
            files = [SourceFile(str(f.relative_to(root)), _fmt(f), split_of(f) or "train")
                     for f in found]
        tok = _tokenizer(tokenizer, vocab_size, lambda: (d.text for d in stream("train")))
        choice.clear()  # the tokenizer's pass met the same columns
        used: set[int] = set()
        train = _Measure("train", origins[0], tok, used)
        val = _Measure("val", origins[1], tok, None)
        if groups is None:  # one pass over the files feeds both splits
            for d in _file_docs(found, text_column, cache, choice):
                (train if d.at < cut else val).add(d)
        else:
            for which, m in (("train", train), ("val", val)):
                for d in stream(which):
                    m.add(d)
    elif spec.startswith("hf:"):  # rows of a Hugging Face dataset, from Arrow in batches
        train_ds, val_ds, how = hf_splits(load_hf(spec, data_dir), spec, text_column)
        choice.append(how)
        unit = "row"
        fmt = f"Hugging Face dataset {spec[3:]}"
        reason = "the hf: prefix names a dataset on the hub, in its cache, or a local folder"
        cut = int(train_ds.num_rows * (1 - val_fraction)) if val_ds is None else None

        def rows(which: str) -> Iterator[_Doc]:
            ds = train_ds if which == "train" or val_ds is None else val_ds
            i = 0
            for batch in ds.iter(batch_size=1024):
                for value in batch[how.column]:
                    if cut is None or (i < cut) == (which == "train"):
                        yield _Doc("" if value is None else str(value))
                    i += 1

        origins = ((f"all but the last {val_fraction:.0%} of the rows",
                    f"held out: the last {val_fraction:.0%} of the rows") if val_ds is None
                   else ("the train split", "the validation split"))
        tok = _tokenizer(tokenizer, vocab_size, lambda: (d.text for d in rows("train")))
        used = set()
        train = _Measure("train", origins[0], tok, used)
        val = _Measure("val", origins[1], tok, None)
        for which, m in (("train", train), ("val", val)):
            for d in rows(which):
                m.add(d)
    else:  # WikiText-2 and the built-in corpus: the text training reads, as paragraphs
        source = resolve_dataset(spec, data_dir=data_dir, val_fraction=val_fraction,
                                 text_column=text_column)
        splits = source.splits()
        fmt = ("the built-in corpus" if source.kind == "builtin" else
               f"Hugging Face dataset {WIKITEXT[0]} ({WIKITEXT[1]})")
        reason = "a name this tool knows" + (f" ({source.notice})" if source.notice else "")
        origins = ((f"all but the last {val_fraction:.0%}", f"held out: the last "
                                                            f"{val_fraction:.0%}")
                   if splits.val_source == "held out" else
                   ("the train split", "the validation split"))
        texts = {"train": _paragraphs(splits.train), "val": _paragraphs(splits.val)}
        tok = _tokenizer(tokenizer, vocab_size, lambda: iter(texts["train"]))
        used = set()
        train = _Measure("train", origins[0], tok, used)
        val = _Measure("val", origins[1], tok, None)
        for which, m in (("train", train), ("val", val)):
            for text in texts[which]:
                m.add(_Doc(text))
    train_stats, val_stats = train.flush(), val.flush()
    if not train_stats.documents - train_stats.empty:
        raise DataError(f"the training split of {spec} has no text", hint=LOCAL_HINT)
    col = choice[0] if choice else None
    report = DataReport(
        spec=spec, format=fmt, format_reason=reason, files=files, document_unit=unit,
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


def _fmt(f: Path) -> str:
    return TABLE_SUFFIXES.get(f.suffix.lower(), "text")


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
