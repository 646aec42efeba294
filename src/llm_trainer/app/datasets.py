"""Datasets: what a dataset picker offers besides the home's history (the built-in datasets
and the files of a folder that training could read), and `data prepare` (a dataset tokenized
into the token cache ahead of training). No torch.

What counts as a dataset file is what training reads (``data.spec``'s suffixes), so a file
offered here is one `--dataset` accepts."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_trainer.config import DataConfig
from llm_trainer.data.spec import BUILTIN_PYDOCS, is_data_file
from llm_trainer.errors import PrepareStopped
from llm_trainer.views import BuiltinDataset, DatasetFile, PreparedData

BUILTIN_DATASETS = (
    BuiltinDataset("wikitext-2", "WikiText-2 raw from Hugging Face (downloaded once)"),
    BuiltinDataset(BUILTIN_PYDOCS, "Python's own documentation topics (works offline)"),
)
HOME_FOLDERS = ("runs", "checkpoints", "data")  # the home's own records, never a dataset


def dataset_files(folder: Path, *, home: Path | None = None) -> list[DatasetFile]:
    """The dataset files of ``folder`` and its subfolders that hold dataset files directly
    (one level: a folder's own subfolders are not searched, so a big tree costs little),
    sorted by name. In the home, its runs/, checkpoints/ and data/ are left out. Each spec
    is the name when ``folder`` is the home (training runs there), else the full path."""
    folder = Path(folder).resolve()
    in_home = home is not None and Path(home).resolve() == folder
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    out: list[DatasetFile] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                if in_home and entry.name in HOME_FOLDERS:
                    continue
                sizes = [e.stat().st_size for e in os.scandir(entry.path)
                         if is_data_file(e.name) and e.is_file()]
                if not sizes:
                    continue
                count, size, is_dir = len(sizes), sum(sizes), True
            elif entry.is_file() and is_data_file(entry.name):
                count, size, is_dir = 1, entry.stat().st_size, False
            else:
                continue
        except OSError:  # unreadable, or gone since the listing
            continue
        out.append(DatasetFile(spec=entry.name if in_home else str(folder / entry.name),
                               name=entry.name, is_dir=is_dir, files=count, size_bytes=size))
    return sorted(out, key=lambda f: (f.name.casefold(), f.name))


def prepare_dataset(data: DataConfig, *, home: Path, num_proc: int | None = None,
                    progress: Callable[[Any], None] | None = None,
                    stop: Callable[[], bool] | None = None,
                    log: Callable[[str], None] | None = None,
                    config: Any = None) -> PreparedData:
    """Tokenize ``data.dataset`` into the home's token cache as `train` would (the same
    tokenizer, vocabulary, hold-out and cap, so a later `train` with these settings reads
    the cache), or find it there. ``progress`` gets each ``data.prepare.PrepareProgress``;
    ``stop()`` turning true ends it with ``PrepareStopped``, its ``kept_shards`` and
    ``total_shards`` (an estimate) set: the finished shards are kept, and the same call
    resumes from them. ``config``: the whole RunConfig, for chat data (its windows depend on
    the block size, packing and loss_on)."""
    from llm_trainer.data.prepare import ChatSettings, prepare_data
    from llm_trainer.data.spec import check_dataset_spec, tokenizer_kind

    spec = check_dataset_spec(data.dataset)  # as the planner hands it to a training process
    tokenizer = data.tokenizer
    if tokenizer_kind(tokenizer) == "file":
        tokenizer = str(Path(tokenizer).expanduser().resolve())
    latest: list[Any] = [None]

    def report(p: Any) -> None:
        latest[0] = p
        if progress is not None:
            progress(p)

    started, wall = time.perf_counter(), time.time()
    try:
        tokens = prepare_data(dataset=spec, tokenizer_spec=tokenizer,
                              vocab_size=data.vocab_size, val_fraction=data.val_fraction,
                              text_column=data.text_column, data_dir=home / "data",
                              explicit=True, log=log, progress=report, stop=stop,
                              num_proc=num_proc, val_max_tokens=data.val_max_tokens,
                              chat=ChatSettings.from_config(config) if config else None)
    except PrepareStopped as exc:
        exc.kept_shards, exc.total_shards = _shards_at_stop(home / "data" / "tokens", wall,
                                                            latest[0])
        raise
    return prepared_view(tokens, time.perf_counter() - started, since=wall)


def _shards_at_stop(tokens_dir: Path, since: float, last: Any) -> tuple[int, int | None]:
    """(shards kept, about how many the whole preparation makes) after a stop: the kept ones
    are those committed in the cache folder this preparation worked in (the one changed
    since it began); the whole from the tokens per byte so far (None before any)."""
    from llm_trainer.data.shards import PROGRESS, shard_tokens
    from llm_trainer.store.atomic import read_json

    folders = []
    with contextlib.suppress(OSError):
        folders = [d for d in tokens_dir.iterdir() if d.is_dir() and d.stat().st_mtime >= since]
    record = read_json(max(folders, key=lambda d: d.stat().st_mtime) / PROGRESS) \
        if folders else None
    shards = (record or {}).get("shards") or []
    kept = len(shards)
    if last is None or last.stage != "tokenizing" or not last.done_bytes \
            or not last.total_bytes:
        return kept, None
    before = sum(int(r.get("tokens") or 0) for r in shards)  # what kept shards hold
    whole = before + last.tokens * max(0, last.total_bytes - last.done_bytes) / last.done_bytes
    return kept, max(kept + 1, math.ceil(whole / shard_tokens()))


def prepared_view(tokens: Any, seconds: float, *, since: float | None = None) -> PreparedData:
    """What ``prepare_data`` returned (a ``TokenData``) as the view `data prepare` shows;
    ``since``: when this preparation began (shards older than that were kept from an
    interrupted one)."""
    manifest = tokens.manifest
    splits = manifest.get("splits") or {}
    train, val = splits.get("train") or {}, splits.get("val") or {}
    shards = [r for r in manifest.get("shards") or []  # chat data: not its mask shards
              if r.get("split") in ("train", "val")]
    read = sum(int(s.get("bytes") or 0) for s in (train, val))
    kept = [r for r in shards if since is not None and not tokens.from_cache
            and _older(tokens.cache_dir / r["file"], since)]
    resumed = manifest.get("resumed_shards", len(kept))
    fresh = read - sum(int(r.get("bytes") or 0) for r in kept)  # what this call tokenized
    return PreparedData(
        spec=tokens.source.spec, description=tokens.source.description,
        cache_dir=str(tokens.cache_dir), from_cache=bool(tokens.from_cache),
        resumed_shards=int(resumed or 0), shards=len(shards) or tokens.train.shards
        + tokens.val.shards, dtype=str(manifest.get("dtype") or tokens.train.dtype),
        tokenizer={"kind": tokens.tokenizer.kind, "vocab_size": tokens.tokenizer.vocab_size},
        train_tokens=len(tokens.train), val_tokens=len(tokens.val),
        train_documents=int(train.get("documents") or 0),
        val_documents=int(val.get("documents") or 0), hold_out=manifest.get("hold_out") or {},
        bytes=read, seconds=seconds,
        mb_per_s=fresh / 1e6 / seconds if seconds > 0 and not tokens.from_cache else None)


def _older(path: Path, than: float) -> bool:
    try:
        return path.stat().st_mtime < than
    except OSError:
        return False
