"""A metrics.jsonl with damaged lines (not UTF-8, wrong types): every reader skips those
lines and says how many, and shows the rest: `status RUN` on a terminal (with its plot),
`compare`, and the dashboard's run detail."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from llm_trainer.store.records import RunMeta, RunState
from llm_trainer.store.runs import RunStore
from llm_trainer.tui.app import TrainerApp
from tests.helpers import run_cli, run_cli_tty, wait_until

RUN, OTHER = "20261201-100000-damaged", "20261201-090000-clean"
BAD_LINES = [b"\xff\xfe not text\n",  # not UTF-8
             b'{"time": 1.0, "kind": "train", "step": "abc", "loss": 1.0}\n',  # a text step
             b'{"time": 1.0, "kind": "eval", "step": 3, "val_loss": "low"}\n']  # a text loss


def run_with_metrics(home: Path, run_id: str, bad: list[bytes]) -> None:
    store = RunStore(home)
    store.create(RunMeta(run_id=run_id, created_at=time.time()),
                 RunState(run_id=run_id, status="completed", step=20, total_steps=20,
                          loss=2.0, val_loss=2.1, created_at=time.time()))
    good = [json.dumps({"time": 1.0, "kind": "train", "step": s, "loss": 4.0 - s / 10}) + "\n"
            for s in range(1, 21)]
    good += [json.dumps({"time": 1.0, "kind": "eval", "step": s, "val_loss": 3.9 - s / 10})
             + "\n" for s in (10, 20)]
    lines = [g.encode() for g in good]
    for i, b in enumerate(bad):
        lines.insert(3 + 5 * i, b)
    store.paths(run_id).metrics.write_bytes(b"".join(lines) + b'{"time": 1.0, "ki')  # torn


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_status_on_a_terminal_skips_and_counts_bad_lines(home):
    run_with_metrics(home, RUN, BAD_LINES)
    code, out = run_cli_tty("status", RUN, home=home, columns=100, lines=40)
    assert code == 0, out
    assert "Traceback" not in out
    assert "3 bad lines of metrics.jsonl skipped" in out  # the torn last line is no fault
    assert "loss by step" in out  # the plot of the good lines is drawn

    detail = json.loads(run_cli("status", RUN, "--json", home=home).stdout)
    assert detail["bad_metric_lines"] == 3


def test_compare_skips_and_counts_bad_lines(home):
    run_with_metrics(home, RUN, BAD_LINES)
    run_with_metrics(home, OTHER, [])
    proc = run_cli("compare", RUN, OTHER, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{RUN}: 3 bad lines of metrics.jsonl skipped" in proc.stdout
    assert f"{OTHER}: " not in proc.stdout.split("best val loss")[-1]  # a clean run: no note
    scores = json.loads(run_cli("compare", RUN, OTHER, "--json", home=home).stdout)
    assert [r["final_val_loss"] for r in scores["runs"]] == [pytest.approx(1.9)] * 2


@pytest.mark.slow  # a whole dashboard
async def test_the_dashboard_run_detail_skips_and_counts_bad_lines(home):
    run_with_metrics(home, RUN, BAD_LINES)
    app = TrainerApp(home, refresh_s=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("1", "f")  # finished runs too
        table = app.query_one("#runs-table", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1, timeout=10)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunDetailScreen",
                         timeout=10)
        body = str(app.screen.query_one("#detail-body", Static).render())
        assert RUN in body and "3 bad lines of metrics.jsonl skipped" in body
