"""The run detail text: the early-stop reason, anomalies and the latest sample are shown."""

from llm_trainer.tui.modals import detail_text
from llm_trainer.views import RunDetail


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
