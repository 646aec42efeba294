"""What ``--dataset`` names, parsed once, and the one interface every dataset is read through.

``DatasetSpec.parse(text)`` turns ``wikitext-2``, ``builtin:NAME``, ``hf:NAME[:CONFIG]`` or a
local file or folder into a typed value, failing fast with one line and a hint on a spec that
cannot work (the planner checks a spec this way before it creates a run). Cheap to import: no
torch, no ``datasets``.

A ``TextSource`` (made from a spec by ``data.sources.resolve_dataset``, the one dispatch on
the spec's kind) yields the ``documents(split)`` of ``train``, ``val`` and ``test`` as a
stream. Each source has a ``fingerprint`` (part of every cache key), the ``spec`` recorded
with the run, and the split rule: the data's own validation split where it has one, else the
last ``val_fraction`` of its text held out (nanoGPT's split), cut just after a line break when
one is within 2,000 characters before, so no line is split in two.

A document's ``text`` is what a streaming preparation tokenizes (with a separator between
documents); its ``raw`` (``sep + text + tail``) is the exact text around it, so the raw of a
split's documents joined is the text the token cache has always been built from
(``TextSource.splits``, the one place the data becomes strings).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from llm_trainer.errors import DataError, UsageError

WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
WIKITEXT_NAMES = ("wikitext-2", "wikitext2", "wikitext")  # what --dataset accepts for it
BUILTIN_PYDOCS = "builtin:python-docs"
TEXT_SUFFIXES = {".txt", ".md", ".tokens", ".text"}
TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPLIT_WORDS = {
    "train": ("train", "training"),
    "val": ("valid", "validation", "val", "dev"),
    "test": ("test",),
}
SPLITS = tuple(SPLIT_WORDS)  # what documents(split) takes
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}  # in messages
EVAL_SPLITS = ("val", "test")  # what `eval --split` scores
LOCAL_HINT = ("point --dataset at local text: a .txt/.md file, a .jsonl/.csv/.parquet file with "
              "a text column or conversations, or a folder with train.txt and valid.txt")
HOLD_OUT_WINDOW = 2000  # how far back from the cut a line break is looked for
KINDS = ("bpe", "char", "byte")  # data.tokenizer's built-in kinds; anything else is a file


def tokenizer_kind(spec: str) -> str:
    """'bpe' | 'char' | 'byte', or 'file' for a path to a tokenizer.json (no numpy here:
    the planner asks it on every launch)."""
    return spec if spec in KINDS else "file"


def check_split(split: str) -> str:
    """``split`` if it is one that ``eval`` scores; else a usage error naming the choices."""
    if split not in EVAL_SPLITS:
        raise UsageError(f"unknown split {split!r}", hint="use --split val or --split test")
    return split


def split_of(path: Path) -> str | None:
    """'train' | 'val' | 'test' from a file name like ``wiki.valid.tokens`` or ``train.jsonl``."""
    words = {w for part in path.name.lower().split(".") for w in part.replace("-", "_")
             .split("_")}
    for split, names in SPLIT_WORDS.items():
        if words & set(names):
            return split
    return None


def file_format(path: Path) -> str | None:
    """How a file is read: 'text', a table format ('json', 'csv', 'parquet'), or None."""
    suffix = path.suffix.lower()
    return "text" if suffix in TEXT_SUFFIXES else TABLE_SUFFIXES.get(suffix)


def is_data_file(name: str) -> bool:
    """A file training reads from a folder: a text or table suffix, not hidden."""
    return not name.startswith(".") and file_format(Path(name)) is not None


# --------------------------------------------------------------------------- the spec


class DatasetKind(StrEnum):
    WIKITEXT = "wikitext"  # WikiText-2 from the hub (or its cache)
    BUILTIN = "builtin"  # a corpus shipped with Python
    HF = "hf"  # a Hugging Face dataset: on the hub, in its cache, or a local folder
    LOCAL = "local"  # a local file or folder


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``--dataset``. ``name``: the canonical name (wikitext-2, builtin:NAME), the
    dataset name of ``hf:`` as typed, or a local path made absolute. ``path``: where on this
    machine (absolute): a local file or folder, or an ``hf:`` name that is a local folder."""

    kind: DatasetKind
    text: str  # as given (stripped)
    name: str
    config: str | None = None  # hf:NAME:CONFIG
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """The spec, or a DataError (one line and a hint) when it cannot possibly work."""
        text = text.strip()
        if text in WIKITEXT_NAMES:
            return cls(DatasetKind.WIKITEXT, text, "wikitext-2")
        if text == BUILTIN_PYDOCS:
            return cls(DatasetKind.BUILTIN, text, text)
        if text.startswith("builtin:"):
            raise DataError(f"unknown built-in corpus {text!r}",
                            hint=f"the built-in corpus is {BUILTIN_PYDOCS}")
        if text.startswith("hf:"):
            name, _, config = text[3:].partition(":")
            if not name:
                raise DataError("hf: needs a dataset name, e.g. hf:roneneldan/TinyStories")
            folder = Path(name).expanduser()
            return cls(DatasetKind.HF, text, name, config or None,
                       folder.resolve() if folder.is_dir() else None)
        path = Path(text).expanduser()
        if not path.exists():
            raise DataError(
                f"dataset {text!r} is not a file or folder, and not one of wikitext-2, "
                f"{BUILTIN_PYDOCS}, hf:NAME[:CONFIG]", hint=LOCAL_HINT)
        if path.is_file() and file_format(path) is None:
            raise DataError(f"cannot read {path.name}: unsupported file type "
                            f"{path.suffix.lower() or '(none)'}",
                            hint="supported: .txt .md .tokens .jsonl .json .csv .parquet, or a "
                                 "folder")
        return cls(DatasetKind.LOCAL, text, str(path.resolve()), path=path.resolve())

    @property
    def for_launch(self) -> str:
        """The spec as a training process must see it: a local path (or ``hf:`` local folder)
        made absolute, since the process runs in the home, not in the caller's folder."""
        if self.kind is DatasetKind.LOCAL:
            return self.name
        if self.kind is DatasetKind.HF and self.path is not None:
            return f"hf:{self.path}{self.text[3 + len(self.name):]}"
        return self.text

    @property
    def recorded(self) -> str:
        """The spec as a run records it (its token cache's ``dataset``)."""
        return self.text if self.kind is DatasetKind.HF else self.name


