"""From a dataset spec and a tokenizer spec to memory-mapped token shards, in bounded memory.

``prepare_data`` is what ``train`` runs before its first step and what ``data prepare`` runs
on its own; a second run on the same data finds the cache and starts in milliseconds.

1. **The tokenizer** (``get_tokenizer``): byte needs none; a file is loaded; bpe and char
   are built by one streaming pass over the training documents (bpe: ``train_from_iterator``
   over the first ``BPE_SAMPLE_BYTES``; char: every character of both splits) and cached in
   ``<home>/data/tokenizers/`` by dataset and kind.
2. **The tokens** (``load_tokens``): the documents stream through worker processes that
   encode them (``num_proc``, default this run's share of the cores: ``cpu_share``) and
   come back in order; the main process writes them to shards of about ``SHARD_TOKENS`` tokens
   (``data.shards``), each followed by the separator (``TextTokenizer.encode_texts``). A shard
   is committed (renamed into place, then recorded in ``progress.json``) before the next
   begins, so a stopped or killed preparation resumes after its last committed shard. Memory
   holds the batches in flight (a few MB per worker), never a split.

The held-out validation is the source's (``TextSource.hold_out_rule``): its own validation
split, or the last ``val_fraction`` of its bytes or rows. ``data.val_max_tokens`` caps what
is held out: documents past the cap train instead. The rule is recorded in the manifest and
with the run, and ``eval`` scores the same cached validation tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm_trainer.config import ModelConfig
from llm_trainer.data.chat import (
    BadRow,
    ChatTemplate,
    TemplateRefused,
    to_messages,
    with_chat_tokens,
)
from llm_trainer.data.chat_data import prepare_chat
from llm_trainer.data.shards import (
    CACHE_VERSION,
    MANIFEST,
    Progress,
    ShardWriter,
    TokenShards,
    cache_lock,
    open_split,
    open_v1,
    shard_tokens,
)
from llm_trainer.data.sources import TextSource, resolve_dataset
from llm_trainer.data.spec import LOCAL_HINT, SPLIT_NAMES, ChatRow, Document
from llm_trainer.data.tokenizer import TextTokenizer, tokenizer_kind
from llm_trainer.errors import DataError, PrepareStopped
from llm_trainer.store.atomic import atomic_write_json, atomic_write_text, read_json

BPE_SAMPLE_BYTES = 1 << 30  # a BPE vocabulary is learned from the first 1 GiB of training text
TASK_CHARS = 1 << 20  # documents go to a worker in batches of about this much text
POOL_MIN_BYTES = 16 << 20  # smaller data is encoded in this process (no pool to start)
TOKENIZER_SUFFIX = "-eot"  # tokenizers cached since documents are separated


@dataclass(frozen=True)
class PrepareProgress:
    """How far a preparation is: ``stage`` is "vocabulary" (building the tokenizer) or
    "tokenizing"; bytes are of the source text (``total_bytes`` an estimate, 0 if unknown)."""

    stage: str
    done_bytes: int
    total_bytes: int
    tokens: int
    elapsed_s: float

    @property
    def fraction(self) -> float | None:
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)

    @property
    def mb_per_s(self) -> float:
        return self.done_bytes / 1e6 / max(self.elapsed_s, 1e-9)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.elapsed_s, 1e-9)

    @property
    def eta_s(self) -> float | None:
        if not self.total_bytes or not self.done_bytes:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / (self.done_bytes
                                                                 / max(self.elapsed_s, 1e-9)))

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "done_bytes": self.done_bytes,
                "total_bytes": self.total_bytes, "tokens": self.tokens,
                "elapsed_s": round(self.elapsed_s, 3), "fraction": self.fraction,
                "mb_per_s": round(self.mb_per_s, 3), "eta_s": self.eta_s}


@dataclass
class TokenData:
    train: TokenShards
    val: TokenShards
    tokenizer: TextTokenizer
    source: TextSource
    cache_dir: Path
    from_cache: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    # chat data: windows of block_size + 1 tokens and, per token, whether it is a target
    train_mask: TokenShards | None = None
    val_mask: TokenShards | None = None
    chat: ChatTemplate | None = None

    @property
    def window(self) -> int | None:
        """Tokens per window of chat data (block_size + 1), None for a token stream."""
        return self.manifest.get("window") if self.chat is not None else None

    @property
    def hold_out(self) -> str:
        """How validation was chosen, in words (recorded with the run)."""
        rule = self.manifest.get("hold_out", {})
        text = rule.get("rule") or self.source.hold_out_rule
        if rule.get("capped"):
            text += f", capped at {rule['val_max_tokens']:,} tokens (the rest trains)"
        return text

    @property
    def summary(self) -> str:
        if self.chat is not None:
            c = self.manifest.get("chat", {}).get("train", {})
            return (f"{self.source.description}: {c.get('examples', 0):,} conversations "
                    f"({self.source.chat_format} format, {self.chat.kind} template) in "
                    f"{c.get('windows', 0):,} windows, {c.get('trained', 0):,} trained "
                    f"tokens; {len(self.val):,} validation tokens ({self.tokenizer.kind} "
                    f"tokenizer, vocab {self.tokenizer.vocab_size:,}"
                    f"{', cached' if self.from_cache else ''})")
        return (f"{self.source.description}: {len(self.train):,} training and {len(self.val):,} "
                f"validation tokens ({self.tokenizer.kind} tokenizer, vocab "
                f"{self.tokenizer.vocab_size:,}{', cached' if self.from_cache else ''})")


class _Hooks:
    """The caller's log, progress and stop callbacks (all optional), with progress throttled
    to a few calls per second."""

    def __init__(self, log, progress, stop) -> None:
        self.log, self.progress, self.stop = log, progress, stop
        self.t0 = time.perf_counter()
        self.last = 0.0

    def say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def check(self) -> None:
        if self.stop is not None and self.stop():
            raise PrepareStopped("stopped during data preparation; the finished shards are "
                                 "kept and the next run resumes from them")

    def report(self, stage: str, done: int, total: int, tokens: int, *,
               force: bool = False) -> None:
        now = time.perf_counter()
        if self.progress is None or (not force and now - self.last < 0.25):
            return
        self.last = now
        self.progress(PrepareProgress(stage, done, total, tokens, now - self.t0))


# --------------------------------------------------------------------------- the tokenizer


def get_tokenizer(source: TextSource, spec: str, vocab_size: int, data_dir: Path, log=None,
                  progress=None, stop=None, chat: ChatTemplate | None = None) -> TextTokenizer:
    """The tokenizer a new model gets (always with a document separator; for chat data,
    ``chat``'s markers as single tokens too): built by one streaming pass over the text
    (chat data: its conversations as the template writes them) and cached for this dataset,
    or loaded."""
    if chat is not None:
        return with_chat_tokens(_get_tokenizer(source, spec, vocab_size, data_dir, log,
                                               progress, stop, chat), chat)
    return _get_tokenizer(source, spec, vocab_size, data_dir, log, progress, stop, None)


def _get_tokenizer(source: TextSource, spec: str, vocab_size: int, data_dir: Path, log,
                   progress, stop, chat: ChatTemplate | None) -> TextTokenizer:
    hooks = _Hooks(log, progress, stop)
    kind = tokenizer_kind(spec)
    if kind == "byte":
        return TextTokenizer.build_byte()
    if kind == "file":
        return TextTokenizer.from_file(Path(spec).expanduser()).with_eot()
    key = f"{source.fingerprint}-{kind}{vocab_size if kind == 'bpe' else ''}{TOKENIZER_SUFFIX}"
    if chat is not None:
        key += "-chat-" + hashlib.sha256(chat.source.encode()).hexdigest()[:8]
    cached = data_dir / "tokenizers" / f"{key}.json"
    if cached.is_file():
        try:
            return TextTokenizer.from_file(cached, kind)
        except DataError:
            cached.unlink(missing_ok=True)  # unreadable cache: rebuild it
    t0 = time.perf_counter()
    total = source.nbytes or 0
    if kind == "bpe":
        hooks.say(f"training a BPE tokenizer (vocab {vocab_size:,}) on {source.description} "
                  f"(the first {BPE_SAMPLE_BYTES >> 20:,} MB of training text at most)...")
        tok = TextTokenizer.train_bpe_from(
            _texts(source, ("train",), hooks, min(total, BPE_SAMPLE_BYTES), BPE_SAMPLE_BYTES,
                   chat), vocab_size)
    else:
        hooks.say(f"building a character vocabulary from {source.description}...")
        seen = np.zeros(0x110000, dtype=bool)
        for texts in _texts(source, ("train", "val"), hooks, total, None, chat):
            seen[np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"),
                               dtype=np.uint32)] = True
        tok = TextTokenizer.build_char("".join(map(chr, np.flatnonzero(seen))))
    atomic_write_text(cached, tok.to_str())
    hooks.say(f"tokenizer ready in {time.perf_counter() - t0:.1f}s ({tok.vocab_size:,} tokens)")
    return tok


def _texts(source: TextSource, splits: tuple[str, ...], hooks: _Hooks, total: int,
           limit: int | None, chat: ChatTemplate | None = None) -> Iterator[list[str]]:
    """The documents' text of ``splits`` in order, in batches of about ``TASK_CHARS``, up to
    ``limit`` characters, with progress and stop checks between batches. Chat rows are
    written out by ``chat`` (malformed ones are left out: they never train)."""
    done, batch, size = 0, [], 0
    for split in splits:
        for doc in source.documents(split):
            text = doc.text
            if chat is not None and isinstance(doc, ChatRow):
                try:
                    text = chat.render(to_messages(doc.row, source.chat_format or "messages"))
                except (BadRow, TemplateRefused):
                    text = ""
            if text:
                batch.append(text)
                size += len(text)
            done += len(doc.raw) or len(text)
            if size >= TASK_CHARS or (limit is not None and done >= limit):
                yield batch
                batch, size = [], 0
                hooks.check()
                hooks.report("vocabulary", done, total, 0)
                if limit is not None and done >= limit:
                    return
    if batch:
        yield batch


# --------------------------------------------------------------------------- the tokens


def cache_key(source: TextSource, tokenizer: TextTokenizer, val_max_tokens: int) -> dict:
    """What a token cache is made from: any change makes another cache."""
    return {"version": CACHE_VERSION, "fingerprint": source.fingerprint,
            "tokenizer_sha256": tokenizer.sha256, "dtype": tokenizer.dtype.name,
            "separator": tokenizer.eot_id, "shard_tokens": shard_tokens(),
            "val_max_tokens": val_max_tokens if source.held_out else None}


def load_tokens(source: TextSource, tokenizer: TextTokenizer, data_dir: Path, log=None, *,
                progress=None, stop=None, num_proc: int | None = None,
                val_max_tokens: int = 0) -> TokenData:
    """The source's token shards for ``tokenizer``: from the cache, or prepared into it."""
    hooks = _Hooks(log, progress, stop)
    old = _v1(source, tokenizer, data_dir)
    if old is not None:
        return old
    key = cache_key(source, tokenizer, val_max_tokens)
    name = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:20]
    folder = data_dir / "tokens" / name
    done = _open(folder, key, tokenizer, source, True)
    if done is not None:
        return done
    with cache_lock(data_dir / "tokens", name, hooks.check):
        done = _open(folder, key, tokenizer, source, True)
        if done is not None:
            return done
        manifest = _prepare(source, tokenizer, folder, key, hooks, num_proc, val_max_tokens)
    data = _open(folder, key, tokenizer, source, False)
    if data is None:  # pragma: no cover - we have just written it
        raise DataError(f"the token cache {folder} could not be read back after writing it")
    data.manifest = manifest
    return data


