"""Where text comes from: WikiText-2, any Hugging Face dataset, local files, a built-in corpus.

``resolve_dataset(spec)`` is the one place a ``DatasetSpec``'s kind picks its reader; it
returns a ``TextSource`` (``data.spec``) with a cheap fingerprint (for cache keys) whose
``documents(split)`` stream the train, validation and test documents. Text files are read
1 MB at a time and cut into paragraphs at blank lines; table rows (.jsonl/.json/.csv/.parquet,
Hugging Face datasets) come from Arrow in batches. Nothing here holds a corpus in a string
(``TextSource.text`` joins one split, for the token cache).
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from llm_trainer.data.chat import FORMATS, detect_format, format_columns
from llm_trainer.data.spec import (  # noqa: F401 - hold_out is re-exported
    BUILTIN_PYDOCS,
    LOCAL_HINT,
    SPLIT_WORDS,
    WIKITEXT,
    ChatRow,
    ColumnChoice,
    DatasetKind,
    DatasetSpec,
    Document,
    Gap,
    Layout,
    SourceFile,
    TextSource,
    check_split,
    file_format,
    hold_out,
    hold_out_cut,
    is_data_file,
    split_of,
)
from llm_trainer.errors import DataError
from llm_trainer.hub import hub_reachable

TEXT_COLUMN_GUESSES = ("text", "content", "body", "document", "sentence", "story", "article")
READ_BYTES = 1 << 20  # text files are read this much at a time
DOC_MAX_CHARS = 1 << 20  # a longer paragraph is cut (at a line break) into documents this long
PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")  # what separates the documents of a text
LEADING = re.compile(r"(?:[ \t\r\f\v]*\n)+")  # blank lines a paragraph starts with
TRAILING = re.compile(r"\n[ \t\r\f\v]*\Z")  # a text's last line break and blanks after it
ESCAPED = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by surrogateescape


def resolve_dataset(spec: str | DatasetSpec, *, data_dir: Path, val_fraction: float,
                    text_column: str | None, explicit: bool = True,
                    reachable: Callable[[], bool] | None = None,
                    data_format: str = "auto") -> TextSource:
    """Turn ``--dataset`` into a TextSource. ``explicit`` is False when the user did not name
    a dataset: then an unreachable WikiText-2 falls back to the built-in corpus.
    ``data_format`` (``data.format``): auto, text or chat."""
    dataset = spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(spec)
    reachable = reachable or hub_reachable
    if dataset.kind is DatasetKind.WIKITEXT:
        source = _wikitext(dataset, data_dir, val_fraction, text_column, explicit, reachable)
    elif dataset.kind is DatasetKind.BUILTIN:
        source = BuiltinSource(dataset, val_fraction)
    elif dataset.kind is DatasetKind.HF:
        source = HFSource(dataset, _load_hf(dataset, data_dir, reachable), val_fraction,
                          text_column)
    else:
        source = LocalSource(dataset, data_dir, val_fraction, text_column)
    source.data_format = data_format
    if data_format != "auto":
        source.fingerprint += f"-f{data_format}"
    if data_format == "chat" and source.chat_format is None:
        raise DataError(f"{source.description} holds no conversations (data.format is chat)",
                        hint="chat data is a table (.jsonl, .json, .csv, .parquet, hf:) with "
                             "a messages, conversations, instruction/output or "
                             "prompt/completion column")
    return source


# --------------------------------------------------------------------------- text


def text_pieces(path: Path, lenient: bool = False, start: int = 0,
                end: int | None = None) -> Iterator[str]:
    """The text of a file (bytes ``start`` to ``end``: both at character boundaries), read
    ``READ_BYTES`` at a time. Strict (training): a binary or non-UTF-8 file is refused, saying
    where; lenient: its bad bytes come as lone surrogates (``paragraphs`` counts them)."""
    decoder = codecs.getincrementaldecoder("utf-8")(
        errors="surrogateescape" if lenient else "strict")
    try:
        with open(path, "rb") as fh:
            if not lenient and b"\x00" in fh.read(8192):
                read_text_file(path)  # raises: binary
            fh.seek(start)
            left = None if end is None else end - start
            final = False
            while not final:
                block = fh.read(READ_BYTES if left is None else min(READ_BYTES, left))
                if left is not None:
                    left -= len(block)
                final = not block
                try:
                    text = decoder.decode(block, final=final)
                except UnicodeDecodeError:
                    bad_utf8(path)  # raises, naming the byte and its offset
                    raise  # pragma: no cover
                if text or final:
                    yield text
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def bad_utf8(path: Path) -> None:
    """Raise the DataError that names a file's first undecodable byte, read 1 MB at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as fh:
        while block := fh.read(READ_BYTES):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                where = offset + exc.start - len(decoder.getstate()[0])
                raise DataError(
                    f"{path} is not UTF-8 text (undecodable byte 0x{block[exc.start]:02x} at "
                    f"offset {max(0, where)})",
                    hint="convert it first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`",
                ) from None
            offset += len(block)


