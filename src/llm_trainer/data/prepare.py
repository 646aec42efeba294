"""From a dataset spec and tokenizer spec to memory-mapped token arrays, cached on disk.

``<home>/data/tokenizers/`` holds trained tokenizers keyed by dataset + spec, and
``<home>/data/tokens/<key>/{train,val}.bin`` the flat token arrays keyed by dataset +
tokenizer hash, so a second run on the same data starts in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm_trainer.data.sources import TextSource, resolve_dataset
from llm_trainer.data.tokenizer import TextTokenizer, tokenizer_kind
from llm_trainer.errors import DataError
from llm_trainer.store.atomic import atomic_write_text, read_json

CACHE_VERSION = 1


@dataclass
class TokenData:
    train: np.ndarray  # flat ids (memmap)
    val: np.ndarray
    tokenizer: TextTokenizer
    source: TextSource
    cache_dir: Path
    from_cache: bool

    @property
    def summary(self) -> str:
        return (f"{self.source.description}: {len(self.train):,} training and {len(self.val):,} "
                f"validation tokens ({self.tokenizer.kind} tokenizer, vocab "
                f"{self.tokenizer.vocab_size:,}{', cached' if self.from_cache else ''})")


def _say(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def get_tokenizer(source: TextSource, spec: str, vocab_size: int, data_dir: Path,
                  log=None) -> TextTokenizer:
    """The tokenizer a new model gets: built (and cached) for this dataset, or loaded."""
    kind = tokenizer_kind(spec)
    if kind == "byte":
        return TextTokenizer.build_byte()
    if kind == "file":
        return TextTokenizer.from_file(Path(spec).expanduser())
    key = f"{source.fingerprint}-{kind}{vocab_size if kind == 'bpe' else ''}"
    cached = data_dir / "tokenizers" / f"{key}.json"
    if cached.is_file():
        try:
            return TextTokenizer.from_file(cached, kind)
        except DataError:
            cached.unlink(missing_ok=True)  # unreadable cache: rebuild it
    splits = source.splits()
    t0 = time.perf_counter()
    if kind == "bpe":
        _say(log, f"training a BPE tokenizer (vocab {vocab_size:,}) on {source.description}...")
        tok = TextTokenizer.train_bpe(splits.train, vocab_size)
    else:
        tok = TextTokenizer.build_char(splits.train + splits.val)
    atomic_write_text(cached, tok.to_str())
    _say(log, f"tokenizer ready in {time.perf_counter() - t0:.1f}s ({tok.vocab_size:,} tokens)")
    return tok


def load_tokens(source: TextSource, tokenizer: TextTokenizer, data_dir: Path,
                log=None) -> TokenData:
    key = hashlib.sha256(f"{source.fingerprint}|{tokenizer.sha256}|{CACHE_VERSION}".encode()
                         ).hexdigest()[:20]
    cache = data_dir / "tokens" / key
    meta = read_json(cache / "meta.json")
    if meta is not None and meta.get("cache_version") == CACHE_VERSION:
        try:
            return TokenData(_memmap(cache / "train.bin", meta), _memmap(cache / "val.bin", meta),
                             tokenizer, source, cache, True)
        except (OSError, ValueError):
            pass  # damaged cache: rebuild below
    splits = source.splits()
    t0 = time.perf_counter()
    _say(log, f"tokenizing {source.description}...")
    train = tokenizer.encode_corpus(splits.train)
    val = tokenizer.encode_corpus(splits.val)
    staging = cache.parent / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    train.tofile(staging / "train.bin")
    val.tofile(staging / "val.bin")
    meta = {"cache_version": CACHE_VERSION, "dtype": train.dtype.name, "train_tokens": len(train),
            "val_tokens": len(val), "dataset": source.spec, "val_source": splits.val_source,
            "tokenizer_sha256": tokenizer.sha256, "created_at": time.time()}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    if cache.exists():
        shutil.rmtree(cache, ignore_errors=True)
    try:
        os.replace(staging, cache)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    _say(log, f"tokenized in {time.perf_counter() - t0:.1f}s")
    meta = read_json(cache / "meta.json") or meta
    return TokenData(_memmap(cache / "train.bin", meta), _memmap(cache / "val.bin", meta),
                     tokenizer, source, cache, False)


def _memmap(path: Path, meta: dict) -> np.ndarray:
    dtype = np.dtype(meta["dtype"])
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def prepare_data(*, dataset: str, tokenizer_spec: str, vocab_size: int, val_fraction: float,
                 text_column: str | None, data_dir: Path, explicit: bool = True,
                 tokenizer: TextTokenizer | None = None, log=None) -> TokenData:
    """Resolve, tokenize (or reuse) and return the token arrays. Pass ``tokenizer`` to keep a
    model's own tokenizer (continued training on new data)."""
    source = resolve_dataset(dataset, data_dir=data_dir, val_fraction=val_fraction,
                             text_column=text_column, explicit=explicit)
    if source.notice:
        _say(log, source.notice)
    if tokenizer is None:
        tokenizer = get_tokenizer(source, tokenizer_spec, vocab_size, data_dir, log)
    return load_tokens(source, tokenizer, data_dir, log)
