"""Loss, perplexity and bits per byte of a checkpoint over a whole dataset split.

Every token of the split but the first is predicted exactly once: consecutive windows of
``block_size + 1`` tokens that overlap by one token (window ``i`` holds tokens
``[i*T, i*T + T]`` and predicts ``i*T+1 .. i*T+T`` from the tokens before them in the same
window), the last, shorter window included. No KV cache; fp32. The loss is the sum of every
predicted token's negative log-likelihood divided by their count (not a mean of batch means).

Bits per byte = total nats / ln 2 / the UTF-8 bytes of the text the predicted tokens cover:
the split's text less the bytes its first token covers (that token is only context). For
byte-level tokenizers (``byte``, ``bpe``, GPT-2 style tokenizer.json files) a token's bytes come
from the byte-level alphabet, exact even when a token holds part of a multi-byte character;
for the others (``char``, other tokenizer files) from the tokenizer's character offsets, which
also count an ``[UNK]`` token as the character it replaced. Comparable across tokenizers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llm_trainer.data.sources import resolve_dataset
from llm_trainer.data.spec import check_split
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError, UsageError
from llm_trainer.training.device import one_cpu_thread
from llm_trainer.views import EvalResult

DEFAULT_BATCH = 32
LOGITS_BUDGET = 1 << 28  # floats of logits per batch (1 GiB): the default batch shrinks to fit


# --------------------------------------------------------------------------- the computation


@dataclass(frozen=True)
class EvalTotals:
    nats: float  # summed negative log-likelihood of every predicted token
    tokens: int  # predicted tokens: every token of the split but the first
    windows: int

    @property
    def loss(self) -> float:
        return self.nats / self.tokens if self.tokens else float("nan")


def window_count(n_tokens: int, block_size: int) -> int:
    """Windows needed to predict each of ``n_tokens - 1`` tokens once."""
    return -(-max(0, n_tokens - 1) // block_size)


def evaluate_tokens(model: torch.nn.Module, tokens, block_size: int, batch_size: int,
                    device: str | torch.device = "cpu") -> EvalTotals:
    """Summed cross-entropy of ``model`` over ``tokens`` (a flat id array), each token after
    the first predicted once; full windows go ``batch_size`` at a time, the last shorter
    window on its own."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    if n < 2:
        raise DataError(f"the split has {n} token{'s' if n != 1 else ''}; at least 2 are "
                        "needed to predict one")
    T = block_size
    n_full = (n - 1) // T
    offsets = np.arange(T + 1)
    nats = 0.0
    model.eval()
    work = 2 * sum(p.numel() for p in model.parameters()) * min(batch_size, n) * T
    with one_cpu_thread(device, work <= SINGLE_THREAD_MAX_FLOPS), torch.inference_mode():
        for first in range(0, n_full, batch_size):
            starts = np.arange(first, min(first + batch_size, n_full)) * T
            nats += _window_nats(model, tokens[starts[:, None] + offsets], device)  # (B, T+1)
        if n_full * T < n - 1:
            nats += _window_nats(model, tokens[n_full * T:][None, :], device)  # (1, L+1)
    return EvalTotals(nats, n - 1, window_count(n, T))


SINGLE_THREAD_MAX_FLOPS = 1e9  # forward passes below this run on one CPU thread


def _window_nats(model, window, device) -> float:
    w = torch.from_numpy(np.asarray(window, dtype=np.int64)).to(device)  # (B, L+1)
    logits = model(w[:, :-1])[0]  # (B, L, V)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1),
                          reduction="none")  # (B*L,)
    return float(nll.double().sum())


def bits_per_byte(nats: float, n_bytes: int) -> float:
    return nats / math.log(2) / n_bytes if n_bytes else float("nan")


