"""Seeded, deterministic batches whose position is a pure function of the step.

An epoch is one pass over the training tokens: they are cut into non-overlapping windows of
``seq_len + 1`` tokens at a per-epoch random shift, and the windows are visited in a seeded
per-epoch permutation. The data position is ``(epoch, cursor)``, the index in that
permutation of the next optimizer step's first window; micro-batch ``m`` of rank ``r`` takes
``perm_e[cursor + (m * world + r) * B ...]``. So

- resuming needs nothing but the position (exact resume),
- ``world`` processes with accumulation ``a`` see the same windows per step as one process
  with accumulation ``a * world`` (data-parallel equivalence), and a run can continue with a
  different world size from the same position,
- no RNG state of the training process is consumed.

The permutation is numpy's (``default_rng([seed, epoch]).permutation``) up to
``PERMUTE_IN_MEMORY`` windows; past that (a corpus of hundreds of millions of tokens) it is a
keyed Feistel permutation computed per index (``Feistel``), so memory stays flat whatever the
data's size. Which one a plan uses depends only on its number of windows, so a resumed run
draws the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_trainer.errors import DataError

PERMUTE_IN_MEMORY = 1 << 22  # windows: up to 32 MB of int64 permutation per epoch


@dataclass(frozen=True)
class BatchPlan:
    n_tokens: int
    seq_len: int
    batch_size: int
    grad_accum: int = 1
    world_size: int = 1
    seed: int = 0
    aligned: bool = False  # chat data: the tokens are laid out in windows of T+1 already

    @property
    def n_windows(self) -> int:
        if self.aligned:  # window i is tokens i*(T+1) .. (i+1)*(T+1)
            return self.n_tokens // (self.seq_len + 1)
        # window i starts at shift + i*T with shift < T and needs T+1 tokens
        return max(0, (self.n_tokens - self.seq_len) // self.seq_len)

    @property
    def seqs_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.seqs_per_step * self.seq_len

    @property
    def steps_per_epoch(self) -> int:
        return self.n_windows // self.seqs_per_step

    def check(self, what: str = "training data") -> None:
        need = self.seqs_per_step * self.seq_len + self.seq_len
        if self.steps_per_epoch < 1 and self.aligned:
            raise DataError(
                f"the {what} fills {self.n_windows:,} windows of {self.seq_len + 1} tokens; "
                f"one step needs {self.seqs_per_step}",
                hint="lower --batch-size, or add more conversations")
        if self.steps_per_epoch < 1:
            raise DataError(
                f"the {what} has {self.n_tokens:,} tokens; one step needs {need:,} "
                f"({self.seqs_per_step} sequences of {self.seq_len} tokens)",
                hint="lower --batch-size or --seq-len, or add more text",
            )


@dataclass
class DataPosition:
    epoch: int = 0
    cursor: int = 0  # windows of this epoch already used

    def advance(self, plan: BatchPlan) -> None:
        self.cursor += plan.seqs_per_step
        if self.cursor + plan.seqs_per_step > plan.n_windows:
            self.epoch += 1
            self.cursor = 0

    def epochs_done(self, plan: BatchPlan) -> float:
        """Completed epochs as a fraction (a partial last batch of an epoch is skipped)."""
        return self.epoch + self.cursor / max(1, plan.steps_per_epoch * plan.seqs_per_step)

    def to_json(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}


IGNORE = -1  # a target the loss skips (the model's cross-entropy ignore_index)


class Batches:
    """Training batches for one process (``rank``) as numpy arrays of shape (B, T). With
    ``mask`` (chat data: 1 where a token is a trained target), the other targets are
    ``IGNORE``."""

    def __init__(self, tokens: np.ndarray, plan: BatchPlan, rank: int = 0,
                 mask: np.ndarray | None = None) -> None:
        self.tokens = tokens
        self.plan = plan
        self.rank = rank
        self.mask = mask
        self._epoch = -1
        self._starts: np.ndarray | None = None
        self._offsets = np.arange(plan.seq_len + 1)

    def _epoch_order(self, epoch: int):
        """The epoch's shift and its permutation of the windows (an array, or a Feistel)."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.plan.seed, epoch])
            self._shift = int(rng.integers(0, self.plan.seq_len))
            if self.plan.aligned:
                self._shift = 0
            n = self.plan.n_windows
            self._starts = (rng.permutation(n) if n <= PERMUTE_IN_MEMORY else
                            Feistel(n, (self.plan.seed, epoch)))
            self._epoch = epoch
        return self._shift, self._starts

    def starts(self, pos: DataPosition, micro: int = 0, rank: int | None = None) -> np.ndarray:
        """The first token of each window of micro-batch ``micro`` at ``pos`` (this rank, or
        ``rank``: every process's windows are known to all)."""
        p = self.plan
        shift, perm = self._epoch_order(pos.epoch)
        first = pos.cursor + (micro * p.world_size + (self.rank if rank is None else rank)) \
            * p.batch_size
        index = perm[first:first + p.batch_size] if isinstance(perm, np.ndarray) else \
            perm.at(np.arange(first, first + p.batch_size, dtype=np.int64))
        return shift + index * (p.seq_len + 1 if p.aligned else p.seq_len)

    def step_targets(self, pos: DataPosition) -> int:
        """The trained targets of the whole step at ``pos``, every micro-batch of every rank
        (chat data): what the step's loss is the mean over. Read from the mask, with no
        communication between processes."""
        p = self.plan
        return sum(int(np.count_nonzero(np.asarray(
            self.mask[self.starts(pos, m, r)[:, None] + self._offsets[1:]])))
            for m in range(p.grad_accum) for r in range(p.world_size))

    def get(self, pos: DataPosition, micro: int = 0) -> tuple[np.ndarray, np.ndarray]:
        idx = self.starts(pos, micro)[:, None] + self._offsets  # (B, T+1)
        return windows_xy(self.tokens, self.mask, idx)


