"""ETA from a moving window of recent step times. Pure Python, no torch.

Warm-up steps (the first few, while caches and allocators settle) and pauses for evaluation
or checkpointing are kept out of the step-time average; time spent in pauses is estimated
separately from their own history.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Eta:
    elapsed_s: float
    remaining_s: float | None  # None: too little history yet
    finish_at: float | None  # wall-clock timestamp
    step_time_s: float | None

    def to_json(self) -> dict:
        return {"elapsed_s": self.elapsed_s, "eta_seconds": self.remaining_s,
                "finish_at": self.finish_at, "step_time_s": self.step_time_s}


class EtaClock:
    def __init__(self, *, window: int = 50, skip_first: int = 3, min_samples: int = 3,
                 now=time.time) -> None:
        self.window: deque[float] = deque(maxlen=window)
        self.skip_first = skip_first
        self.min_samples = min_samples
        self.seen = 0
        self.pause_total = 0.0
        self.pause_count = 0
        self.now = now
        self.started = now()

    def add_step(self, seconds: float) -> None:
        self.seen += 1
        if self.seen > self.skip_first and math.isfinite(seconds) and seconds >= 0:
            self.window.append(seconds)

    def add_pause(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds >= 0:
            self.pause_total += seconds
            self.pause_count += 1

    @property
    def step_time(self) -> float | None:
        if len(self.window) < self.min_samples:
            return None
        return sum(self.window) / len(self.window)

    def estimate(self, *, remaining_steps: int, remaining_pauses: int = 0,
                 elapsed_offset: float = 0.0) -> Eta:
        now = self.now()
        elapsed = max(0.0, now - self.started) + elapsed_offset
        per_step = self.step_time
        if per_step is None:
            return Eta(elapsed, None, None, None)
        remaining = max(0, remaining_steps) * per_step
        if self.pause_count:
            remaining += max(0, remaining_pauses) * self.pause_total / self.pause_count
        return Eta(elapsed, remaining, now + remaining, per_step)


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s``; ``n/a`` for None or nonsense."""
    if seconds is None:
        return "n/a"
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(s) or s < 0:
        return "n/a"
    s = round(s)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_clock(timestamp: float | None) -> str:
    if timestamp is None:
        return "n/a"
    try:
        t = float(timestamp)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(t):
        return "n/a"
    same_day = time.strftime("%Y%m%d", time.localtime(t)) == time.strftime("%Y%m%d")
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", time.localtime(t))


def format_bytes(n: float | None, *, compact: bool = False) -> str:
    """'1.1 MiB' (binary units), or '1.1M' with ``compact`` for narrow table columns; 'n/a'
    when unknown. Every front end writes sizes with this."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    number = f"{value:.0f}" if unit == "B" else f"{value:.1f}"
    return f"{number}{unit[0]}" if compact else f"{number} {unit}"
