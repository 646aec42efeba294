"""The run detail text: the early-stop reason, anomalies and the latest sample are shown."""

import inspect
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
    assert "Status     completed — early stop: val loss did not improve for 3" in text
    assert "Anomalies  2 (1 rollbacks), last: step 55: the loss became nan (rollback)" in text
    assert "Latest sample (step 60):\n  ROMEO: what [bold]light\n  through" in text


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
        assert "Run        20261124-120000-m" in str(app.screen.query_one("#detail-body",
                                                                            Static).render())


async def test_run_detail_without_metrics_says_so():
    app = Host(LossCurve())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        assert str(app.screen.query_one("#curve", Static).render()) == "no loss recorded yet"
