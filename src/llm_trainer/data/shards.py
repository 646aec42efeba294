"""The token cache on disk: shards of token ids, their manifest, and the array-like reader.

A prepared dataset is a folder ``<home>/data/tokens/<key>/``::

    manifest.json          written last: the cache is complete (CACHE_VERSION 2)
    progress.json          the shards committed so far (an interrupted preparation resumes)
    train-00000.bin ...    flat token ids (uint16, or uint32 for vocabularies over 65,535)
    val-00000.bin ...

A shard is written under a temporary name and renamed into place, then recorded in
``progress.json`` (atomically); a file that is not recorded there is a torn write and is
deleted when preparation resumes. Readers only open a folder whose ``manifest.json`` exists,
and check each shard's size against it, so a torn shard is never served.

A cache of version 1 (before shards: ``meta.json`` + ``train.bin`` / ``val.bin``) reads as
two one-shard splits, as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm_trainer.store.atomic import atomic_write_json, read_json

CACHE_VERSION = 2
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
SHARD_TOKENS = 100_000_000  # a shard is closed after the first batch past this many tokens
SPLIT_FILES = ("train", "val")


def shard_tokens() -> int:
    """Tokens per shard: ``SHARD_TOKENS``, or ``LLM_TRAINER_SHARD_TOKENS`` (tests make many
    small shards with it)."""
    return int(os.environ.get("LLM_TRAINER_SHARD_TOKENS") or SHARD_TOKENS)


class TokenShards:
    """A split's tokens as one read-only array over its memory-mapped shards: ``len()``,
    ``x[i]``, ``x[a:b]`` and numpy fancy indexing (an index array of any shape) address the
    shards' tokens end to end, so a window may span two shards."""

    def __init__(self, arrays: list[np.ndarray], dtype: np.dtype | str) -> None:
        self.arrays = [a for a in arrays if len(a)]
        self.dtype = np.dtype(dtype)
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shards(self) -> int:
        return len(self.arrays)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            return self[np.arange(start, stop, step, dtype=np.int64)]
        if isinstance(idx, int | np.integer):
            i = int(idx) + (len(self) if idx < 0 else 0)
            return self[np.asarray([i], dtype=np.int64)][0]
        idx = np.asarray(idx, dtype=np.int64)
        if len(self.arrays) == 1:
            return self.arrays[0][idx]
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} tokens")
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty(idx.shape, dtype=self.dtype)
        for s in np.unique(which):
            mask = which == s
            out[mask] = self.arrays[s][idx[mask] - self.offsets[s]]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate(self.arrays) if self.arrays else np.zeros(0, self.dtype)
        return whole.astype(dtype) if dtype is not None else whole

    def max(self) -> int:
        """The largest id (read shard by shard, 16M tokens at a time)."""
        best = 0
        for a in self.arrays:
            for i in range(0, len(a), 1 << 24):
                best = max(best, int(a[i:i + (1 << 24)].max()))
        return best


@dataclass
class ShardRecord:
    """One committed shard file."""

    file: str
    split: str  # train | val
    tokens: int
    documents: int
    bytes: int  # UTF-8 bytes of the text the tokens encode
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Progress:
    """What an unfinished preparation has committed: its shards, and how far into the stream
    of documents they reach (``position``: documents consumed), so it resumes there."""

    shards: list[ShardRecord] = field(default_factory=list)
    position: int = 0
    val_tokens: int = 0  # held-out tokens so far (the cap counts them)

    @classmethod
    def read(cls, folder: Path, key: dict[str, Any]) -> Progress:
        """The progress in ``folder`` when it was made for the same ``key``; files no record
        names (torn writes) are deleted."""
        data = read_json(folder / PROGRESS)
        progress = cls()
        if data is not None and data.get("key") == key:
            recs = [ShardRecord(**r) for r in data.get("shards", [])]
            if all(_size_ok(folder / r.file, r.tokens, key["dtype"]) for r in recs):
                progress = cls(recs, int(data["position"]), int(data.get("val_tokens", 0)))
        keep = {r.file for r in progress.shards} | {PROGRESS}
        for path in folder.iterdir():
            if path.name not in keep and path.name != MANIFEST:
                path.unlink(missing_ok=True)
        return progress

    def write(self, folder: Path, key: dict[str, Any]) -> None:
        atomic_write_json(folder / PROGRESS, {
            "key": key, "position": self.position, "val_tokens": self.val_tokens,
            "shards": [r.to_json() for r in self.shards]})

    def count(self, split: str) -> int:
        return sum(1 for r in self.shards if r.split == split)


class ShardWriter:
    """One shard being written: ids appended to a temporary file, hashed as they go;
    ``commit`` renames it into place."""

    def __init__(self, folder: Path, split: str, index: int, dtype: np.dtype) -> None:
        self.folder, self.split, self.dtype = folder, split, np.dtype(dtype)
        self.name = f"{split}-{index:05d}.bin"
        self.tmp = folder / f".{self.name}.tmp"
        self.fh = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit / discard
        self.sha = hashlib.sha256()
        self.tokens = self.documents = self.bytes = 0

    def add(self, ids: np.ndarray, documents: int, nbytes: int) -> None:
        data = np.ascontiguousarray(ids, dtype=self.dtype).tobytes()
        self.fh.write(data)
        self.sha.update(data)
        self.tokens += len(ids)
        self.documents += documents
        self.bytes += nbytes

    def commit(self) -> ShardRecord:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.folder / self.name)
        return ShardRecord(self.name, self.split, self.tokens, self.documents, self.bytes,
                           self.sha.hexdigest())

    def discard(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def _size_ok(path: Path, tokens: int, dtype: str) -> bool:
    try:
        return path.stat().st_size == tokens * np.dtype(dtype).itemsize
    except OSError:
        return False


def memmap(path: Path, dtype: np.dtype | str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def open_split(folder: Path, manifest: dict[str, Any], split: str) -> TokenShards:
    """A split of a complete cache, checked shard by shard against its manifest (a missing
    or resized shard raises OSError: the caller rebuilds the cache)."""
    dtype = manifest["dtype"]
    arrays = []
    for rec in manifest["shards"]:
        if rec["split"] != split:
            continue
        if not _size_ok(folder / rec["file"], rec["tokens"], dtype):
            raise OSError(f"shard {rec['file']} is missing or has the wrong size")
        arrays.append(memmap(folder / rec["file"], dtype))
    return TokenShards(arrays, dtype)


def open_v1(folder: Path, meta: dict[str, Any]) -> tuple[TokenShards, TokenShards]:
    """A cache from before shards (``meta.json``, ``train.bin``, ``val.bin``), as it is."""
    dtype = meta["dtype"]
    return (TokenShards([memmap(folder / "train.bin", dtype)], dtype),
            TokenShards([memmap(folder / "val.bin", dtype)], dtype))


@contextlib.contextmanager
def cache_lock(tokens_dir: Path, name: str, check: Callable[[], None]) -> Iterator[Path]:
    """Hold the lock of the cache folder ``tokens_dir/name`` (made if missing): another
    process may be preparing the same data, so wait for it, calling ``check`` every 0.2 s
    (it raises to answer a stop). Yields the folder."""
    from filelock import FileLock, Timeout

    folder = tokens_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(tokens_dir / f".{name}.lock"))
    while True:
        try:
            lock.acquire(timeout=0.2)
            break
        except Timeout:
            check()
    try:
        yield folder
    finally:
        lock.release()
