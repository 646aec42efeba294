"""The run detail text: the early-stop reason, anomalies and the latest sample are shown."""

import inspect
import time
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Static

from llm_trainer.tui.app import TrainerApp
from llm_trainer.tui.modals import RunDetailScreen, detail_text
from llm_trainer.views import LossCurve, RunDetail


def test_run_detail_shows_reason_anomalies_and_the_latest_sample():
    detail = RunDetail(
        run_id="20261124-120000-m", model="m", model_id="m-1", status="completed",
        reason="early stop: val loss did not improve for 3 evaluations (best 1.9 at step 40)",
        epoch=0.5, step=70, total_steps=500, loss=1.8, val_loss=1.95, best_val_loss=1.9,
        anomalies=2, rollbacks=1, last_anomaly="step 55: the loss became nan (rollback)",
        last_sample={"step": 60, "prompt": "ROMEO:", "text": " what [bold]light\nthrough"},
        log_tail=["a line"])
    text = detail_text(detail).plain
    assert "status:     completed (early stop: val loss did not improve for 3" in text
    assert "anomalies:  2 (1 rollbacks); last: step 55: the loss became nan (rollback)" in text
    assert ("sample:     step 60, prompt 'ROMEO:':\n  ROMEO: what [bold]light\n  through"
            in text)


DETAIL = RunDetail(run_id="20261124-120000-m", model="m", model_id="m-1", status="completed",
                   step=40, total_steps=40, loss=2.9, val_loss=3.0, best_val_loss=3.0)


class Host(App):
    """The dashboard's stylesheet around one detail screen (no panels, no workers)."""

    CSS_PATH = Path(inspect.getfile(TrainerApp)).parent / TrainerApp.CSS_PATH

    def __init__(self, curve: LossCurve) -> None:
        super().__init__()
        self.curve = curve

    def on_mount(self) -> None:
        self.push_screen(RunDetailScreen(DETAIL, self.curve))


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_run_detail_plots_train_and_val_loss_to_fit(size):
    curve = LossCurve(train_steps=[10, 20, 30, 40], train_loss=[4.0, 3.5, 3.1, 2.9],
                      val_steps=[20, 40], val_loss=[3.6, 3.0])
    app = Host(curve)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.1)
        plot = app.screen.query_one("#curve", Static)
        lines = str(plot.render()).splitlines()
        assert len(lines) == plot.size.height >= 8
        assert max(len(line) for line in lines) == plot.size.width
        assert "┌" in lines[1] and "step" in lines[-1]
        assert any("train" in line for line in lines) and any("val" in line for line in lines)
        assert "run:        20261124-120000-m" in str(app.screen.query_one("#detail-body",
                                                                            Static).render())


async def test_run_detail_without_metrics_says_so():
    app = Host(LossCurve())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        assert str(app.screen.query_one("#curve", Static).render()) == "no loss recorded yet"


@pytest.mark.slow  # refresh cycles of a whole dashboard (the fast suite's 30 s budget)
async def test_the_detail_of_an_active_run_follows_it_live(tmp_path):
    """A run's records on disk, kept alive by this process's pid: the open detail moves on
    as they change, stays at the end of the log, and stops following once the run ends."""
    import os

    from llm_trainer.launcher import process_start_time
    from llm_trainer.store.atomic import append_jsonl
    from llm_trainer.store.records import RunMeta, RunState
    from llm_trainer.store.runs import RunStore
    from tests.helpers import wait_until

    runs = RunStore(tmp_path)
    run_id = "20261130-120000-live"
    now = time.time()
    state = RunState(run_id=run_id, status="running", model_name="live", model_id="m-1",
                     created_at=now, started_at=now, pid=os.getpid(),
                     create_time=process_start_time(os.getpid()), step=10, total_steps=100,
                     loss=3.0)
    paths = runs.create(RunMeta(run_id=run_id, created_at=now, kind="train", config={},
                                model={"id": "m-1", "name": "live"}), state)
    paths.log.write_text("".join(f"12:00:{i:02d} step {i}\n" for i in range(40)))
    runs.append_metrics(run_id, {"kind": "train", "step": 10, "loss": 3.0})

    def body(app) -> str:
        return str(app.screen.query_one("#detail-body", Static).render())

    app = TrainerApp(tmp_path, refresh_s=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.query_one("#runs-table").row_count == 1)
        await pilot.press("1", "enter")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunDetailScreen")
        assert "step 10/100" in body(app)
        dialog = app.screen.query_one("#detail-dialog")
        assert "following the run live" in str(dialog.border_subtitle)
        scroll = app.screen.query_one("#detail-scroll")
        scroll.scroll_end(animate=False)
        await pilot.pause(0.1)

        runs.write_state(RunState(**{**state.__dict__, "step": 55, "loss": 2.5}))
        with open(paths.log, "a") as fh:
            fh.write("12:01:00 the newest line\n")
        append_jsonl(paths.metrics, {"kind": "train", "step": 55, "loss": 2.5})
        await wait_until(pilot, lambda: "step 55/100" in body(app) and
                         "12:01:00 the newest line" in body(app))
        await pilot.pause(0.3)
        assert scroll.scroll_y == scroll.max_scroll_y > 0  # still at the end
        assert app.screen.curve.train_steps == [10, 55]

        runs.write_state(RunState(**{**state.__dict__, "step": 100, "status": "completed"}))
        await wait_until(pilot, lambda: "status:     completed" in body(app))
        assert "following" not in str(dialog.border_subtitle)
        assert app.screen.timer is None