# --------------------------------------------------------------------------- bytes


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """The inverse of the byte-level alphabet (GPT-2's bytes_to_unicode): char -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def is_byte_level(tokenizer: TextTokenizer) -> bool:
    return type(tokenizer.tok.decoder).__name__ == "ByteLevel"


def first_token_bytes(text: str, tokenizer: TextTokenizer, first_id: int) -> int:
    """UTF-8 bytes of ``text`` that its first token covers (and everything before it that the
    tokenizer dropped)."""
    if is_byte_level(tokenizer):
        piece = tokenizer.tok.id_to_token(int(first_id)) or ""
        table = _byte_of_char()
        if piece and all(c in table for c in piece):
            return len(piece)  # one alphabet character per byte
        return len(piece.encode("utf-8"))  # a special token, written literally in the text
    enc = tokenizer.tok.encode(text[:4096], add_special_tokens=False)
    end = enc.offsets[0][1] if enc.offsets else 0
    return len(text[:end].encode("utf-8"))


def scored_bytes(text: str, tokenizer: TextTokenizer, first_id: int) -> int:
    """UTF-8 bytes of the text that the predicted tokens (all but the first) cover."""
    return len(text.encode("utf-8")) - first_token_bytes(text, tokenizer, first_id)


@dataclass(frozen=True)
class TextScore:
    totals: EvalTotals
    bytes: int
    seconds: float

    @property
    def bits_per_byte(self) -> float:
        return bits_per_byte(self.totals.nats, self.bytes)


def evaluate_text(model: torch.nn.Module, tokenizer: TextTokenizer, text: str, *,
                  block_size: int, batch_size: int, device: str | torch.device = "cpu"
                  ) -> TextScore:
    """``text`` tokenized as one plain text (no document separators), then scored."""
    tokens = tokenizer.encode_corpus(text)
    part = SplitTokens(tokens, scored_bytes(text, tokenizer, int(tokens[0])) if len(tokens)
                       else 0, "text", "", "")
    return evaluate_split(model, part, block_size=block_size, batch_size=batch_size,
                          device=device)


def evaluate_split(model: torch.nn.Module, part: SplitTokens, *, block_size: int,
                   batch_size: int, device: str | torch.device = "cpu") -> TextScore:
    """A split's tokens scored token by token."""
    tokens = np.asarray(part.tokens)
    if len(tokens) and int(tokens.max()) >= model.shape.vocab_size:
        raise DataError(f"token id {int(tokens.max())} is outside the model's vocabulary of "
                        f"{model.shape.vocab_size:,}", hint="evaluate with the checkpoint's own "
                                                           "tokenizer.json")
    t0 = time.perf_counter()
    totals = evaluate_tokens(model, tokens, block_size, batch_size, device)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return TextScore(totals, part.bytes, seconds)


# --------------------------------------------------------------------------- the split's tokens


@dataclass(frozen=True)
class SplitTokens:
    """A split as the model reads it: its tokens (documents separated as in training), the
    UTF-8 bytes its predicted tokens cover, and where it comes from."""

    tokens: Any  # a flat id array (the cached validation shards, or the test split's ids)
    bytes: int
    origin: str  # "split" (the data has it) or "held out" (and the rule)
    spec: str  # the dataset, as recorded
    description: str
    notes: tuple[str, ...] = ()


def split_tokens(spec: str, split: str, tokenizer: TextTokenizer, *, data_dir: Path,
                 val_fraction: float, text_column: str | None, val_max_tokens: int = 0
                 ) -> SplitTokens:
    """``split`` of a dataset tokenized as training tokenizes it. ``val`` is exactly what
    training validates on: the token cache's validation shards (prepared here when missing),
    with the same hold-out rule and cap. ``test`` only where the dataset has one (a test file
    among a folder's files, or a Hugging Face test split), encoded as its documents stream."""
    from llm_trainer.data.prepare import load_tokens

    check_split(split)
    source = resolve_dataset(spec, data_dir=data_dir, val_fraction=val_fraction,
                             text_column=text_column, explicit=True)
    first = next((d.text for d in source.documents(split) if d.text.strip()), "")
    if split == "val":
        data = load_tokens(source, tokenizer, data_dir, val_max_tokens=val_max_tokens)
        nbytes = data.manifest.get("splits", {}).get("val", {}).get("bytes")
        if nbytes is None:  # a cache from before shards: count the text it was made from
            nbytes = sum(len(d.raw.encode("utf-8")) for d in source.documents("val"))
        tokens = data.val
        origin = "held out" if source.held_out else "split"
    elif not source.has_test:
        val = ("val (its own validation split)" if not source.held_out else
               f"val (held out: its last {val_fraction:g})")
        raise UsageError(f"{source.description} has no test split; its splits are train and "
                         f"{val}", hint="use --split val")
    else:
        tokens, nbytes = _encode_split(source, "test", tokenizer)
        origin = "split"
    if len(tokens):
        nbytes -= first_token_bytes(first, tokenizer, int(tokens[0]))
    notes = ()
    if split == "test" and not source.held_out and _same_files(source):
        notes = ("this dataset has no validation split: training validated on its test split, "
                 "so val and test are the same text",)
    return SplitTokens(tokens, max(0, nbytes), origin, source.spec, source.description, notes)


def _encode_split(source, split: str, tokenizer: TextTokenizer):
    """A (small) split's ids, each document followed by the separator (or its raw text,
    without one), and the UTF-8 bytes encoded."""
    eot = tokenizer.eot_id is not None
    texts = [d.text if eot else d.raw for d in source.documents(split)
             if (d.text.strip() if eot else d.raw)]
    return (tokenizer.encode_texts(texts, eot=eot),
            sum(len(t.encode("utf-8", "surrogatepass")) for t in texts))