def read_text_file(path: Path) -> str:
    """A whole file as text, or the DataError training refuses it with (binary, not UTF-8:
    which byte, where)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"\x00" in data[:8192]:
        raise DataError(f"{path} looks like a binary file, not text",
                        hint="use UTF-8 text: .txt, .md, .jsonl, .csv or .parquet")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (undecodable byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start})",
            hint="convert it first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`",
        ) from None


def paragraphs(pieces: Iterable[str], lenient: bool = False) -> Iterator[Document]:
    """The paragraphs of a text given in pieces (cut anywhere): text between blank lines, with
    those blank lines as ``sep`` (a blank paragraph is part of them) and the trailing ones as
    the last one's ``tail``. A text with no paragraph gives a ``Gap`` (its blanks). Each
    piece is searched once (a text without blank lines costs no more than one with them). A
    paragraph longer than ``DOC_MAX_CHARS`` is cut into documents of at most that many
    characters, at the last line break before the limit (mid-line only for a longer line).
    ``lenient``: the text may hold undecodable bytes (``text_pieces``), counted per paragraph."""
    body: list[str] = []  # the paragraph being read, up to ``edge``
    size = 0  # characters in body
    edge, gap, prev = "", "", None  # edge: a newline and blanks, where a separator may begin
    for piece in itertools.chain(pieces, [None]):
        window, cut, pairs = edge + (piece or ""), 0, []
        for m in PARAGRAPH.finditer(window):
            pairs.append(("".join(body) + window[cut:m.start()], m.group()))
            body, cut, size = [], m.end(), 0
        rest = window[cut:]
        if piece is None:  # what is left: the last paragraph
            pairs.append(("".join(body) + rest, ""))
        else:
            nl = rest.rfind("\n")
            open_end = nl >= 0 and not rest[nl + 1:].strip(" \t\r\f\v")
            body.append(rest[:nl] if open_end else rest)
            edge = rest[nl:] if open_end else ""
            size += len(body[-1])
            while size > DOC_MAX_CHARS:  # no blank line for long: cut documents here
                text = "".join(body)
                at = text.rfind("\n", 0, DOC_MAX_CHARS + 1)
                nl = "\n" if at > 0 else ""
                at = at if at > 0 else min(len(text), DOC_MAX_CHARS)
                pairs.append((text[:at], nl))
                body = [text[at + len(nl):]]
                size = len(body[0])
        for para, sep in pairs:
            if para.strip():
                if prev is not None:
                    yield prev
                if piece is None:  # the text's last line break ends it, as a blank would
                    end = TRAILING.search(para)
                    para, sep = (para[:end.start()], para[end.start():] + sep) if end else (
                        para, sep)
                lead = LEADING.match(para)  # more blank lines than a separator takes
                if lead:
                    gap, para = gap + lead.group(), para[lead.end():]
                bad = len(ESCAPED.findall(para)) if lenient else 0
                prev = Document(ESCAPED.sub("\ufffd", para) if bad else para, gap, bad=bad)
                gap = sep
            else:
                gap += para + sep
    yield replace(prev, tail=gap) if prev is not None else Gap("", tail=gap)


def batched_text(docs: Iterable[Document], size: int = READ_BYTES) -> Iterator[str]:
    """The raw text of ``docs`` in pieces of about ``size`` characters."""
    out: list[str] = []
    n = 0
    for d in docs:
        out.append(d.raw)
        n += len(out[-1])
        if n >= size:
            yield "".join(out)
            out, n = [], 0
    yield "".join(out)


def join_parts(parts: Iterable[Iterable[Document]]) -> Iterator[Document]:
    """The documents of several files (or tables) in turn, each starting on a fresh line: a
    newline goes between two when the first does not end with one."""
    lead = carry = ""  # what goes before the next part's text
    for part in parts:
        carry, last = lead, ""
        for d in part:
            last = d.tail or d.text or d.sep or last  # the end of this part's own text
            yield replace(d, sep=carry + d.sep) if carry else d
            carry = ""
        lead = carry + ("" if last.endswith("\n") else "\n")
    if carry:  # the last part had no documents: the newline before it still counts
        yield Gap("", sep=carry)


# --------------------------------------------------------------------------- tables


def rows(ds, column: str, start: int = 0) -> Iterator[Document]:
    """The rows of a ``datasets.Dataset`` column, from Arrow in batches, one per line (a row
    that is not text, e.g. null, is an empty document that adds nothing to the text). A chat
    "column" (``chat:FORMAT``) yields each row's fields as a ``ChatRow``, numbered from
    ``start + 1``."""
    if column.startswith(CHAT_COLUMN):
        keep = format_columns(column[len(CHAT_COLUMN):])
        number = start
        for batch in ds.iter(batch_size=1024):
            n = len(next(iter(batch.values()), []))
            for i in range(n):
                number += 1
                yield ChatRow("", row={k: batch[k][i] for k in keep if k in batch},
                              number=number)
        return
    sep = ""
    for batch in ds.iter(batch_size=1024):
        for value in batch[column]:
            if isinstance(value, str):
                yield Document(value.rstrip("\n"), sep)
                sep = "\n"
            else:
                yield Document("")


def features_of(ds):
    """A dataset's features; for a streamed one without a schema, the first row's types."""
    if ds.features is not None:
        return ds.features
    from datasets import Features, Value

    first = next(iter(ds.take(1)), {})
    return Features({k: Value("string") if isinstance(v, str) else Value("null")
                     for k, v in first.items()})


def count_rows(ds) -> int:
    """Rows of a dataset: ``len`` of an Arrow one; a streamed one is read once to count."""
    if hasattr(ds, "select"):
        return len(ds)
    return sum(len(next(iter(b.values()), [])) for b in ds.iter(batch_size=1024))


def row_range(ds, lo: int, hi: int | None):
    """Rows ``lo`` to ``hi`` of a dataset (Arrow: a contiguous selection; streamed: skipped
    and taken as they pass)."""
    if hasattr(ds, "select"):
        return ds.select(range(lo, len(ds) if hi is None else hi))
    part = ds.skip(lo) if lo else ds
    return part.take(hi - lo) if hi is not None else part


STREAMED_TABLES = {"json"}  # read as they stream, 1 MB at a time: datasets' JSON-to-Arrow
# copy held their text (and its 10 MB read chunks held ~100 MB of Arrow buffers)


def open_table(files: list[Path], fmt: str, text_column: str | None, cache_dir: Path,
               data_format: str = "auto"):
    """The files as a Hugging Face dataset and the choice of its text column: CSV and
    Parquet as Arrow (memory-mapped: rows are read when iterated), JSON lines streamed
    (``STREAMED_TABLES``: converting them to Arrow holds their text in memory)."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    try:
        if fmt in STREAMED_TABLES:
            ds = datasets.load_dataset(fmt, data_files=[str(f) for f in files], split="train",
                                       streaming=True, chunksize=READ_BYTES)
            features_of(ds)  # a malformed file fails here, with the others
        else:
            ds = datasets.load_dataset(fmt, data_files=[str(f) for f in files],
                                       split="train", cache_dir=str(cache_dir))
    except Exception as exc:  # datasets raises many types for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {', '.join(f.name for f in files)} as {fmt}: {first}",
                        hint="check the file is well-formed; one JSON object per line for .jsonl"
                        ) from None
    features = features_of(ds)
    choice = choose_text_column(list(features), features, text_column,
                                where=", ".join(f.name for f in files), data_format=data_format)
    return ds, choice


