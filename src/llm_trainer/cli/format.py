"""Tables and cells only the command line prints (text both front ends show is in
``llm_trainer.render``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_trainer.render import eta, gpu, num, run_state, steps

if TYPE_CHECKING:
    from rich.console import Console

    from llm_trainer.views import RunView


# ============================================================================ tables


@dataclass(frozen=True)
class Column:
    """A column of a table the CLI prints. ``whole``: a number, an id or a name, which must
    stay on one line and never be cut (text may wrap); ``drop``: 0 for a column every width
    shows, else its turn to be left out when the table is too wide (the highest first)."""

    header: str
    whole: bool = True
    drop: int = 0
    justify: str = "left"


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Any]],
                **options: Any) -> None:
    """``rows`` as a table as wide as ``console`` at most: the columns that do not fit are
    left out (said in one line after it), text wraps, and numbers and ids stay whole. Every
    table of the CLI is printed here, so that one rule decides what a narrow terminal shows.
    ``options``: rich ``Table`` options (box, title, ...)."""
    from rich.text import Text

    table, left_out = fitted_table(columns, rows, console.width, console, **options)
    console.print(table)
    if left_out:
        console.print(Text(f"(not shown at {console.width} columns: {', '.join(left_out)})",
                           style="dim"))


MIN_TEXT_WIDTH = 4  # the narrowest a text column folds to before numbers and ids wrap


def fitted_table(columns: Sequence[Column], rows: Sequence[Sequence[Any]], width: int,
                 console: Console, **options: Any):
    """The rich ``Table`` of ``print_table`` and the headers it left out."""
    from rich.cells import cell_len
    from rich.measure import Measurement
    from rich.text import Text

    cells = [[c if isinstance(c, Text) else Text(str(c)) for c in row] for row in rows]
    natural = [max([cell_len(col.header), *(cell_len(r[i].plain) for r in cells)])
               for i, col in enumerate(columns)]

    def build(shown: list[int], wrap_whole: bool, text_width: int | None = None):
        from rich.table import Table

        table = Table(**options)
        for i in shown:
            col = columns[i]
            keep = col.whole and not wrap_whole
            table.add_column(col.header, justify=col.justify, no_wrap=keep, overflow="fold",
                             min_width=natural[i] if keep else None,
                             max_width=None if col.whole else text_width)
        for row in cells:
            table.add_row(*(row[i] for i in shown))
        return table

    def measure(table) -> Measurement:
        return Measurement.get(console, console.options.update_width(10_000), table)

    shown = list(range(len(columns)))
    while measure(build(shown, False)).maximum > width:
        droppable = [i for i in shown if columns[i].drop]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    # text folds as narrow as it must (a few characters a line at worst); only when even
    # that leaves no room for the whole columns do they wrap too
    squeezed = measure(build(shown, False, text_width=MIN_TEXT_WIDTH)).maximum
    table = build(shown, wrap_whole=squeezed > width)
    return table, [columns[i].header for i in range(len(columns)) if i not in shown]


RUN_COLUMNS = (Column("RUN_ID"), Column("MODEL", drop=4), Column("STATUS", whole=False),
               Column("EPOCH", drop=5), Column("STEP"), Column("LOSS", drop=1),
               Column("VAL LOSS", drop=3), Column("DEVICE", drop=7), Column("ETA", drop=2),
               Column("GPU%", drop=6))


def print_runs(console: Console, views: list[RunView]) -> None:
    """The runs table of `status`."""
    print_table(console, RUN_COLUMNS, [
        [v.run_id, v.model, run_state(v), num(v.epoch, "{:.2f}"), steps(v), num(v.loss),
         num(v.val_loss), v.device or "-", eta(v), gpu(v)] for v in views],
        box=None, pad_edge=False, header_style="bold")


def cell(value: Any) -> str:
    """A config value in the compare table."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"
