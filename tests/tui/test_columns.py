"""Which columns a dashboard table keeps at a width, and how runs are labelled: pure functions,
no dashboard (fast)."""

from __future__ import annotations

import time

from rich.text import Text

from llm_trainer.tui.panels.base import fit_columns
from llm_trainer.tui.panels.runs import COLUMNS, PRIORITY, row_cells, run_labels
from llm_trainer.views import RunView

COLS = (("a", "A"), ("b", "Bee"), ("c", "C"))


def cells(**texts: str) -> dict[str, Text]:
    return {k: Text(v) for k, v in texts.items()}


def test_columns_fit_whole_by_priority_up_to_the_first_that_does_not():
    rows = [cells(a="12345", b="1", c="1234567890")]
    # widths with padding: a 7, b 5, c 12
    assert fit_columns(COLS, ("a", "b", "c"), rows, 24) == ("a", "b", "c")
    assert fit_columns(COLS, ("a", "b", "c"), rows, 23) == ("a", "b")
    assert fit_columns(COLS, ("a", "c", "b"), rows, 23) == ("a", "c")  # shown in table order
    assert fit_columns(COLS, ("c", "a", "b"), rows, 12) == ("c",)
    assert fit_columns(COLS, ("c", "a", "b"), rows, 3) == ("c",)  # the first one always
    assert fit_columns(COLS, ("a", "b", "c"), rows, 0) == ("a", "b", "c")  # before layout


def view(run_id: str, model: str, started: float | None, **kw) -> RunView:
    return RunView(run_id=run_id, status="running", model=model, model_id=None,
                   started_at=started, **kw)


def test_runs_are_labelled_by_model_and_start_time():
    now = time.time()
    at = time.localtime(now)
    views = [view("20270101-101500-bard", "bard", now),
             view("20270101-101501-gqa", "gqa", now),
             view("20270101-101502-gqa", "gqa", now),  # the same minute as the one above
             view("20260101-000000-x" + "y" * 30, "x" * 30, now - 3 * 86400)]
    labels = run_labels(views)
    assert labels["20270101-101500-bard"] == f"bard {time.strftime('%H:%M', at)}"
    assert labels["20270101-101501-gqa"] == f"gqa {time.strftime('%H:%M:%S', at)}"
    older = time.localtime(now - 3 * 86400)
    assert labels["20260101-000000-x" + "y" * 30] == \
        f"{'x' * 19}… {time.strftime('%m-%d %H:%M', older)}"
    cells = row_cells(views[0], labels[views[0].run_id])
    assert str(cells["run"]) == labels[views[0].run_id]
    assert set(PRIORITY) == {key for key, _ in COLUMNS}