def _same_files(source) -> bool:
    """A local folder whose validation is its test file."""
    groups = getattr(source, "groups_of", None)
    return bool(groups) and groups.get("val") == groups.get("test")


# --------------------------------------------------------------------------- a checkpoint


def load_for_eval(path: Path, device: str = "cpu"):
    """The checkpoint's metadata and its model in fp32 on ``device`` (a LoRA checkpoint with
    its adapters merged, as generate loads it)."""
    from llm_trainer.checkpoint_io import load_model, read_checkpoint

    ckpt = read_checkpoint(Path(path))
    model = load_model(ckpt, device).float().eval()
    return ckpt, model


def default_batch(block_size: int, vocab_size: int) -> int:
    """32 windows, fewer when their logits would pass ``LOGITS_BUDGET``."""
    return max(1, min(DEFAULT_BATCH, LOGITS_BUDGET // max(1, block_size * vocab_size)))


def evaluate_loaded(ckpt, model, *, dataset: str | None = None, split: str = "val",
                    batch_size: int | None = None, device: str = "cpu",
                    data_dir: Path | None = None, model_name: str | None = None,
                    notes: list[str] | None = None) -> EvalResult:
    """Score a loaded checkpoint on a split of its own training data (``dataset`` None) or of
    another dataset, tokenized with the checkpoint's tokenizer."""
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} is not allowed", hint="use 1 or more")
    cfg = ckpt.config.data
    own = dataset is None
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    chat = chat_split(ckpt, cfg.dataset if own else dataset, split, data_dir,
                      data_format=cfg.format if own else "auto",
                      text_column=cfg.text_column if own else None)
    if chat is not None:
        return _chat_result(ckpt, model, chat, split=split, batch_size=batch_size,
                            device=device, model_name=model_name, notes=notes)
    part = split_tokens(cfg.dataset if own else dataset, split, ckpt.tokenizer,
                        data_dir=data_dir, val_fraction=cfg.val_fraction,
                        text_column=cfg.text_column if own else None,
                        val_max_tokens=cfg.val_max_tokens)
    shape = model.shape
    batch = batch_size or default_batch(shape.block_size, shape.vocab_size)
    score = evaluate_split(model, part, block_size=shape.block_size, batch_size=batch,
                           device=device)
    t = score.totals
    loss = t.loss
    return EvalResult(
        model=model_name or _model_name(ckpt.path), checkpoint=str(ckpt.path),
        step=int(ckpt.info.step), dataset=part.spec, dataset_description=part.description,
        split=split, split_source=part.origin, tokenizer=ckpt.tokenizer.kind,
        tokens=t.tokens, windows=t.windows, bytes=score.bytes, nats=t.nats, loss=loss,
        perplexity=math.exp(loss) if loss < 700 else None, bits_per_byte=score.bits_per_byte,
        block_size=shape.block_size, batch_size=batch, device=str(device), dtype="float32",
        seconds=score.seconds, notes=[*(notes or []), *part.notes])


def evaluate_checkpoint(path: str | os.PathLike, *, dataset: str | None = None,
                        split: str = "val", batch_size: int | None = None,
                        device: str = "cpu", data_dir: str | os.PathLike | None = None
                        ) -> EvalResult:
    """Load a checkpoint folder and score it over a whole split (see ``evaluate_loaded``).
    ``data_dir``: where Hugging Face / table caches live (default ``$LLM_TRAINER_HOME/data``
    or ``./data``)."""
    check_split(split)
    ckpt, model = load_for_eval(Path(path), device)
    return evaluate_loaded(ckpt, model, dataset=dataset, split=split, batch_size=batch_size,
                           device=device, data_dir=Path(data_dir) if data_dir else None)


def default_data_dir() -> Path:
    return Path(os.environ.get("LLM_TRAINER_HOME") or ".").expanduser().resolve() / "data"


def _model_name(path: Path) -> str:
    from llm_trainer.store.atomic import read_json
    from llm_trainer.store.models import MODEL_FILE

    record = read_json(Path(path).parent / MODEL_FILE) or {}
    return str(record.get("name") or Path(path).parent.name)


# --------------------------------------------------------------------------- chat data


@dataclass(frozen=True)
class ChatSplit:
    """A split of chat data as training validates on it: windows of ``block_size + 1``
    tokens and which targets are trained (the assistant's replies, or every token)."""

    tokens: Any
    mask: Any
    spec: str
    description: str
    origin: str
    skipped: int = 0  # malformed rows of the split left out (another dataset: never refused)


def chat_split(ckpt, spec: str, split: str, data_dir: Path, *, data_format: str,
               text_column: str | None) -> ChatSplit | None:
    """``split`` of ``spec`` prepared as the checkpoint's training prepares chat data (its
    template, or ChatML; its block size, packing and loss_on), None when the data is text.
    Malformed rows of another dataset are skipped and counted (a score of the rest is what
    eval can give; data.on_bad_rows decides whether a run trains, and eval has no --set)."""
    from llm_trainer.data.prepare import ChatSettings, prepare_data

    check_split(split)
    cfg = ckpt.config
    source = resolve_dataset(spec, data_dir=data_dir, val_fraction=cfg.data.val_fraction,
                             text_column=text_column, explicit=True, data_format=data_format)
    if source.chat_format is None:
        return None
    if split != "val":
        raise UsageError("chat data is scored on its validation split only",
                         hint="use --split val")
    data = prepare_data(dataset=spec, tokenizer_spec=cfg.data.tokenizer,
                        vocab_size=cfg.data.vocab_size, val_fraction=cfg.data.val_fraction,
                        text_column=text_column, data_dir=data_dir, tokenizer=ckpt.tokenizer,
                        chat=dataclasses.replace(
                            ChatSettings.from_config(cfg, ckpt.chat), data_format=data_format,
                            on_bad_rows=cfg.data.on_bad_rows if spec == cfg.data.dataset
                            else "skip"))
    return ChatSplit(data.val, data.val_mask, source.spec, source.description,
                     "held out" if source.held_out else "split",
                     int(data.manifest["chat"]["val"]["bad"]))


def evaluate_chat(model: torch.nn.Module, part: ChatSplit, tokenizer: TextTokenizer, *,
                  batch_size: int, device: str | torch.device = "cpu") -> TextScore:
    """Summed cross-entropy over the trained targets of every window, and the UTF-8 bytes of
    the text those targets are."""
    from llm_trainer.data.batches import IGNORE, windows_xy

    width = model.shape.block_size + 1
    n = len(part.tokens) // width
    offsets = np.arange(width)
    per_id = _bytes_per_id(tokenizer, model.shape.vocab_size)
    nats, count, nbytes = 0.0, 0, 0
    t0 = time.perf_counter()
    model.eval()
    with torch.inference_mode():
        for first in range(0, n, batch_size):
            idx = np.arange(first, min(first + batch_size, n))[:, None] * width + offsets
            x, y = windows_xy(part.tokens, part.mask, idx)
            logits = model(torch.from_numpy(x).to(device))[0]
            target = torch.from_numpy(y).to(device)
            nats += float(F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                          target.reshape(-1), ignore_index=IGNORE,
                                          reduction="sum").double())
            trained = y[y != IGNORE]
            count += int(trained.size)
            nbytes += int(per_id[trained].sum())
    return TextScore(EvalTotals(nats, count, n), nbytes, time.perf_counter() - t0)