def _open(folder: Path, key: dict, tokenizer, source, cached: bool) -> TokenData | None:
    manifest = read_json(folder / MANIFEST)
    if manifest is None or manifest.get("key") != key:
        return None
    try:
        return TokenData(open_split(folder, manifest, "train"), open_split(folder, manifest,
                                                                          "val"),
                         tokenizer, source, folder, cached, manifest)
    except (OSError, ValueError):
        (folder / MANIFEST).unlink(missing_ok=True)  # damaged: prepare it again
        return None


def _v1(source: TextSource, tokenizer: TextTokenizer, data_dir: Path) -> TokenData | None:
    """A cache from before shards, for this source and tokenizer, read as it is."""
    name = hashlib.sha256(f"{source.fingerprint}|{tokenizer.sha256}|1".encode()).hexdigest()[:20]
    folder = data_dir / "tokens" / name
    meta = read_json(folder / "meta.json")
    if meta is None or meta.get("cache_version") != 1:
        return None
    try:
        train, val = open_v1(folder, meta)
    except (OSError, ValueError):
        return None
    return TokenData(train, val, tokenizer, source, folder, True,
                     {"version": 1, "dtype": meta["dtype"], "separator": None,
                      "hold_out": {"rule": meta.get("val_source", "")}})


def _prepare(source: TextSource, tokenizer: TextTokenizer, folder: Path, key: dict,
             hooks: _Hooks, num_proc: int | None, val_max_tokens: int) -> dict:
    """Tokenize the source into ``folder``, resuming after its committed shards."""
    progress = Progress.read(folder, key)
    total = source.nbytes or 0
    procs = _procs(num_proc, folder.parent.parent.parent) \
        if total >= POOL_MIN_BYTES or num_proc else 1
    resumed = len(progress.shards)
    hooks.say(f"tokenizing {source.description} with {procs} process"
              f"{'es' if procs > 1 else ''}"
              + (f", resuming after {resumed} finished shard{'s' if resumed != 1 else ''}"
                 if resumed else "") + "...")
    eot = tokenizer.eot_id is not None
    cap = val_max_tokens if source.held_out and val_max_tokens > 0 else None
    limit = shard_tokens()
    writers: dict[str, ShardWriter] = {}
    t0 = time.perf_counter()
    done_bytes = tokens = 0
    position = 0

    def commit() -> None:
        for split in list(writers):
            progress.shards.append(writers.pop(split).commit())
        progress.position = position
        progress.write(folder, key)

    def writer(split: str) -> ShardWriter:
        if split not in writers:
            writers[split] = ShardWriter(folder, split, progress.count(split), tokenizer.dtype)
        return writers[split]

    tasks = _tasks(source, eot, progress.position)
    try:
        with _Encoder(tokenizer, procs) as encoder:
            for batch, (ids, lengths) in encoder.run(tasks, hooks):
                at = 0
                for (split, nbytes), n in zip(batch.docs, lengths, strict=True):
                    if split == "val" and cap is not None and progress.val_tokens >= cap:
                        split = "train"  # past the cap: held-out text trains
                    writer(split).add(ids[at:at + n], 1 if eot else 0, nbytes)
                    if split == "val":
                        progress.val_tokens += n
                    at += n
                    tokens += n
                position = batch.end
                done_bytes += batch.chars
                if any(w.tokens >= limit for w in writers.values()):
                    commit()
                hooks.report("tokenizing", done_bytes, total, tokens)
        commit()
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    stats = {s: {"shards": 0, "tokens": 0, "documents": 0, "bytes": 0} for s in ("train", "val")}
    for r in progress.shards:
        for k, v in (("shards", 1), ("tokens", r.tokens), ("documents", r.documents),
                     ("bytes", r.bytes)):
            stats[r.split][k] += v
    for split in ("train", "val"):
        if not stats[split]["tokens"]:
            raise DataError(f"the {SPLIT_NAMES[split]} split of {source.description} is empty",
                            hint=LOCAL_HINT)
    seconds = time.perf_counter() - t0
    hooks.report("tokenizing", total or done_bytes, total or done_bytes, tokens, force=True)
    manifest = {
        "key": key, "version": CACHE_VERSION, "dataset": source.spec,
        "fingerprint": source.fingerprint, "tokenizer_sha256": tokenizer.sha256,
        "tokenizer_kind": tokenizer.kind, "dtype": tokenizer.dtype.name,
        "separator": tokenizer.eot_id, "hold_out": {
            "rule": source.hold_out_rule, "val_fraction": source.val_fraction
            if source.held_out else None, "val_max_tokens": cap,
            "capped": cap is not None and progress.val_tokens >= cap},
        "splits": stats, "shards": [r.to_json() for r in progress.shards],
        "resumed_shards": resumed, "seconds": round(seconds, 3), "processes": procs,
        "created_at": time.time()}
    atomic_write_json(folder / MANIFEST, manifest)
    hooks.say(f"tokenized in {seconds:.1f}s ({tokens:,} tokens this time, "
              f"{done_bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)")
    return manifest


