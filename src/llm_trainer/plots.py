"""Loss curves drawn as text with plotext, for `status RUN`, `compare` and the TUI detail.

Whether to draw at all is decided here, once: only on a terminal that can show it (a pipe, a
log file or ``TERM=dumb`` gets the numbers alone). plotext is imported only when drawing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from llm_trainer.views import LossCurve

# one color per run (compare takes up to 8); train and val of a run share it
COLORS = ("blue", "red", "green", "orange", "magenta", "cyan", "yellow", "gray")
MIN_WIDTH, MIN_HEIGHT = 30, 8


@dataclass(frozen=True)
class Series:
    label: str
    steps: Sequence[int]
    values: Sequence[float]
    color: str
    val: bool = False  # evaluations: drawn with dots, not a line of blocks


def plots_enabled(stream: TextIO, env: dict[str, str] | None = None) -> bool:
    """Draw plots on ``stream``? Only on a terminal, and not a dumb one."""
    env = os.environ if env is None else env
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False
    return tty and env.get("TERM", "") != "dumb"


def terminal_plot_size(max_height: int = 30) -> tuple[int, int]:
    """Width and height for a plot in the current terminal (COLUMNS / LINES win)."""
    cols, lines = shutil.get_terminal_size((80, 24))
    # about 60% of the height: the numbers printed above it stay on the screen
    return max(MIN_WIDTH, cols), max(MIN_HEIGHT, min(int(lines * 0.6), max_height))


def curve_series(curve: LossCurve, *, name: str = "", color: str = COLORS[0]) -> list[Series]:
    """A run's train and val curves as plot series. Unnamed (one run): labelled "train" and
    "val"; named (several runs): one legend entry per run, its val curve in the same color."""
    out = []
    if curve.train_steps:
        out.append(Series(name or "train", curve.train_steps, curve.train_loss, color))
    if curve.val_steps:
        label = "" if name and curve.train_steps else (name or "val")
        out.append(Series(label, curve.val_steps, curve.val_loss, color, val=True))
    return out


def render_plot(series: Sequence[Series], width: int, height: int, *, title: str = "loss",
                color: bool = True) -> str:
    """The series on one shared step axis, as text ``width`` x ``height`` cells (ANSI colors
    unless ``color`` is False). Empty when there is nothing to draw."""
    series = [s for s in series if len(s.steps)]
    if not series:
        return ""
    import plotext as plt

    plt.clear_figure()
    plt.limit_size(False, False)  # the caller sized it (a TUI widget, not the terminal)
    plt.plotsize(max(MIN_WIDTH, width), max(MIN_HEIGHT, height))
    plt.theme("clear")
    for s in series:
        kwargs = {"label": s.label or None, "marker": "dot" if s.val else "braille"}
        if color:
            kwargs["color"] = s.color
        plt.plot(list(s.steps), list(s.values), **kwargs)
    lo = min(min(s.steps) for s in series)
    hi = max(max(s.steps) for s in series)
    ticks = sorted({round(lo + i * (hi - lo) / 4) for i in range(5)})  # steps are integers
    plt.xticks(ticks, [f"{t:,}" for t in ticks])
    plt.title(title)
    plt.xlabel("step")
    text = plt.build()
    plt.clear_figure()
    if not color:
        text = plt.uncolorize(text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def color_wanted(env: dict[str, str] | None = None) -> bool:
    """Colors, unless the user asked for none (https://no-color.org)."""
    env = os.environ if env is None else env
    return not env.get("NO_COLOR")
