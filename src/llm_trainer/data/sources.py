"""Where text comes from: WikiText-2, any Hugging Face dataset, local files, a built-in corpus.

``resolve_dataset(spec)`` returns a ``TextSource`` with a cheap fingerprint (for cache keys),
a lazy ``splits()`` that yields the train and validation text, and a lazy ``test()`` with the
test split's text where the data has one (``llm-trainer eval --split test``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from llm_trainer.errors import DataError, UsageError

WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
WIKITEXT_NAMES = ("wikitext-2", "wikitext2", "wikitext")  # what --dataset accepts for it
BUILTIN_PYDOCS = "builtin:python-docs"
TEXT_SUFFIXES = {".txt", ".md", ".tokens", ".text"}
TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_COLUMN_GUESSES = ("text", "content", "body", "document", "sentence", "story", "article")
SPLIT_WORDS = {
    "train": ("train", "training"),
    "val": ("valid", "validation", "val", "dev"),
    "test": ("test",),
}
EVAL_SPLITS = ("val", "test")  # what `eval --split` scores
LOCAL_HINT = ("point --dataset at local text: a .txt/.md file, a .jsonl/.csv/.parquet file with "
              "a text column, or a folder with train.txt and valid.txt")


@dataclass
class Splits:
    train: str
    val: str
    val_source: str  # "split" (the data has one) or "held out" (last val_fraction)


@dataclass
class TextSource:
    spec: str  # as recorded with the run (after any fallback)
    kind: str  # "hf" | "local" | "builtin"
    description: str
    fingerprint: str  # identifies the text; part of every cache key
    _load: Callable[[], Splits] = field(repr=False)
    _cached: Splits | None = field(default=None, repr=False)
    notice: str | None = None  # a one-line message for the user (e.g. the offline fallback)
    _load_test: Callable[[], str | None] = field(default=lambda: None, repr=False)

    def splits(self) -> Splits:
        if self._cached is None:
            self._cached = self._load()
            for name, text in (("training", self._cached.train),
                               ("validation", self._cached.val)):
                if not text.strip():
                    raise DataError(f"the {name} split of {self.description} is empty",
                                    hint=LOCAL_HINT)
        return self._cached

    def test(self) -> str | None:
        """The test split's text (read on each call: only ``eval`` asks), None when the data
        has none: a test file among a folder's files, or a Hugging Face test split."""
        text = self._load_test()
        if text is not None and not text.strip():
            raise DataError(f"the test split of {self.description} is empty")
        return text


def check_split(split: str) -> str:
    """``split`` if it is one that ``eval`` scores; else a usage error naming the choices."""
    if split not in EVAL_SPLITS:
        raise UsageError(f"unknown split {split!r}", hint="use --split val or --split test")
    return split


# --------------------------------------------------------------------------- text helpers


def join_rows(rows) -> str:
    """Rows of a table (lines or documents) as one text, one row per line."""
    return "\n".join(r.rstrip("\n") for r in rows if isinstance(r, str))


def join_files(parts: list[str]) -> str:
    """Concatenate file contents, each starting on a fresh line; a single file is unchanged."""
    out: list[str] = []
    for part in parts:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(part)
    return "".join(out)


def hold_out(text: str, fraction: float) -> tuple[str, str]:
    """The last ``fraction`` of the text (by position, not shuffled) becomes validation,
    cut at a line break when one is near, so no line is split in two."""
    cut = int(len(text) * (1 - fraction))
    nl = text.rfind("\n", max(0, cut - 2000), cut)
    if nl > 0:
        cut = nl + 1
    return text[:cut], text[cut:]


def read_text_file(path: Path) -> str:
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


def _sha_files(paths: list[Path], root: Path | None = None) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root) if root else p.name).encode())
        with open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def split_of(path: Path) -> str | None:
    """'train' | 'val' | 'test' from a file name like ``wiki.valid.tokens`` or ``train.jsonl``."""
    words = {w for part in path.name.lower().split(".") for w in part.replace("-", "_")
             .split("_")}
    for split, names in SPLIT_WORDS.items():
        if words & set(names):
            return split
    return None


# --------------------------------------------------------------------------- tables (HF datasets)