def windows_xy(tokens, mask, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of the windows at ``idx`` (B, T+1); targets ``mask`` leaves out
    are ``IGNORE``."""
    window = np.asarray(tokens[idx], dtype=np.int64)
    x, y = window[:, :-1], window[:, 1:]
    if mask is not None:
        y = np.where(np.asarray(mask[idx[:, 1:]], dtype=bool), y, IGNORE)
    return x, y


class Feistel:
    """A keyed pseudo-random permutation of ``range(n)`` computed per index, in O(1) memory:
    a 4-round balanced Feistel network over the smallest even power of two >= n, with cycle
    walking to stay below n (each step is a bijection, so the whole is one too)."""

    ROUNDS = 4

    def __init__(self, n: int, key: tuple[int, ...]) -> None:
        self.n = n
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        seeds = np.random.default_rng([*key, 0xFE15]).integers(1, 1 << 31, self.ROUNDS)
        self.keys = [int(k) for k in seeds]

    def _round(self, x: np.ndarray, k: int) -> np.ndarray:
        h = (x * 0x9E3779B1 + k) & 0xFFFFFFFF  # an integer hash of the half and the key
        h ^= h >> 15
        h = (h * 0x85EBCA77) & 0xFFFFFFFF
        h ^= h >> 13
        return h & self.mask

    def _once(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for k in self.keys:
            left, right = right, left ^ self._round(right, k)
        return (left << self.half) | right

    def at(self, index: np.ndarray) -> np.ndarray:
        """The permutation's values at ``index`` (int64 array of positions < n)."""
        out = self._once(np.asarray(index, dtype=np.int64))
        while True:
            over = out >= self.n
            if not over.any():
                return out
            out[over] = self._once(out[over])


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int, n_batches: int):
    """Fixed, evenly spaced validation windows: the same every evaluation, no randomness.
    Yields (x, y) arrays of shape (b, T)."""
    n_possible = len(tokens) - seq_len - 1
    if n_possible < 0:
        raise DataError(
            f"the validation split has {len(tokens):,} tokens; one sequence needs {seq_len + 1}",
            hint="lower --seq-len, raise data.val_fraction, or add validation text",
        )
    count = min(n_batches * batch_size, n_possible // max(1, seq_len // 2) + 1)
    starts = np.linspace(0, n_possible, num=count).astype(np.int64)
    offsets = np.arange(seq_len + 1)
    for i in range(0, count, batch_size):
        window = np.asarray(tokens[starts[i:i + batch_size, None] + offsets], dtype=np.int64)
        yield window[:, :-1], window[:, 1:]


def chat_eval_windows(tokens, mask, seq_len: int, batch_size: int, n_batches: int):
    """Validation batches of chat data: evenly spaced whole windows (all of them when there
    are few), the same every evaluation. Yields (x, y) with untrained targets ``IGNORE``."""
    width = seq_len + 1
    n = len(tokens) // width
    if n < 1:
        raise DataError("the validation split holds no conversation window",
                        hint="raise data.val_fraction, or add validation conversations")
    count = min(n, n_batches * batch_size)
    starts = np.linspace(0, n - 1, num=count).astype(np.int64) * width
    offsets = np.arange(width)
    for i in range(0, count, batch_size):
        yield windows_xy(tokens, mask, starts[i:i + batch_size, None] + offsets)
