"""Learning-rate schedule: linear warm-up, then cosine / linear decay or constant. Pure math."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def lr_at(step: int, *, total_steps: int, warmup_steps: int, max_lr: float, min_lr: float,
          kind: str = "cosine", origin: int = 0) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of a schedule that starts at
    ``origin`` and ends at ``total_steps``."""
    s = step - origin
    span = max(1, total_steps - origin)
    if warmup_steps > 0 and s < warmup_steps:
        return max_lr * (s + 1) / warmup_steps
    if kind == "constant":
        return max_lr
    decay_span = max(1, span - warmup_steps)
    progress = min(1.0, max(0.0, (s - warmup_steps) / decay_span))
    if kind == "linear":
        return max_lr - (max_lr - min_lr) * progress
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass
class LRSchedule:
    """The schedule's parameters; its ``state_dict`` goes into every checkpoint.

    Continuing for more epochs rebuilds it for the new horizon (``total_steps`` grows; warm-up
    is not repeated). ``restart`` makes a fresh warm-up + decay from ``origin``."""

    total_steps: int
    warmup_steps: int
    max_lr: float
    min_lr: float
    kind: str = "cosine"
    origin: int = 0

    def __call__(self, step: int) -> float:
        return lr_at(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                     max_lr=self.max_lr, min_lr=self.min_lr, kind=self.kind, origin=self.origin)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> LRSchedule:
        return cls(**{k: state[k] for k in cls.__dataclass_fields__ if k in state})
