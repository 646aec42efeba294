"""Tables and cells only the command line prints (text both front ends show is in
``llm_trainer.render``)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from llm_trainer.render import eta, gpu, num, run_state, steps

if TYPE_CHECKING:
    from llm_trainer.views import RunView


def runs_table(views: list[RunView]):
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("RUN_ID", "MODEL", "STATUS", "EPOCH", "STEP", "LOSS", "VAL LOSS", "DEVICE",
                "ETA", "GPU%"):
        table.add_column(col, no_wrap=True)
    for v in views:
        table.add_row(*(Text(str(x)) for x in (
            v.run_id, v.model, run_state(v), num(v.epoch, "{:.2f}"), steps(v),
            num(v.loss), num(v.val_loss), v.device or "-", eta(v), gpu(v))))
    return table


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
