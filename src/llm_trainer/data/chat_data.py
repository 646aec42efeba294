"""Chat data prepared for training: conversations rendered with the model's template,
encoded with the positions the loss is taken on, and laid out in windows of ``block_size + 1``
tokens (what one training sequence reads: its inputs and, shifted by one, its targets).

- **Packing** (``data.packing``, default on): whole examples go into a window one after
  another until the next would not fit; the rest of the window is padding. An example is
  never split between two windows, so every target a window trains on has its own example's
  prompt before it. Off: one example per window.
- **Too long** (``data.truncate``): an example over ``block_size + 1`` tokens is cut to fit
  (on) or dropped (off). An example left with no trained token (its reply cut away) is
  dropped. Both are counted.
- **Bad rows** (``data.on_bad_rows``): a row that is not a usable conversation is counted
  with its number; ``fail`` stops at the first, ``auto`` fails only when more than 1% are
  bad (``chat.bad_rows_verdict``), ``skip`` never.

On disk, next to the token windows (``train-00000.bin``...), one byte per token says whether
it is a trained target (``train-mask-00000.bin``...); padding and prompts are 0. The cache key
holds everything the windows depend on (template, block size, packing, truncation, loss_on),
and the manifest records the counts. A stopped preparation starts again from the beginning
(chat data is small next to a pretraining corpus); nothing half-written is ever served.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm_trainer.data.chat import (
    BadRow,
    ChatTemplate,
    bad_rows_verdict,
    encode_conversation,
    to_messages,
)
from llm_trainer.data.shards import (
    MANIFEST,
    ShardWriter,
    TokenShards,
    cache_lock,
    memmap,
    open_split,
    shard_tokens,
)
from llm_trainer.data.spec import LOCAL_HINT, SPLIT_NAMES, ChatRow, TextSource
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError
from llm_trainer.store.atomic import atomic_write_json, read_json

CHAT_CACHE_VERSION = 1
SHOWN_BAD_ROWS = 5  # bad rows named in a failure message (all are counted)


@dataclass
class ChatCounts:
    """What preparing one split of chat data found."""

    rows: int = 0
    bad: int = 0
    examples: int = 0  # conversations that train (after truncation and drops)
    truncated: int = 0
    dropped: int = 0  # too long (data.truncate off), or nothing left to train after a cut
    windows: int = 0
    tokens: int = 0  # tokens in the windows, padding included
    trained: int = 0  # target positions the loss is taken on
    bad_rows: list[dict[str, Any]] = field(default_factory=list)  # the first few, for messages

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Windows:
    """Packs examples into windows of ``width`` tokens and writes them (ids and masks)."""

    def __init__(self, folder: Path, split: str, width: int, pad: int, packing: bool,
                 dtype: np.dtype, counts: ChatCounts, records: list[dict]) -> None:
        self.folder, self.split, self.width, self.pad = folder, split, width, pad
        self.packing, self.dtype, self.counts, self.records = packing, dtype, counts, records
        self.ids: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.used = 0
        self.index = 0
        self.writers: tuple[ShardWriter, ShardWriter] | None = None

    def add(self, ids: np.ndarray, mask: np.ndarray) -> None:
        if self.used and (not self.packing or self.used + len(ids) > self.width):
            self.flush()
        self.ids.append(ids)
        self.masks.append(mask)
        self.used += len(ids)

    def flush(self) -> None:
        if not self.used:
            return
        fill = self.width - self.used
        ids = np.concatenate([*self.ids, np.full(fill, self.pad, dtype=np.int64)])
        mask = np.concatenate([*self.masks, np.zeros(fill, dtype=bool)])
        mask[0] = False  # a window's first token is never a target
        if self.writers is None:
            self.writers = (ShardWriter(self.folder, self.split, self.index, self.dtype),
                            ShardWriter(self.folder, f"{self.split}-mask", self.index,
                                        np.dtype(np.uint8)))
        tokens, masks = self.writers
        tokens.add(ids, len(self.ids), 0)
        masks.add(mask.astype(np.uint8), len(self.ids), 0)
        self.counts.windows += 1
        self.counts.tokens += self.width
        self.counts.trained += int(mask.sum())
        self.ids, self.masks, self.used = [], [], 0
        if tokens.tokens >= shard_tokens():
            self.commit()

    def commit(self) -> None:
        if self.writers is not None:
            self.records.extend(w.commit().to_json() for w in self.writers)
            self.writers = None
            self.index += 1

    def discard(self) -> None:
        if self.writers is not None:
            for w in self.writers:
                w.discard()


def chat_cache_key(source: TextSource, tokenizer: TextTokenizer, template: ChatTemplate,
                   *, block_size: int, packing: bool, truncate: bool, loss_on: str,
                   on_bad_rows: str) -> dict[str, Any]:
    return {"chat_version": CHAT_CACHE_VERSION, "fingerprint": source.fingerprint,
            "tokenizer_sha256": tokenizer.sha256, "dtype": tokenizer.dtype.name,
            "template": hashlib.sha256(json_text(template.to_json()).encode()).hexdigest(),
            "block_size": block_size, "packing": packing, "truncate": truncate,
            "loss_on": loss_on, "on_bad_rows": on_bad_rows}


def json_text(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


def prepare_chat(source: TextSource, tokenizer: TextTokenizer, template: ChatTemplate,
                 data_dir: Path, hooks, *, block_size: int, packing: bool, truncate: bool,
                 loss_on: str, on_bad_rows: str):
    """The chat data's windows for this tokenizer and template: from the cache, or prepared
    into it. Returns (train, train_mask, val, val_mask, folder, manifest, from_cache)."""
    key = chat_cache_key(source, tokenizer, template, block_size=block_size, packing=packing,
                         truncate=truncate, loss_on=loss_on, on_bad_rows=on_bad_rows)
    name = "chat-" + hashlib.sha256(json_text(key).encode()).hexdigest()[:20]
    folder = data_dir / "tokens" / name
    opened = _open(folder, key)
    if opened is not None:
        return (*opened, True)
    with cache_lock(data_dir / "tokens", name, hooks.check):
        opened = _open(folder, key)
        if opened is not None:
            return (*opened, True)
        _write(source, tokenizer, template, folder, key, hooks, block_size=block_size,
               packing=packing, truncate=truncate, loss_on=loss_on, on_bad_rows=on_bad_rows)
    opened = _open(folder, key)
    if opened is None:  # pragma: no cover - we have just written it
        raise DataError(f"the chat cache {folder} could not be read back after writing it")
    return (*opened, False)


def _open(folder: Path, key: dict):
    manifest = read_json(folder / MANIFEST)
    if manifest is None or manifest.get("key") != key:
        return None
    try:
        tokens = {s: open_split(folder, manifest, s) for s in ("train", "val")}
        masks = {s: _mask(folder, manifest, s) for s in ("train", "val")}
    except (OSError, ValueError):
        (folder / MANIFEST).unlink(missing_ok=True)
        return None
    return tokens["train"], masks["train"], tokens["val"], masks["val"], folder, manifest


def _mask(folder: Path, manifest: dict, split: str) -> TokenShards:
    arrays = []
    for rec in manifest["shards"]:
        if rec["split"] != f"{split}-mask":
            continue
        path = folder / rec["file"]
        if path.stat().st_size != rec["tokens"]:
            raise OSError(f"mask shard {rec['file']} has the wrong size")
        arrays.append(memmap(path, np.uint8))
    return TokenShards(arrays, np.uint8)


def _write(source: TextSource, tokenizer: TextTokenizer, template: ChatTemplate,
           folder: Path, key: dict, hooks, *, block_size: int, packing: bool, truncate: bool,
           loss_on: str, on_bad_rows: str) -> dict:
    for path in folder.iterdir():  # an interrupted preparation starts again
        path.unlink(missing_ok=True)
    width = block_size + 1
    pad = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    t0 = time.perf_counter()
    records: list[dict] = []
    counts = {s: ChatCounts() for s in ("train", "val")}
    hooks.say(f"preparing the conversations of {source.description} ({source.chat_format} "
              f"format, {template.kind} template, loss on {loss_on} tokens)...")
    for split in ("train", "val"):
        c = counts[split]
        out = _Windows(folder, split, width, pad, packing, tokenizer.dtype, c, records)
        try:
            for doc in source.documents(split):
                if not isinstance(doc, ChatRow):
                    continue
                c.rows += 1
                try:
                    messages = to_messages(doc.row, source.chat_format or "messages")
                    ids, mask = encode_conversation(tokenizer, template, messages,
                                                    loss_on=loss_on)
                except BadRow as bad:
                    c.bad += 1
                    if len(c.bad_rows) < SHOWN_BAD_ROWS:
                        c.bad_rows.append({"row": doc.number, "problem": bad.problem,
                                           "suggestion": bad.suggestion})
                    if on_bad_rows == "fail":
                        raise _bad_rows_error(source, c, on_bad_rows) from None
                    continue
                cut = len(ids) > width
                if cut and not truncate:
                    c.dropped += 1
                    continue
                ids, mask = ids[:width], mask[:width]
                if not mask[1:].any():  # nothing left to train (or nothing to begin with)
                    c.dropped += 1
                    continue
                c.truncated += cut
                c.examples += 1
                out.add(ids, mask)
                if c.rows % 256 == 0:
                    hooks.check()
                    hooks.report("tokenizing", 0, 0, counts["train"].tokens + c.tokens)
            out.flush()
            out.commit()
        except BaseException:
            out.discard()
            raise
    total = sum(c.rows for c in counts.values())
    bad = sum(c.bad for c in counts.values())
    if bad_rows_verdict(bad, total, on_bad_rows):
        raise _bad_rows_error(source, counts["train"], on_bad_rows, counts["val"])
    for split in ("train", "val"):
        if not counts[split].windows:
            raise DataError(f"the {SPLIT_NAMES[split]} split of {source.description} has no "
                            f"conversation to train on ({counts[split].rows:,} rows, "
                            f"{counts[split].bad:,} malformed, {counts[split].dropped:,} "
                            f"too long or with nothing to train)", hint=LOCAL_HINT)
    seconds = time.perf_counter() - t0
    manifest = {
        "key": key, "chat_version": CHAT_CACHE_VERSION, "dataset": source.spec,
        "fingerprint": source.fingerprint, "tokenizer_sha256": tokenizer.sha256,
        "tokenizer_kind": tokenizer.kind, "dtype": tokenizer.dtype.name,
        "separator": tokenizer.eot_id, "window": width, "format": source.chat_format,
        "template": template.kind, "hold_out": {"rule": source.hold_out_rule,
                                                "val_fraction": source.val_fraction
                                                if source.held_out else None},
        "chat": {s: c.to_json() for s, c in counts.items()},
        "splits": {s: {"tokens": c.tokens, "documents": c.examples, "shards": sum(
            1 for r in records if r["split"] == s)} for s, c in counts.items()},
        "shards": records, "seconds": round(seconds, 3), "created_at": time.time()}
    atomic_write_json(folder / MANIFEST, manifest)
    tr = counts["train"]
    hooks.say(f"conversations ready in {seconds:.1f}s: {tr.examples:,} training examples in "
              f"{tr.windows:,} windows of {width} tokens ({tr.trained:,} trained tokens, "
              f"{tr.trained / max(1, tr.tokens):.0%}); {tr.truncated:,} truncated, "
              f"{tr.dropped:,} dropped, {tr.bad + counts['val'].bad:,} malformed rows skipped")
    return manifest


def _bad_rows_error(source: TextSource, c: ChatCounts, policy: str,
                    val: ChatCounts | None = None) -> DataError:
    shown = c.bad_rows + (val.bad_rows if val else [])
    bad, rows = c.bad + (val.bad if val else 0), c.rows + (val.rows if val else 0)
    first = shown[0] if shown else {}
    where = "; ".join(f"row {r['row']}: {r['problem']}" for r in shown[:SHOWN_BAD_ROWS])
    if policy == "fail":  # stopped at the first: a share of the rows read so far misleads
        reason = f"row {first.get('row')} is not a usable conversation and data.on_bad_rows " \
                 "is fail"
    else:
        reason = bad_rows_verdict(bad, rows, policy) or f"{bad} malformed rows"
    return DataError(f"{source.description}: {reason} ({where})",
                     hint=f"{first.get('suggestion', 'fix the rows')}; see them all with "
                          f"`llm-trainer data inspect {source.spec}`, or skip them with "
                          f"--set data.on_bad_rows=skip")