def check_dataset_spec(spec: str) -> str:
    """Fail fast (before any run is created) on a spec that cannot possibly work; else the
    spec as a training process must see it (``DatasetSpec.for_launch``)."""
    return DatasetSpec.parse(spec).for_launch


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a split: a row of a table, or a paragraph of a text (text between
    blank lines). ``sep`` is the text before it in the split's text (the blank lines before
    a paragraph, the newline between rows or files), ``tail`` text after it that comes before
    no other document (a file's trailing blank lines): ``raw`` of each, in order, is exactly
    the split's text. ``bad``: bytes in it that were not UTF-8 (shown as U+FFFD; only where
    a reader was asked to be lenient, as ``data inspect`` is)."""

    text: str
    sep: str = ""
    tail: str = ""
    bad: int = 0

    @property
    def raw(self) -> str:
        return self.sep + self.text + self.tail


@dataclass(frozen=True, slots=True)
class ChatRow(Document):
    """A row of chat data: its fields (those of its format) and its number in its table
    (1-based: the line of a JSON lines file). Its ``text`` is empty: the template writes it."""

    row: dict = field(default_factory=dict)
    number: int = 0


@dataclass(frozen=True, slots=True)
class Gap(Document):
    """Text between documents that belongs to none (a blank file, blank lines where a split
    is cut): part of the split's text, but no document, so not counted or separated."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the dataset's folder
    format: str  # text | json | csv | parquet
    split: str  # train | val | test | both (held out)