CHAT_COLUMN = "chat:"  # a ColumnChoice whose column is chat:FORMAT reads conversations


def choose_text_column(columns: list[str], features, wanted: str | None,
                       where: str, data_format: str = "auto") -> ColumnChoice:
    fmt = detect_format(columns) if data_format != "text" and wanted is None else None
    if fmt is not None:
        return ColumnChoice(CHAT_COLUMN + fmt, list(format_columns(fmt)),
                            f"its {' and '.join(FORMATS[fmt])} column"
                            f"{'s hold' if len(FORMATS[fmt]) > 1 else ' holds'} "
                            f"conversations ({fmt} format)")
    text_cols = [c for c in columns if getattr(features.get(c), "dtype", None) in
                 ("string", "large_string")]
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{where} has no column {wanted!r} (columns: {', '.join(columns)})",
                            hint="set the right one with --set data.text_column=NAME")
        return ColumnChoice(wanted, text_cols, "named by data.text_column")
    for guess in TEXT_COLUMN_GUESSES:
        if guess in columns:
            return ColumnChoice(guess, text_cols, f"its name is one of the usual text "
                                                  f"columns: {', '.join(TEXT_COLUMN_GUESSES)}")
    if len(text_cols) == 1:
        return ColumnChoice(text_cols[0], text_cols, "the only text column")
    raise DataError(
        f"cannot tell which column of {where} holds the text (columns: {', '.join(columns)})",
        hint="name it with --set data.text_column=NAME",
    )