def _load_table(files: list[Path], fmt: str, text_column: str | None, cache_dir: Path) -> str:
    """Rows of .jsonl/.json/.csv/.parquet files through HF ``datasets``, as one text."""
    rows, _ = table_rows(files, fmt, text_column, cache_dir)
    return join_rows(rows)


def table_rows(files: list[Path], fmt: str, text_column: str | None,
               cache_dir: Path) -> tuple[list, ColumnChoice]:
    """The text column's rows of .jsonl/.json/.csv/.parquet files, and how it was chosen."""
    ds, choice = open_table(files, fmt, text_column, cache_dir)
    return ds[choice.column], choice


def open_table(files: list[Path], fmt: str, text_column: str | None, cache_dir: Path):
    """The files as a Hugging Face ``Dataset`` (Arrow, memory-mapped: rows are read when
    iterated) and the choice of its text column."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(fmt, data_files=[str(f) for f in files], split="train",
                                   cache_dir=str(cache_dir))
    except Exception as exc:  # datasets raises many types for malformed files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {', '.join(f.name for f in files)} as {fmt}: {first}",
                        hint="check the file is well-formed; one JSON object per line for .jsonl"
                        ) from None
    choice = choose_text_column(ds.column_names, ds.features, text_column,
                                where=", ".join(f.name for f in files))
    return ds, choice


@dataclass(frozen=True)
class ColumnChoice:
    column: str
    candidates: list[str]  # the columns that hold text
    reason: str  # why this one, in plain words


def choose_text_column(columns: list[str], features, wanted: str | None,
                       where: str) -> ColumnChoice:
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


# --------------------------------------------------------------------------- resolvers


def check_dataset_spec(spec: str) -> str:
    """Fail fast (before any run is created) on a spec that cannot possibly work; else the
    spec as a training process must see it: a local path (or ``hf:`` local folder) made
    absolute, since the process runs in the home, not in the caller's folder."""
    spec = spec.strip()
    if spec in (*WIKITEXT_NAMES, BUILTIN_PYDOCS):
        return spec
    if spec.startswith("builtin:"):
        raise DataError(f"unknown built-in corpus {spec!r}",
                        hint=f"the built-in corpus is {BUILTIN_PYDOCS}")
    if spec.startswith("hf:"):
        name, sep, config = spec[3:].partition(":")
        if not name:
            raise DataError("hf: needs a dataset name, e.g. hf:roneneldan/TinyStories")
        folder = Path(name).expanduser()
        return f"hf:{folder.resolve()}{sep}{config}" if folder.is_dir() else spec
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset {spec!r} is not a file or folder, and not one of wikitext-2, "
            f"{BUILTIN_PYDOCS}, hf:NAME[:CONFIG]", hint=LOCAL_HINT)
    suffix = path.suffix.lower()
    if path.is_file() and suffix not in TEXT_SUFFIXES and suffix not in TABLE_SUFFIXES:
        raise DataError(f"cannot read {path.name}: unsupported file type {suffix or '(none)'}",
                        hint="supported: .txt .md .tokens .jsonl .json .csv .parquet, or a "
                             "folder")
    return str(path.resolve())


def resolve_dataset(spec: str, *, data_dir: Path, val_fraction: float,
                    text_column: str | None, explicit: bool = True,
                    reachable: Callable[[], bool] | None = None) -> TextSource:
    """Turn ``--dataset`` into a TextSource. ``explicit`` is False when the user did not name
    a dataset: then an unreachable WikiText-2 falls back to the built-in corpus."""
    spec = spec.strip()
    if spec in WIKITEXT_NAMES:
        return _wikitext(spec, data_dir, val_fraction, text_column, explicit,
                         reachable or hub_reachable)
    if spec == BUILTIN_PYDOCS:
        return _python_docs(val_fraction)
    if spec.startswith("builtin:"):
        raise DataError(f"unknown built-in corpus {spec!r}",
                        hint=f"the built-in corpus is {BUILTIN_PYDOCS}")
    if spec.startswith("hf:"):
        rest = spec[3:]
        name, _, config = rest.partition(":")
        if not name:
            raise DataError("hf: needs a dataset name, e.g. hf:roneneldan/TinyStories")
        return _hf(spec, name, config or None, data_dir, val_fraction, text_column,
                   reachable or hub_reachable)
    path = Path(spec).expanduser()
    if path.exists():
        return _local(spec, path, data_dir, val_fraction, text_column)
    raise DataError(
        f"dataset {spec!r} is not a file or folder, and not one of wikitext-2, "
        f"{BUILTIN_PYDOCS}, hf:NAME[:CONFIG]",
        hint=LOCAL_HINT,
    )


