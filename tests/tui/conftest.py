"""Fixtures shared by the dashboard tests."""

from __future__ import annotations

import pytest

from tests.helpers import corpus_text, stop_all_runs


@pytest.fixture
def ft_home(home):
    """A home with a corpus to fine-tune on; its runs are stopped afterwards."""
    (home / "corpus.txt").write_text(corpus_text(20_000))
    yield home
    stop_all_runs(home)


@pytest.fixture
def dashboard_home(home):
    """A home as the dashboard shows it, written straight to disk (nothing trained): two
    models, a finished run and a running one whose worker is a real process (``sleep``), so
    that panel A lists it as active with its status and loss."""
    import subprocess
    import time

    import psutil

    from llm_trainer.store.models import ModelStore
    from llm_trainer.store.records import RunMeta, RunState
    from llm_trainer.store.runs import RunStore

    corpus = home / "corpus.txt"
    corpus.write_text(corpus_text(20_000))
    models = ModelStore(home)
    runs = RunStore(home)
    now = time.time()
    worker = subprocess.Popen(["sleep", "600"])
    for name, status, loss, pid, trained in (("bard", "completed", 2.3456, None, now - 600),
                                             ("bard-long", "running", 1.8484, worker.pid,
                                              now - 60)):
        rec = models.create(name, default_base="m", last_trained_at=trained,
                            epochs_completed=0.76, best_val_loss=loss + 0.1,
                            latest_val_loss=loss + 0.1,
                            datasets=[{"spec": str(corpus), "fingerprint": "fp", "epochs": 1.0}])
        run_id = time.strftime("%Y%m%d-%H%M%S-", time.localtime(now - 90)) + name
        runs.create(
            RunMeta(run_id=run_id, created_at=now - 90, config={"data": {"dataset": str(corpus)}},
                    model={"id": rec.id, "name": name},
                    selected_device={"selected": "cpu", "name": "cpu"}),
            RunState(run_id=run_id, status=status, model_id=rec.id, model_name=name,
                     created_at=now - 90, started_at=now - 90, updated_at=now, device="cpu",
                     step=990, total_steps=2600, epoch=0.76, loss=loss, val_loss=loss + 0.1,
                     tokens_per_s=31_456.0, elapsed_s=30.0, eta_seconds=45.0,
                     finish_at=now + 45, pid=pid,
                     create_time=psutil.Process(pid).create_time() if pid else None))
    yield home
    worker.kill()
    worker.wait()