# --------------------------------------------------------------------------- the sources


class BuiltinSource(TextSource):
    """Python's documentation topics, one text (topics between blank lines)."""

    def __init__(self, dataset: DatasetSpec, val_fraction: float) -> None:
        try:
            from pydoc_data.topics import topics
        except ImportError:  # pragma: no cover - every CPython ships it
            raise DataError("this Python has no pydoc_data.topics for the built-in corpus",
                            hint=LOCAL_HINT) from None
        self.body = "\n\n".join(topics[k].strip() for k in sorted(topics))
        fp = hashlib.sha256(self.body.encode()).hexdigest()
        super().__init__(
            dataset, f"the built-in corpus {BUILTIN_PYDOCS} (Python {sys.version.split()[0]} "
                     f"documentation topics, {len(self.body) // 1000} KB)",
            f"builtin-pydocs-{fp[:16]}-v{val_fraction}",
            Layout("the built-in corpus", "a name this tool knows", "paragraph"),
            val_fraction, held_out=True)

    def _read(self, split: str, lenient: bool) -> Iterator[Document]:
        return paragraphs([self.body])

    @property
    def nbytes(self) -> int:
        return len(self.body)


def local_files(path: Path) -> tuple[list[Path], Path]:
    """The readable files of a local dataset (a file, or a folder searched recursively) and
    the folder their names are relative to."""
    path = path.resolve()
    if not path.is_dir():
        return [path], path.parent
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_data_file(p.name))
    if not files:
        raise DataError(f"folder {path} has no .txt/.md/.tokens/.jsonl/.json/.csv/.parquet "
                        "files", hint=LOCAL_HINT)
    return files, path