def _procs(num_proc: int | None, home: Path) -> int:
    """``num_proc``, or this process's share of the cores it may use: the cores divided
    among the runs training in the same home now (``cpu_share``) and this one."""
    if num_proc is not None:
        return max(1, num_proc)
    from llm_trainer import cpu_share

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return cpu_share.threads_per_process(cpu_share.active_processes(home) + 1, cores)


@dataclass
class _Task:
    texts: list[str]
    docs: list[tuple[str, int]]  # (split, UTF-8 bytes) per text
    end: int  # documents consumed once this batch is done
    chars: int  # source characters it covers (separators included; the first batch of a
    # resumed preparation also the documents skipped)


def _tasks(source: TextSource, eot: bool, skip: int) -> Iterator[_Task]:
    """The documents of both splits in batches of about ``TASK_CHARS``, after the first
    ``skip`` (already in committed shards). With a separator each document's text is
    encoded (blank ones dropped); without one, its raw text, separators and all."""
    texts: list[str] = []
    docs: list[tuple[str, int]] = []
    size = chars = 0
    position = 0
    for split in ("train", "val"):
        for doc in source.documents(split):
            position += 1
            if position <= skip:  # in a committed shard: counts as done for the progress
                chars += len(doc.raw)
                continue
            text = _text(doc, eot)
            chars += len(doc.raw)
            if text:
                texts.append(text)
                docs.append((split, len(text.encode("utf-8", "surrogatepass"))))
                size += len(text)
            if size >= TASK_CHARS:
                yield _Task(texts, docs, position, chars)
                texts, docs, size, chars = [], [], 0, 0
        if texts or chars:  # a batch never spans the two splits
            yield _Task(texts, docs, position, chars)
            texts, docs, size, chars = [], [], 0, 0