@dataclass(frozen=True)
class Layout:
    """What a source is, in words (``data inspect`` shows it)."""

    format: str
    reason: str  # why it is read that way
    unit: str  # what a document is: paragraph | row | document (a mix)
    files: tuple[SourceFile, ...] = ()


@dataclass(frozen=True)
class ColumnChoice:
    column: str
    candidates: list[str]  # the columns that hold text
    reason: str  # why this one, in plain words


@dataclass(eq=False)
class TextSource(ABC):
    """A dataset as training reads it. Subclasses read the data's own splits (``_read``);
    the held-out rule, the empty-split check and the joining into one text are here, once."""

    dataset: DatasetSpec  # after any fallback
    description: str
    fingerprint: str  # identifies the text; part of every cache key
    layout: Layout
    val_fraction: float
    held_out: bool  # no validation split in the data: the last val_fraction is held out
    has_test: bool = False  # a test split (a test file of a folder, a Hugging Face split)
    notice: str | None = None  # a one-line message for the user (e.g. the offline fallback)
    columns: list[ColumnChoice] = field(default_factory=list)  # text columns, as tables open
    _cut: int | None = field(default=None, repr=False)
    data_format: str = field(default="auto", repr=False)  # data.format: auto | text | chat

    @property
    def chat_format(self) -> str | None:
        """The conversation format of chat data (``messages``, ``sharegpt``, ``alpaca``,
        ``prompt_completion``), None for text."""
        choice = self._first_column()
        if choice is None or not choice.column.startswith("chat:"):
            return None
        return choice.column[len("chat:"):]

    def _first_column(self) -> ColumnChoice | None:
        """The column choice of the training data's first table (None: text, no tables)."""
        return None

    @property
    def spec(self) -> str:
        """The dataset as recorded with the run and its token cache (a string: the run's
        config and meta.json hold it so)."""
        return self.dataset.recorded

    @property
    def nbytes(self) -> int | None:
        """About how many bytes of text the data holds (for progress), None if unknown."""
        return None

    @property
    def val_source(self) -> str:
        return "held out" if self.held_out else "split"

    def origin(self, split: str) -> str:
        """Where ``split``'s documents come from, in words."""
        if self.held_out:
            return (f"held out: the last {self.val_fraction:.0%}" if split == "val" else
                    f"all but the last {self.val_fraction:.0%}")
        return {"train": "the train split", "val": "the validation split"}.get(split, split)

    @abstractmethod
    def _read(self, split: str, lenient: bool) -> Iterator[Document]:
        """The documents of the data's own ``split`` (``train``: all of it when held out)."""

    def documents(self, split: str, *, lenient: bool = False) -> Iterator[Document]:
        """The documents of ``split`` (train, val or test), streamed in order. ``lenient``:
        bytes that are not UTF-8 are counted (``Document.bad``) instead of refused."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        if split == "test" and not self.has_test:
            return iter(())
        if split == "test" or not self.held_out:
            return self._read(split, lenient)
        return self._held(split, lenient)

    @property
    def hold_out_rule(self) -> str:
        """How validation is chosen, in words (recorded with the run and its token cache)."""
        if not self.held_out:
            return "the data's own validation split"
        return f"held out: the last {self.val_fraction * 100:g}% of the {self._held_unit}"

    _held_unit = "text, cut at a line break"

    def _held(self, split: str, lenient: bool) -> Iterator[Document]:
        """``split`` of data without a validation split: the text's last ``val_fraction``
        (read twice to find the cut, never whole). Sources that know their size without
        reading it (text files, tables) do better."""
        return _split_at(self._read("train", lenient), self._held_out_cut(lenient), split)

    def text(self, split: str) -> str:
        """``split`` as one text, checked not to be blank (small splits only: ``eval``'s
        test split, tests)."""
        return self._checked(split, _join(self.documents(split)))

    def _checked(self, split: str, text: str) -> str:
        if not text.strip():
            raise DataError(f"the {SPLIT_NAMES[split]} split of {self.description} is empty",
                            hint=None if split == "test" else LOCAL_HINT)
        return text

    def test(self) -> str | None:
        """The test split's text (read on each call: only ``eval`` asks), None when the data
        has none: a test file among a folder's files, or a Hugging Face test split."""
        return self.text("test") if self.has_test else None

    def _held_out_cut(self, lenient: bool) -> int:
        """Where validation starts in the text of all documents (read twice, never whole)."""
        if self._cut is None:
            total = sum(len(d.raw) for d in self._read("train", lenient))
            self._cut = hold_out_cut(total, self.val_fraction,
                                     lambda lo, hi: _rfind_newline(
                                         self._read("train", lenient), lo, hi))
        return self._cut