def split_files(files: list[Path]) -> dict[str, list[Path]] | None:
    """Which files train and which validate, from their names; None when the validation
    split must be held out of the text (no validation or test file beside training data)."""
    by_split: dict[str | None, list[Path]] = {"train": [], "val": [], "test": [], None: []}
    for f in files:
        by_split[split_of(f) if len(files) > 1 else None].append(f)
    train, val, test, other = (by_split[k] for k in ("train", "val", "test", None))
    if val:  # a validation file; train on the rest (test too when there is no train file)
        return {"train": train + other or test, "val": val}
    if test and (train or other):  # no validation file: the test file validates
        return {"train": train + other, "val": test}
    return None


def _sha_files(paths: list[Path], root: Path | None = None) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root) if root else p.name).encode())
        with open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


class LocalSource(TextSource):
    """A local file or a folder of files: text files as paragraphs, tables as rows. A folder
    takes its splits from the file names (train / valid / test)."""

    def __init__(self, dataset: DatasetSpec, data_dir: Path, val_fraction: float,
                 text_column: str | None) -> None:
        path = dataset.path or Path(dataset.name)
        self.files, root = local_files(path)
        self.groups = split_files(self.files)
        self.text_column, self.cache = text_column, data_dir / "hf"
        fp = _sha_files(self.files, root)
        tests = [f for f in self.files if split_of(f) == "test"] if len(self.files) > 1 else []
        self.groups_of = {"test": tests, **(self.groups or {"train": self.files})}
        super().__init__(
            dataset, f"{path.name} ({len(self.files)} files)" if path.is_dir() else path.name,
            f"local-{fp[:16]}-v{val_fraction}-c{text_column or ''}",
            self._layout(path, root, val_fraction), val_fraction,
            held_out=self.groups is None, has_test=bool(tests))

    def _layout(self, path: Path, root: Path, val_fraction: float) -> Layout:
        kinds = sorted({file_format(f) for f in self.files})
        if path.is_dir():
            by_name = ("splits from the file names (train / valid / test)" if self.groups else
                       f"no validation file: the last {val_fraction:.0%} is held out")
            fmt, reason = ("folder of " + " + ".join(kinds),
                           f"a folder with {len(self.files)} readable files; {by_name}")
        else:
            fmt, reason = kinds[0], f"the suffix {path.suffix.lower()} " + (
                "is read as plain text" if kinds == ["text"] else
                f"is read as {kinds[0]} rows through Hugging Face datasets")
        unit = ("paragraph" if kinds == ["text"] else "row" if len(kinds) == 1 else
                "document")
        files = tuple(SourceFile(str(f.relative_to(root)), file_format(f),
                                 "both" if self.groups is None else split_of(f) or "train")
                      for f in self.files)
        return Layout(fmt, reason, unit, files)

    def origin(self, split: str) -> str:
        if self.groups is None:
            return super().origin(split)
        return ", ".join(f.name for f in self.groups_of[split])

    def _read(self, split: str, lenient: bool) -> Iterator[Document]:
        return join_parts(self._parts(self.groups_of[split], lenient))

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.is_file())

    @property
    def _held_unit(self) -> str:
        kinds = {file_format(f) for f in self.files}
        return ("bytes, cut at a line break" if kinds == {"text"} else
                "rows" if "text" not in kinds else "text, cut at a line break")

    def _held(self, split: str, lenient: bool) -> Iterator[Document]:
        kinds = {file_format(f) for f in self.files}
        if kinds == {"text"}:  # by byte offset: the files are never read whole
            return join_parts(self._byte_parts(split, lenient))
        if "text" not in kinds:  # tables: by rows, counted from Arrow
            return join_parts(self._row_parts(split))
        return super()._held(split, lenient)

    def _byte_parts(self, split: str, lenient: bool) -> Iterator[Iterator[Document]]:
        """The text files' documents before (train) or from (val) the hold-out cut: the last
        ``val_fraction`` of their bytes, moved back to just after a line break when one is
        within ``HOLD_OUT_WINDOW`` bytes (nanoGPT's split, on a single file)."""
        sizes = [f.stat().st_size for f in self.files]
        cut = self._byte_cut(sizes)
        pos = 0
        for f, size in zip(self.files, sizes, strict=True):
            lo, hi = (pos, min(pos + size, cut)) if split == "train" else (max(pos, cut),
                                                                             pos + size)
            if hi > lo or (size == 0 and (pos < cut) == (split == "train")):
                yield paragraphs(text_pieces(f, lenient, lo - pos, hi - pos), lenient)
            pos += size

    def _byte_cut(self, sizes: list[int]) -> int:
        if self._cut is None:
            def rfind(lo: int, hi: int) -> int:
                data = self._bytes(sizes, lo, hi)
                i = data.rfind(b"\n")
                return lo + i if i >= 0 else -1

            cut = hold_out_cut(sum(sizes), self.val_fraction, rfind)
            head = self._bytes(sizes, max(0, cut - 4), cut + 1)
            while cut > 0 and head and (head[-1] & 0xC0) == 0x80:  # not inside a character
                cut, head = cut - 1, head[:-1]
            self._cut = cut
        return self._cut

    def _bytes(self, sizes: list[int], lo: int, hi: int) -> bytes:
        """Bytes ``lo`` to ``hi`` of the files read one after another."""
        out, pos = [], 0
        for f, size in zip(self.files, sizes, strict=True):
            if pos < hi and pos + size > lo:
                with open(f, "rb") as fh:
                    fh.seek(max(0, lo - pos))
                    out.append(fh.read(min(size, hi - pos) - max(0, lo - pos)))
            pos += size
        return b"".join(out)

    def _row_parts(self, split: str) -> Iterator[Iterator[Document]]:
        """The tables' rows before (train) or from (val) the last ``val_fraction`` of them."""
        tables = [(ds, column, count_rows(ds)) for ds, column in self._tables(self.files)]
        total = sum(n for _, _, n in tables)
        cut = total - max(1, math.ceil(total * self.val_fraction)) if total > 1 else total
        pos = 0
        for ds, column, n in tables:
            lo, hi = (pos, min(pos + n, cut)) if split == "train" else (max(pos, cut), pos + n)
            if hi > lo:
                yield rows(row_range(ds, lo - pos, hi - pos), column, start=lo - pos)
            pos += n

    def _first_column(self) -> ColumnChoice | None:
        group = self.groups_of["train"]
        if not group or any(file_format(f) == "text" for f in self.files):
            return None
        if not self.columns:
            next(self._tables(group), None)
        return self.columns[0] if self.columns else None

    def _tables(self, group: list[Path]):
        for fmt in sorted({file_format(f) for f in group}):
            ds, choice = open_table([f for f in group if file_format(f) == fmt], fmt,
                                    self.text_column, self.cache, self.data_format)
            if choice not in self.columns:
                self.columns.append(choice)
            yield ds, choice.column

    def _parts(self, group: list[Path], lenient: bool) -> Iterator[Iterator[Document]]:
        """Per format (in name order: csv, json, parquet, text): the tables of that format
        as one, each text file on its own."""
        for fmt in sorted({file_format(f) for f in group}):
            members = [f for f in group if file_format(f) == fmt]
            if fmt == "text":
                yield from (paragraphs(text_pieces(f, lenient), lenient) for f in members)
            else:
                yield self._table(members, fmt)

    def _table(self, files: list[Path], fmt: str) -> Iterator[Document]:
        ds, choice = open_table(files, fmt, self.text_column, self.cache, self.data_format)
        if choice not in self.columns:
            self.columns.append(choice)
        yield from rows(ds, choice.column)