def _python_docs(val_fraction: float) -> TextSource:
    def text() -> str:
        try:
            from pydoc_data.topics import topics
        except ImportError:  # pragma: no cover - every CPython ships it
            raise DataError("this Python has no pydoc_data.topics for the built-in corpus",
                            hint=LOCAL_HINT) from None
        return "\n\n".join(topics[k].strip() for k in sorted(topics))

    body = text()
    fp = hashlib.sha256(body.encode()).hexdigest()
    return TextSource(
        spec=BUILTIN_PYDOCS, kind="builtin",
        description=f"the built-in corpus {BUILTIN_PYDOCS} (Python {sys.version.split()[0]} "
                    f"documentation topics, {len(body) // 1000} KB)",
        fingerprint=f"builtin-pydocs-{fp[:16]}-v{val_fraction}",
        _load=lambda: Splits(*hold_out(body, val_fraction), "held out"),
    )


def is_data_file(name: str) -> bool:
    """A file training reads from a folder: a text or table suffix, not hidden."""
    suffix = Path(name).suffix.lower()
    return not name.startswith(".") and (suffix in TEXT_SUFFIXES or suffix in TABLE_SUFFIXES)


def local_files(path: Path) -> tuple[list[Path], Path]:
    """The readable files of a local dataset (a file, or a folder searched recursively) and
    the folder their names are relative to."""
    path = path.resolve()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_data_file(p.name))
        if not files:
            raise DataError(f"folder {path} has no .txt/.md/.tokens/.jsonl/.json/.csv/.parquet "
                            "files", hint=LOCAL_HINT)
        root = path
    else:
        suffix = path.suffix.lower()
        if suffix not in TEXT_SUFFIXES and suffix not in TABLE_SUFFIXES:
            raise DataError(
                f"cannot read {path.name}: unsupported file type {suffix or '(none)'}",
                hint="supported: .txt .md .tokens .jsonl .json .csv .parquet, or a folder",
            )
        files, root = [path], path.parent
    return files, root


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


def _local(spec: str, path: Path, data_dir: Path, val_fraction: float,
           text_column: str | None) -> TextSource:
    path = path.resolve()
    files, root = local_files(path)
    fp = _sha_files(files, root)
    key = f"local-{fp[:16]}-v{val_fraction}-c{text_column or ''}"

    def read(group: list[Path]) -> str:
        parts = []
        for suffix_kind in sorted({TABLE_SUFFIXES.get(f.suffix.lower(), "text") for f in group}):
            members = [f for f in group
                       if TABLE_SUFFIXES.get(f.suffix.lower(), "text") == suffix_kind]
            if suffix_kind == "text":
                parts += [read_text_file(f) for f in members]
            else:
                parts.append(_load_table(members, suffix_kind, text_column, data_dir / "hf"))
        return join_files(parts)

    def load() -> Splits:
        groups = split_files(files)
        if groups is not None:
            return Splits(read(groups["train"]), read(groups["val"]), "split")
        train_text, val_text = hold_out(read(files), val_fraction)
        return Splits(train_text, val_text, "held out")

    def load_test() -> str | None:
        tests = [f for f in files if split_of(f) == "test"] if len(files) > 1 else []
        return read(tests) if tests else None

    what = (f"{path.name} ({len(files)} files)" if path.is_dir() else path.name)
    return TextSource(spec=str(path), kind="local", description=what, fingerprint=key,
                      _load=load, _load_test=load_test)


def _hf_load(name: str, config: str | None, data_dir: Path, *, offline: bool):
    """``datasets.load_dataset`` with the hub client put in offline mode when unreachable,
    so a cached dataset loads at once instead of retrying for ~25 s."""
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
    return datasets.load_dataset(name, config, cache_dir=str(data_dir / "hf"))