# --------------------------------------------------------------------------- the held-out rule


def hold_out_cut(length: int, fraction: float, rfind: Callable[[int, int], int]) -> int:
    """Where the held-out validation starts in a text of ``length`` characters: the last
    ``fraction`` by position (not shuffled), moved back to just after a line break when one
    is near. ``rfind(lo, hi)``: where the last newline in ``[lo, hi)`` is, or -1."""
    cut = int(length * (1 - fraction))
    nl = rfind(max(0, cut - HOLD_OUT_WINDOW), cut)
    return nl + 1 if nl > 0 else cut


def hold_out(text: str, fraction: float) -> tuple[str, str]:
    """The text before and after ``hold_out_cut``: training and validation."""
    cut = hold_out_cut(len(text), fraction, lambda lo, hi: text.rfind("\n", lo, hi))
    return text[:cut], text[cut:]


def _join(docs: Iterable[Document]) -> str:
    return "".join(d.raw for d in docs)


def _rfind_newline(docs: Iterable[Document], lo: int, hi: int) -> int:
    last, pos = -1, 0
    for d in docs:
        raw = d.raw
        if pos + len(raw) > lo:
            i = raw.rfind("\n", max(0, lo - pos), hi - pos)
            if i >= 0:
                last = pos + i
        pos += len(raw)
        if pos >= hi:
            break
    return last


def _split_at(docs: Iterable[Document], cut: int, split: str) -> Iterator[Document]:
    """The documents before (``train``) or after (``val``) character ``cut`` of their text;
    the one the cut falls in is cut in two, so both sides join to exactly their text."""
    pos, prev, carry = 0, None, ""
    for d in docs:
        end = pos + len(d.raw)
        if end <= cut:
            if split == "train":
                if prev is not None:
                    yield prev
                prev = d
        elif pos >= cut:
            if split == "train":
                break
            yield replace(d, sep=carry + d.sep) if carry else d
            carry = ""
        else:
            before, after = _cut_document(d, cut - pos)
            if split == "val":
                if isinstance(after, str):
                    carry = after
                else:
                    yield after
            elif isinstance(before, str):  # blank: it ends the training text
                prev = (replace(prev, tail=prev.tail + before) if prev is not None
                        else Gap("", tail=before))
            else:
                if prev is not None:
                    yield prev
                prev = before
        pos = end
    if split == "train" and prev is not None:
        yield prev
    elif split == "val" and carry:
        yield Gap("", sep=carry)


def _cut_document(d: Document, k: int) -> tuple[Document | str, Document | str]:
    """``d`` cut ``k`` characters into its raw text: the part before and the part after,
    each a document, or its raw text when it holds nothing but blanks."""
    if k <= len(d.sep):
        return d.sep[:k], replace(d, sep=d.sep[k:])
    j = k - len(d.sep)
    if j >= len(d.text):
        return replace(d, tail=d.tail[:j - len(d.text)]), d.tail[j - len(d.text):]
    left, right = d.text[:j], d.text[j:]
    bad = min(d.bad, left.count("\ufffd"))
    return (Document(left, d.sep, "", bad) if left.strip() else d.sep + left,
            Document(right, "", d.tail, d.bad - bad) if right.strip() else right + d.tail)