# --------------------------------------------------------------------------- Hugging Face


class HFSource(TextSource):
    """A Hugging Face DatasetDict: its train, validation and test splits' rows."""

    def __init__(self, dataset: DatasetSpec, dsd, val_fraction: float,
                 text_column: str | None, *, fingerprint: str | None = None,
                 description: str | None = None, layout: Layout | None = None) -> None:
        self.dsd, self.text_column = dsd, text_column
        names = list(dsd.keys())
        self.names = {
            "train": next((n for n in names if n in SPLIT_WORDS["train"]),
                          names[0] if names else None),
            "val": next((n for n in names if n in SPLIT_WORDS["val"]), None),
            "test": next((n for n in names if n in SPLIT_WORDS["test"]), None)}
        super().__init__(
            dataset, description or dataset.text,
            fingerprint or (f"hf-{_dsd_fingerprint(dsd)[:16]}-v{val_fraction}-c"
                            f"{text_column or ''}"),
            layout or Layout(f"Hugging Face dataset {dataset.text[3:]}",
                             "the hf: prefix names a dataset on the hub, in its cache, or a "
                             "local folder", "row"),
            val_fraction, held_out=self.names["val"] is None,
            has_test=self.names["test"] is not None)

    def column(self) -> ColumnChoice:
        """The text column, chosen from the training split's columns."""
        if not self.columns:
            if self.names["train"] is None:
                raise DataError(f"{self.spec} has no splits")
            features = features_of(self.dsd[self.names["train"]])
            self.columns.append(choose_text_column(list(features), features,
                                                   self.text_column, self.spec,
                                                   self.data_format))
        return self.columns[0]

    def _read(self, split: str, lenient: bool) -> Iterator[Document]:
        column = self.column().column
        return rows(self.dsd[self.names[split]], column)

    def _first_column(self) -> ColumnChoice | None:
        return self.column()

    _held_unit = "rows"

    @property
    def nbytes(self) -> int | None:
        try:
            return sum(int(ds.data.nbytes) for ds in self.dsd.values())
        except (AttributeError, TypeError):  # an iterable (streamed) dataset: unknown
            return None

    def _held(self, split: str, lenient: bool) -> Iterator[Document]:
        """The last ``val_fraction`` of the training split's rows validate (a streamed split
        is counted first: one pass over its rows, no text kept)."""
        ds = self.dsd[self.names["train"]]
        column = self.column().column
        if "_rows" not in self.__dict__:  # a streamed split is counted once
            self.__dict__["_rows"] = count_rows(ds)
        total = self.__dict__["_rows"]
        cut = total - max(1, math.ceil(total * self.val_fraction)) if total > 1 else total
        return rows(row_range(ds, 0, cut) if split == "train" else row_range(ds, cut, None),
                    column, start=0 if split == "train" else cut)


