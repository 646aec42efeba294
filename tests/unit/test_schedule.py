import itertools

import pytest

from llm_trainer.progress import EtaClock, format_clock, format_duration
from llm_trainer.training.schedule import LRSchedule, lr_at


def test_warmup_then_cosine_to_min():
    kw = dict(total_steps=100, warmup_steps=10, max_lr=1.0, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(55, **kw) == pytest.approx(0.55)
    assert lr_at(100, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_linear_and_constant():
    kw = dict(total_steps=110, warmup_steps=10, max_lr=1.0, min_lr=0.0)
    assert lr_at(60, kind="linear", **kw) == pytest.approx(0.5)
    assert lr_at(60, kind="constant", **kw) == pytest.approx(1.0)


def test_stretched_schedule_for_more_epochs_continues_without_rewarming():
    old = LRSchedule(total_steps=100, warmup_steps=10, max_lr=1.0, min_lr=0.1)
    new = LRSchedule(total_steps=200, warmup_steps=10, max_lr=1.0, min_lr=0.1)
    assert old(100) == pytest.approx(0.1)
    assert 0.1 < new(100) < 1.0  # neither stuck at the final LR nor back at the peak
    assert new(200) == pytest.approx(0.1)
    restarted = LRSchedule(total_steps=200, warmup_steps=10, max_lr=1.0, min_lr=0.1, origin=100)
    assert restarted(100) == pytest.approx(0.1) and restarted(109) == pytest.approx(1.0)
    assert LRSchedule.from_state_dict(new.state_dict()) == new


def test_eta_needs_history_and_skips_warmup_and_pauses():
    t = [1000.0]
    clock = EtaClock(skip_first=2, min_samples=3, now=lambda: t[0])
    assert clock.estimate(remaining_steps=100).remaining_s is None  # no history
    for dt in (5.0, 5.0, 1.0, 1.0):  # two slow warm-up steps are skipped
        clock.add_step(dt)
    assert clock.estimate(remaining_steps=100).remaining_s is None  # still too short
    clock.add_step(1.0)
    est = clock.estimate(remaining_steps=100)
    assert est.remaining_s == pytest.approx(100.0)
    assert est.finish_at == pytest.approx(1100.0)
    clock.add_pause(10.0)  # an evaluation: not a step, but counted per remaining pause
    assert clock.estimate(remaining_steps=100, remaining_pauses=2).remaining_s == \
        pytest.approx(120.0)
    for _ in range(100):  # long history: a moving window follows the recent speed
        clock.add_step(2.0)
    assert clock.estimate(remaining_steps=10).remaining_s == pytest.approx(20.0)


def test_eta_formatting_never_crashes():
    assert format_duration(None) == "n/a"
    assert format_duration(float("nan")) == "n/a"
    assert format_duration(-3) == "n/a"
    assert format_duration("junk") == "n/a"
    assert format_duration(42) == "42s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3 * 3600 + 120) == "3h02m"
    assert format_clock(None) == "n/a" and format_clock(float("inf")) == "n/a"
    assert ":" in format_clock(0)