def _text(doc: Document, eot: bool) -> str:
    if eot:
        return doc.text if doc.text.strip() else ""
    return doc.raw


# --------------------------------------------------------------------------- the workers


class _Encoder:
    """Encodes task after task, in this process or in a pool of ``procs`` workers, giving
    back (task, (ids, tokens per text)) in task order with at most two tasks per worker in
    flight (memory stays bounded whatever the size of the data)."""

    DRAIN_S = 30.0  # the longest a stop waits for the batches in flight

    def __init__(self, tokenizer: TextTokenizer, procs: int) -> None:
        self.tokenizer, self.procs, self.pool = tokenizer, procs, None
        self.window: deque = deque()  # (task, AsyncResult) sent to the pool, not yet taken

    def __enter__(self) -> _Encoder:
        if self.procs > 1:
            ctx = multiprocessing.get_context("spawn")
            self.pool = ctx.Pool(self.procs, _init_worker,
                                 (self.tokenizer.to_str(), self.tokenizer.kind, os.getpid()))
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            # On a stop, let the batches in flight arrive first (at most two per worker): a
            # worker still writing its result into the full result pipe holds the queue's
            # lock, and Pool.terminate() would wait for that lock forever (seen in CI).
            deadline = time.monotonic() + self.DRAIN_S
            for _task, result in self.window:
                result.wait(max(0.0, deadline - time.monotonic()))
            self.pool.terminate()  # idle workers now; their results are dropped
            self.pool.join()

    def run(self, tasks: Iterator[_Task], hooks: _Hooks):
        if self.pool is None:
            eot = self.tokenizer.eot_id is not None
            for task in tasks:
                hooks.check()
                yield task, self.tokenizer.encode_documents(task.texts, eot=eot)
            return
        window = self.window
        eot = self.tokenizer.eot_id is not None
        tasks = iter(tasks)
        more = True
        while more or window:
            while more and len(window) < 2 * self.procs:
                task = next(tasks, None)
                if task is None:
                    more = False
                    break
                window.append((task, self.pool.apply_async(_work, (task.texts, eot))))
            if not window:
                break
            task, result = window[0]
            while not result.ready():
                hooks.check()
                result.wait(0.1)
            window.popleft()
            hooks.check()
            yield task, result.get()


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_json: str, kind: str, parent: int) -> None:
    # A stop, Ctrl-C or a closing terminal signals the whole process group: a worker killed
    # while it holds the pool's result-queue lock would hang Pool.terminate(). So workers
    # leave the group (the main process alone answers signals, then terminates them) and
    # die with their parent (Linux: PR_SET_PDEATHSIG), so a kill -9 leaves none behind.
    with contextlib.suppress(OSError):
        os.setpgrp()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker
    _WORKER["tokenizer"] = TextTokenizer.from_str(tokenizer_json, kind)
    _WORKER["parent"] = parent


