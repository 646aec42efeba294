"""Datasets: what a dataset picker offers besides the home's history (the built-in datasets
and the files of a folder that training could read), and `data prepare` (a dataset tokenized
into the token cache ahead of training). No torch.

What counts as a dataset file is what training reads (``data.spec``'s suffixes), so a file
offered here is one `--dataset` accepts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_trainer.config import DataConfig
from llm_trainer.data.spec import BUILTIN_PYDOCS, is_data_file
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
                    log: Callable[[str], None] | None = None) -> PreparedData:
    """Tokenize ``data.dataset`` into the home's token cache as `train` would (the same
    tokenizer, vocabulary and hold-out, so a later `train` with these settings reads the
    cache), or find it there. ``progress`` gets each ``data.prepare.PrepareProgress``;
    ``stop()`` turning true ends it with ``PrepareStopped`` (finished shards kept: the same
    call resumes from them)."""
    from llm_trainer.data.prepare import prepare_data
    from llm_trainer.data.spec import check_dataset_spec
    from llm_trainer.data.tokenizer import tokenizer_kind

    spec = check_dataset_spec(data.dataset)  # as the planner hands it to a training process
    tokenizer = data.tokenizer
    if tokenizer_kind(tokenizer) == "file":
        tokenizer = str(Path(tokenizer).expanduser().resolve())
    started = time.perf_counter()
    tokens = prepare_data(dataset=spec, tokenizer_spec=tokenizer, vocab_size=data.vocab_size,
                          val_fraction=data.val_fraction, text_column=data.text_column,
                          data_dir=home / "data", explicit=True, log=log, progress=progress,
                          stop=stop, num_proc=num_proc)
    return prepared_view(tokens, time.perf_counter() - started)


def prepared_view(tokens: Any, seconds: float) -> PreparedData:
    """What ``prepare_data`` returned (a ``TokenData``) as the view `data prepare` shows."""
    manifest = tokens.manifest
    splits = manifest.get("splits") or {}
    train, val = splits.get("train") or {}, splits.get("val") or {}
    read = sum(int(s.get("bytes") or 0) for s in (train, val))
    return PreparedData(
        spec=tokens.source.spec, description=tokens.source.description,
        cache_dir=str(tokens.cache_dir), from_cache=bool(tokens.from_cache),
        resumed_shards=int(getattr(tokens, "resumed_shards", 0) or 0),
        shards=len(manifest.get("shards") or []), dtype=str(manifest.get("dtype")),
        tokenizer={"kind": tokens.tokenizer.kind, "vocab_size": tokens.tokenizer.vocab_size},
        train_tokens=len(tokens.train), val_tokens=len(tokens.val),
        train_documents=int(train.get("documents") or 0),
        val_documents=int(val.get("documents") or 0), hold_out=manifest.get("hold_out") or {},
        bytes=read, seconds=seconds,
        mb_per_s=read / 1e6 / seconds if seconds > 0 and not tokens.from_cache else None)