def hf_splits(dsd, spec: str, text_column: str | None):
    """The train and validation ``Dataset`` of a loaded DatasetDict (validation None when it
    has no such split) and the choice of the text column."""
    names = list(dsd.keys())
    train_name = next((n for n in names if n in SPLIT_WORDS["train"]), names[0] if names else None)
    if train_name is None:
        raise DataError(f"{spec} has no splits")
    val_name = next((n for n in names if n in SPLIT_WORDS["val"]), None)
    train_ds = dsd[train_name]
    choice = choose_text_column(train_ds.column_names, train_ds.features, text_column, spec)
    return train_ds, (dsd[val_name] if val_name is not None else None), choice


def _hf_splits(dsd, spec: str, text_column: str | None, val_fraction: float) -> Splits:
    train_ds, val_ds, choice = hf_splits(dsd, spec, text_column)
    train = join_rows(train_ds[choice.column])
    if val_ds is not None:
        return Splits(train, join_rows(val_ds[choice.column]), "split")
    return Splits(*hold_out(train, val_fraction), "held out")


def hf_test(dsd, spec: str, text_column: str | None) -> str | None:
    """The test split of a loaded DatasetDict as one text (its training split's text
    column), None when it has none."""
    test_name = next((n for n in dsd if n in SPLIT_WORDS["test"]), None)
    if test_name is None:
        return None
    _train, _val, choice = hf_splits(dsd, spec, text_column)
    return join_rows(dsd[test_name][choice.column])


def load_hf(spec: str, data_dir: Path, reachable: Callable[[], bool] | None = None):
    """``hf:NAME[:CONFIG]`` as a DatasetDict: from the hub, its cache, or a local folder."""
    name, _, config = spec[3:].partition(":")
    return _load_hf(spec, name, config or None, data_dir, reachable or hub_reachable)


def _load_hf(spec: str, name: str, config: str | None, data_dir: Path,
             reachable: Callable[[], bool]):
    local_folder = Path(name).expanduser().is_dir()
    online = local_folder or reachable()
    try:
        dsd = _hf_load(name, config, data_dir, offline=not online)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not online:
            raise DataError(
                f"cannot load {spec}: the Hugging Face hub is unreachable and it is not cached "
                f"under {data_dir / 'hf'}", hint=LOCAL_HINT) from None
        raise DataError(f"cannot load {spec}: {msg}",
                        hint="check the dataset name and config on huggingface.co") from None
    return dsd


def _hf(spec: str, name: str, config: str | None, data_dir: Path, val_fraction: float,
        text_column: str | None, reachable: Callable[[], bool]) -> TextSource:
    dsd = _load_hf(spec, name, config, data_dir, reachable)
    fp = hashlib.sha256(
        "|".join(f"{k}:{getattr(v, '_fingerprint', '')}" for k, v in sorted(dsd.items()))
        .encode()).hexdigest()
    return TextSource(
        spec=spec, kind="hf", description=spec,
        fingerprint=f"hf-{fp[:16]}-v{val_fraction}-c{text_column or ''}",
        _load=lambda: _hf_splits(dsd, spec, text_column, val_fraction),
        _load_test=lambda: hf_test(dsd, spec, text_column),
    )


def _wikitext(spec: str, data_dir: Path, val_fraction: float, text_column: str | None,
              explicit: bool, reachable: Callable[[], bool]) -> TextSource:
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
        source = _python_docs(val_fraction)
        source.notice = (f"WikiText-2 is not available ({why}); training on {BUILTIN_PYDOCS} "
                         "instead. Pass --dataset to use your own text.")
        return source
    fp = hashlib.sha256(
        "|".join(f"{k}:{getattr(v, '_fingerprint', '')}" for k, v in sorted(dsd.items()))
        .encode()).hexdigest()
    return TextSource(
        spec="wikitext-2", kind="hf", description="WikiText-2 (wikitext-2-raw-v1)",
        fingerprint=f"wikitext2-{fp[:16]}",
        _load=lambda: _hf_splits(dsd, "wikitext-2", text_column or "text", val_fraction),
        _load_test=lambda: hf_test(dsd, "wikitext-2", text_column or "text"),
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the hub within ``timeout`` seconds? Honours
    HF_HUB_OFFLINE and HF_ENDPOINT. Decides in seconds, not the client's ~25 s of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