class WikiTextSource(HFSource):
    """WikiText-2: its rows are the lines of the original files, so its documents are the
    paragraphs of their text."""

    _held_unit = "text, cut at a line break"
    _held = TextSource._held

    def _read(self, split: str, lenient: bool) -> Iterator[Document]:
        return paragraphs(batched_text(super()._read(split, lenient)))


def _dsd_fingerprint(dsd) -> str:
    """Arrow datasets: their fingerprints. Streamed ones have none: their name, config,
    version and the files' checksums the hub lists stand for the rows."""
    def one(v) -> str:
        fp = getattr(v, "_fingerprint", None)
        if fp:
            return fp
        info = getattr(v, "info", None)
        return repr((getattr(info, "dataset_name", None), getattr(info, "config_name", None),
                     str(getattr(info, "version", "")), getattr(info, "download_checksums",
                                                                None)))

    return hashlib.sha256("|".join(f"{k}:{one(v)}" for k, v in sorted(dsd.items()))
                          .encode()).hexdigest()


def _hf_load(name: str, config: str | None, data_dir: Path, *, offline: bool,
             streaming: bool = False):
    """``datasets.load_dataset`` with the hub client put in offline mode when unreachable,
    so a cached dataset loads at once instead of retrying for ~25 s. ``streaming``: rows are
    read from the hub as they are iterated (nothing downloaded whole, nothing converted)."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    if offline:  # already imported earlier in this process: flip the flags it read
        datasets.config.HF_HUB_OFFLINE = True
        try:
            import huggingface_hub.constants as hub_constants

            hub_constants.HF_HUB_OFFLINE = True
        except ImportError:  # pragma: no cover
            pass
    datasets.disable_progress_bars()
    if streaming:
        return datasets.load_dataset(name, config, streaming=True)
    return datasets.load_dataset(name, config, cache_dir=str(data_dir / "hf"))


def _load_hf(dataset: DatasetSpec, data_dir: Path, reachable: Callable[[], bool]):
    """``hf:NAME[:CONFIG]`` as a DatasetDict: from the hub, its cache, or a local folder."""
    local = dataset.path is not None
    online = local or reachable()
    try:  # the hub: streamed; its cache or a local folder: Arrow, memory-mapped
        dsd = _hf_load(dataset.name, dataset.config, data_dir, offline=not online,
                       streaming=online and not local)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not online:
            raise DataError(
                f"cannot load {dataset.text}: the Hugging Face hub is unreachable and it is not "
                f"cached under {data_dir / 'hf'}", hint=LOCAL_HINT) from None
        raise DataError(f"cannot load {dataset.text}: {msg}",
                        hint="check the dataset name and config on huggingface.co") from None
    return dsd


def _wikitext(dataset: DatasetSpec, data_dir: Path, val_fraction: float,
              text_column: str | None, explicit: bool,
              reachable: Callable[[], bool]) -> TextSource:
    name, config = WIKITEXT
    online = reachable()
    try:
        dsd = _hf_load(name, config, data_dir, offline=not online)
    except Exception as exc:
        why = ("huggingface.co is unreachable and WikiText-2 is not cached under "
               f"{data_dir / 'hf'}" if not online else
               f"loading it failed: {str(exc).strip().splitlines()[0] if str(exc) else exc}")
        if explicit:
            raise DataError(f"cannot use wikitext-2: {why}", hint=LOCAL_HINT) from None
        source = BuiltinSource(DatasetSpec.parse(BUILTIN_PYDOCS), val_fraction)
        source.notice = fallback_notice(why)
        return source
    return WikiTextSource(
        dataset, dsd, val_fraction, text_column or "text",
        fingerprint=f"wikitext2-{_dsd_fingerprint(dsd)[:16]}",
        description="WikiText-2 (wikitext-2-raw-v1)",
        layout=Layout(f"Hugging Face dataset {name} ({config})", "a name this tool knows",
                      "paragraph"))


def fallback_notice(why: str) -> str:
    """What a run that did not name its dataset says when WikiText-2 cannot be had."""
    return (f"WikiText-2 is not available ({why}); training on {BUILTIN_PYDOCS} instead. "
            "Pass --dataset to use your own text.")


def wikitext_unavailable(data_dir: Path, reachable: Callable[[], bool] | None = None
                         ) -> str | None:
    """Why WikiText-2 surely cannot be loaded now (the hub is unreachable and no copy of it
    is cached), or None when it may be. The launcher asks before it names a new model, so
    that the model is named after the data it will train on; without importing the
    ``datasets`` library, a cache folder of any shape counts as a copy (the worker then
    decides, with the same fallback)."""
    hub_cache = Path(os.environ.get("HF_HUB_CACHE") or Path(
        os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub")
    name = WIKITEXT[0].replace("/", "--")
    if any((data_dir / "hf").glob("*wikitext*")) or (hub_cache / f"datasets--{name}").exists():
        return None
    if (reachable or hub_reachable)():
        return None
    return f"huggingface.co is unreachable and WikiText-2 is not cached under {data_dir / 'hf'}"