def _bytes_per_id(tokenizer: TextTokenizer, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each id writes (a special token: its text, as the template writes it)."""
    out = np.zeros(vocab_size, dtype=np.int64)
    for i in range(min(vocab_size, tokenizer.vocab_size)):
        out[i] = len(tokenizer.decode([i]).encode("utf-8", "replace"))
    return out


def _chat_result(ckpt, model, part: ChatSplit, *, split: str, batch_size: int | None,
                 device: str, model_name: str | None, notes: list[str] | None) -> EvalResult:
    shape = model.shape
    batch = batch_size or default_batch(shape.block_size, shape.vocab_size)
    score = evaluate_chat(model, part, ckpt.tokenizer, batch_size=batch, device=device)
    t = score.totals
    scored = ("assistant replies" if ckpt.config.train.loss_on == "assistant" else
              "whole conversations")
    return EvalResult(
        model=model_name or _model_name(ckpt.path), checkpoint=str(ckpt.path),
        step=int(ckpt.info.step), dataset=part.spec, dataset_description=part.description,
        split=split, split_source=part.origin, tokenizer=ckpt.tokenizer.kind,
        tokens=t.tokens, windows=t.windows, bytes=score.bytes, nats=t.nats, loss=t.loss,
        perplexity=math.exp(t.loss) if t.loss < 700 else None,
        bits_per_byte=score.bits_per_byte, block_size=shape.block_size, batch_size=batch,
        device=str(device), dtype="float32", seconds=score.seconds,
        notes=[*(notes or []), f"chat data: the loss is over the {scored} ({t.tokens:,} "
                               f"trained tokens in {t.windows:,} windows)",
               *([f"{part.skipped:,} malformed row{'s' if part.skipped != 1 else ''} of the "
                  f"split left out (`llm-trainer data inspect {part.spec}` lists them)"]
                 if part.skipped else [])])