def _work(texts: list[str], eot: bool):
    if os.getppid() != _WORKER["parent"]:  # the main process died (kill -9): stop too
        os._exit(1)
    return _WORKER["tokenizer"].encode_documents(texts, eot=eot)


# --------------------------------------------------------------------------- the entry point


def prepare_data(*, dataset: str, tokenizer_spec: str, vocab_size: int, val_fraction: float,
                 text_column: str | None, data_dir: Path, explicit: bool = True,
                 tokenizer: TextTokenizer | None = None, log=None,
                 progress: Callable[[PrepareProgress], None] | None = None,
                 stop: Callable[[], bool] | None = None, num_proc: int | None = None,
                 val_max_tokens: int = 0, chat: ChatSettings | None = None) -> TokenData:
    """Resolve, tokenize (or reuse) and return the token shards. Pass ``tokenizer`` to keep a
    model's own tokenizer (continued training on new data). ``progress`` gets a
    PrepareProgress a few times a second; ``stop`` is polled as often, and a true answer
    raises PrepareStopped (the finished shards are kept for the next run). ``chat``: how
    chat data is prepared when the data turns out to be conversations (default: ChatML,
    the default block size and the config's defaults)."""
    source = resolve_dataset(dataset, data_dir=data_dir, val_fraction=val_fraction,
                             text_column=text_column, explicit=explicit,
                             data_format=chat.data_format if chat else "auto")
    if source.notice and log is not None:
        log(source.notice)
    template = None
    if source.chat_format is not None:
        chat = chat or ChatSettings(block_size=ModelConfig().block_size)
        template = chat.template or ChatTemplate.chatml()
    if tokenizer is None:
        tokenizer = get_tokenizer(source, tokenizer_spec, vocab_size, data_dir, log, progress,
                                  stop, template)
    if template is None:
        return load_tokens(source, tokenizer, data_dir, log, progress=progress, stop=stop,
                           num_proc=num_proc, val_max_tokens=val_max_tokens)
    tokenizer = with_chat_tokens(tokenizer, template)
    train, train_mask, val, val_mask, folder, manifest, cached = prepare_chat(
        source, tokenizer, template, data_dir, _Hooks(log, progress, stop),
        block_size=chat.block_size, packing=chat.packing, truncate=chat.truncate,
        loss_on=chat.loss_on, on_bad_rows=chat.on_bad_rows)
    return TokenData(train, val, tokenizer, source, folder, cached, manifest, train_mask,
                     val_mask, template)


@dataclass(frozen=True)
class ChatSettings:
    """How chat data is prepared (the run's data.* and train.loss_on settings), and the
    model's own template (None: ChatML)."""

    block_size: int
    data_format: str = "auto"
    packing: bool = True
    truncate: bool = True
    loss_on: str = "assistant"
    on_bad_rows: str = "auto"
    template: ChatTemplate | None = None

    @classmethod
    def from_config(cls, cfg, template: ChatTemplate | None = None) -> ChatSettings:
        return cls(cfg.model.block_size, cfg.data.format, cfg.data.packing, cfg.data.truncate,
                   cfg.train.loss_on, cfg.data.on_bad_rows, template)
