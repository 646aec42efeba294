"""Experiment loggers through the CLI: a model trained, then resumed, is one curve in
TensorBoard and in its CSV file; a logger whose package is missing is refused before
anything starts, in one line naming the extra."""

from __future__ import annotations

import csv
import sys

import pytest

from llm_trainer.store.runs import RunStore
from tests.helpers import TINY, corpus_text, run_cli


@pytest.fixture
def small_corpus(tmp_path):
    p = tmp_path / "small.txt"
    p.write_text(corpus_text(20_000), encoding="utf-8")
    return p


@pytest.mark.slow  # two short trainings and tensorboard
def test_a_resumed_model_is_one_curve_in_tensorboard_and_csv(tmp_path, small_corpus):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    home = tmp_path / "h"
    home.mkdir()
    run_cli("train", "--foreground", *TINY, "--dataset", str(small_corpus), "--max-steps", "20",
            "--name", "one", "--tensorboard", "--logger", "csv", "--sample", "0", "--set",
            "train.eval_interval=10", home=home, check=True)
    first = RunStore(home).run_ids()
    run_cli("resume", "one", "--foreground", "--more-epochs", "1", "--sample", "0", home=home,
            check=True)
    runs = RunStore(home)
    (second,) = [r for r in runs.run_ids() if r not in first]
    assert "tensorboard" in runs.paths(second).log.read_text()  # the loggers line

    # one TensorBoard run: the first run's folder, two event files, steps one after another
    folders = sorted(p.parent for p in (home / "runs").glob("*/tensorboard/events.*"))
    assert set(folders) == {runs.paths(first[0]).tensorboard}
    events = EventAccumulator(str(folders[0]), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    last = runs.read_state(second).step
    assert steps[:5] == [5, 10, 15, 20, 25] and steps[-1] == last > 25
    assert steps == sorted(set(steps))  # each step once, in order: one line
    assert [e.step for e in events.Scalars("val/loss")][:2] == [10, 20]

    # the model's CSV file: the header once, each step once, both runs
    with open(home / "checkpoints" / "one" / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["step", "time", "run_id"] and sum(r[0] == "step" for r in rows) == 1
    train = [r for r in rows[1:] if r[3]]
    assert [int(r[0]) for r in train] == steps
    assert {r[2] for r in train if int(r[0]) <= 20} == {first[0]}
    assert {r[2] for r in train if int(r[0]) > 20} == {second}


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_logger_without_its_package_is_refused_at_launch_naming_the_extra(
        tmp_path, corpus, monkeypatch, name):
    home = tmp_path / "h"
    home.mkdir()
    monkeypatch.setitem(sys.modules, name, None)  # not importable, not found
    for args in (["--dry-run"], []):
        proc = run_cli("train", *TINY, "--dataset", str(corpus), "--logger", "csv",
                       "--logger", name, *args, home=home)
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [
            f"error: runtime.loggers {name} needs the {name} package, which is not installed",
            f"hint: pip install 'llm-trainer[{name}]'"]
    assert RunStore(home).run_ids() == []
