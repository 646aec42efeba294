"""`llm-trainer data inspect SPEC`: what a dataset is before you train on it.

One pass over each split's documents gathers everything: documents, characters, tokens (with
the tokenizer training would use), their lengths, empty and duplicate documents, bytes that
are not UTF-8, control and invisible characters. A *document* is a row of a table
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

from llm_trainer.data.sources import (
    BUILTIN_PYDOCS,
    TABLE_SUFFIXES,
    TEXT_SUFFIXES,
    WIKITEXT,
    check_dataset_spec,
    local_files,
    resolve_dataset,
    split_files,
    split_of,
    table_rows,
)
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError

PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
# control characters (but tab, newline, carriage return), C1 controls, zero-width and
# direction marks, BOM, private use and specials: what a cleaned text does not contain
NONPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e"
                          "\u2060-\u2064\ufeff\ue000-\uf8ff\ufff0-\uffff]")
ESCAPED = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by surrogateescape

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
class _Docs:
    """One split's documents as they are read, plus the byte problems met reading them."""

    texts: list[str]
    undecodable: int = 0


def _decode(path: Path) -> tuple[str, int]:
    data = path.read_bytes()
    text = data.decode("utf-8", errors="surrogateescape")
    bad = len(ESCAPED.findall(text))
    return (ESCAPED.sub("\ufffd", text) if bad else text), bad


def _paragraphs(text: str) -> list[str]:
    return [p for p in PARAGRAPH.split(text) if p.strip()] if text else []


def _read_files(files: list[Path], text_column: str | None, cache_dir: Path,
                choice: list) -> _Docs:
    docs = _Docs([])
    for f in files:
        fmt = TABLE_SUFFIXES.get(f.suffix.lower())
        if fmt is None:
            text, bad = _decode(f)
            docs.texts += _paragraphs(text)
            docs.undecodable += bad
        else:
            rows, how = table_rows([f], fmt, text_column, cache_dir)
            docs.texts += ["" if r is None else str(r) for r in rows]
            choice.append(how)
    return docs


def _hold_out(docs: _Docs, fraction: float) -> tuple[_Docs, _Docs]:
    """The trailing documents holding about ``fraction`` of the characters validate, as
    training holds out the last ``val_fraction`` of the text."""
    total = sum(len(t) for t in docs.texts)
    kept, cut = 0, len(docs.texts)
    while cut > 1 and kept < fraction * total:
        cut -= 1
        kept += len(docs.texts[cut])
    return _Docs(docs.texts[:cut], docs.undecodable), _Docs(docs.texts[cut:])


# ---------------------------------------------------------------------------- the pass


def _measure(name: str, origin: str, docs: _Docs, tokenizer: TextTokenizer | None,
             seen_ids: set[int] | None) -> tuple[SplitStats, set[str]]:
    stats = SplitStats(name, origin, undecodable_bytes=docs.undecodable)
    hashes: set[str] = set()
    batch: list[str] = []

    def flush() -> None:
        if tokenizer is None or not batch:
            return
        for enc in tokenizer.tok.encode_batch(batch, add_special_tokens=False):
            stats.lengths.append(len(enc.ids))
            stats.tokens += len(enc.ids)
            if seen_ids is not None:
                seen_ids.update(enc.ids)
        batch.clear()

    for text in docs.texts:
        stats.documents += 1
        stats.characters += len(text)
        stats.nonprintable += len(NONPRINTABLE.findall(text))
        body = text.strip()
        if not body:
            stats.empty += 1
            continue
        if len(body) >= DUPLICATE_MIN_CHARS:
            digest = hashlib.blake2b(body.encode("utf-8", "surrogatepass"),
                                     digest_size=16).hexdigest()
            if digest in hashes:
                stats.duplicates += 1
            hashes.add(digest)
        batch.append(text)
        if len(batch) >= 2048:
            flush()
    flush()
    return stats, hashes


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
            train_docs, val_docs = _hold_out(_read_files(found, text_column, cache, choice),
                                             val_fraction)
            origins = (f"all but the last {val_fraction:.0%}", f"held out: the last "
                                                                f"{val_fraction:.0%}")
            files = [SourceFile(str(f.relative_to(root)), _fmt(f), "both") for f in found]
        else:
            train_docs = _read_files(groups["train"], text_column, cache, choice)
            val_docs = _read_files(groups["val"], text_column, cache, choice)
            origins = tuple(", ".join(f.name for f in groups[k]) for k in ("train", "val"))
            files = [SourceFile(str(f.relative_to(root)), _fmt(f), split_of(f) or "train")
                     for f in found]
    else:  # hub datasets, WikiText-2 and the built-in corpus: the text training would read
        source = resolve_dataset(spec, data_dir=data_dir, val_fraction=val_fraction,
                                 text_column=text_column)
        splits = source.splits()
        fmt = ("the built-in corpus" if spec == BUILTIN_PYDOCS else
               f"Hugging Face dataset {WIKITEXT[0]} ({WIKITEXT[1]})" if source.kind == "hf"
               and spec.startswith("wikitext") else f"Hugging Face dataset {spec[3:]}")
        reason = ("a name this tool knows" if not spec.startswith("hf:") else
                  "the hf: prefix names a dataset on the hub (or its cache)")
        train_docs, val_docs = _Docs(_paragraphs(splits.train)), _Docs(_paragraphs(splits.val))
        origins = ((f"all but the last {val_fraction:.0%}", f"held out: the last "
                                                            f"{val_fraction:.0%}")
                   if splits.val_source == "held out" else
                   ("the train split", "the validation split"))
    tok = _tokenizer(tokenizer, vocab_size, train_docs.texts)
    used: set[int] = set()
    train, train_hashes = _measure("train", origins[0], train_docs, tok, used)
    val, val_hashes = _measure("val", origins[1], val_docs, tok, None)
    col = choice[0] if choice else None
    report = DataReport(
        spec=spec, format=fmt, format_reason=reason, files=files, document_unit=unit,
        text_column=col.column if col else None,
        column_candidates=list(col.candidates) if col else [],
        column_reason=col.reason if col else None,
        tokenizer={"spec": tokenizer, "kind": tok.kind if tok else None,
                   "vocab_size": tok.vocab_size if tok else None, "used": len(used)},
        splits=[train, val], histogram=_histogram(train.lengths + val.lengths),
        overlap=len(val_hashes & train_hashes), seq_len=seq_len, suggestions=[], seconds=0.0)
    report.suggestions = suggestions(report, vocab_size)
    report.seconds = time.perf_counter() - t0
    return report


def _fmt(f: Path) -> str:
    return TABLE_SUFFIXES.get(f.suffix.lower(), "text")


def _tokenizer(spec: str, vocab_size: int, train_texts: list[str]) -> TextTokenizer | None:
    """The tokenizer training would build for this data (a BPE trained on the training
    split, a char vocabulary from it, bytes, or a tokenizer.json file)."""
    if not train_texts:
        raise DataError("the training split has no text")
    text = "\n\n".join(train_texts)
    if spec == "bpe":
        return TextTokenizer.train_bpe(text, vocab_size)
    if spec == "char":
        return TextTokenizer.build_char(text)
    if spec == "byte":
        return TextTokenizer.build_byte()
    return TextTokenizer.from_file(Path(spec).expanduser())
