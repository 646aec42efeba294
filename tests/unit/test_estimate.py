"""The pre-launch estimate: formulas, the automatic micro-batch (CUDA paths with a fake
out-of-memory), and the in-run check of the estimate."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from llm_trainer.data.batches import BatchPlan
from llm_trainer.training import estimate as est
from llm_trainer.training.state import TrainState


def test_candidates_halve_and_divide_the_global_batch():
    assert est.micro_batch_candidates(64) == [64, 32, 16, 8, 4, 2, 1]
    assert est.micro_batch_candidates(12) == [12, 6, 3, 1]
    assert est.micro_batch_candidates(1) == [1]
    for g in range(1, 50):
        assert all(g % b == 0 for b in est.micro_batch_candidates(g))


def _mem(**kw):
    args = dict(params=1000, trainable=1000, batch=4, seq=64, n_layer=2, n_embd=32, n_head=2,
                vocab=100, precision="fp32", dropout=0.0, device_type="cuda")
    return est.memory_estimate(**{**args, **kw})


def test_memory_estimate_terms():
    m = _mem()
    assert (m.weights, m.gradients, m.optimizer) == (4000, 4000, 8000)  # AdamW: 2 fp32 states
    assert m.total == m.weights + m.gradients + m.optimizer + m.activations
    # per layer s*b*h*16e (e=4) + head b*s*V*(e+8) + 3*s*b*h*e, by hand
    sbh = 64 * 4 * 32
    assert m.activations == 2 * sbh * 64 + 4 * 64 * 100 * 12 + 3 * sbh * 4
    assert _mem(batch=8).activations == 2 * m.activations  # linear in the micro-batch
    assert _mem(precision="bf16").activations < m.activations
    assert _mem(trainable=10).optimizer == 80  # frozen weights: no AdamW state
    # the (b, a, s, s) attention scores count only where no fused kernel applies
    assert _mem(device_type="cpu", dropout=0.1).activations > \
        _mem(device_type="cpu", dropout=0.0).activations + 5 * 2 * 64 * 64 * 4 * 2


def test_run_times_and_evaluations():
    assert est.evals_in_run(start_step=0, total_steps=30, eval_interval=10) == 3
    assert est.evals_in_run(start_step=0, total_steps=30, eval_interval=0) == 1
    assert est.evals_in_run(start_step=20, total_steps=45, eval_interval=10) == 3  # 30, 40, 45
    assert est.evals_in_run(start_step=30, total_steps=30, eval_interval=10) == 0
    t = est.run_times(step_time_s=0.5, steps=100, steps_per_epoch=40, eval_time_s=2.0,
                      evals=3)
    assert (t["epoch_time_s"], t["run_time_s"]) == (20.0, 56.0)
    assert est.estimate_error(1.1, 1.0) == pytest.approx(0.1)


def test_cuda_probe_halves_on_out_of_memory(monkeypatch):
    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    calls = []

    def step(b):
        calls.append(b)
        if b > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")

    batch, tried = est.probe_cuda_batch([32, 16, 8, 4, 2, 1], step)
    assert batch == 4 and calls == [32, 16, 8, 4]
    assert [t["fits"] for t in tried] == [False, False, False, True]
    assert len(freed) == 3  # the cache is emptied after every failure

    def never(b):
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        est.probe_cuda_batch([2, 1], never)


def test_cuda_choice_keeps_the_global_batch(monkeypatch):
    """choose_batch's CUDA branch on fake parts: the real steps OOM above 4 sequences."""
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    sizes = []

    @dataclasses.dataclass
    class FakeParts:
        plan: BatchPlan
        state: TrainState
        config = SimpleNamespace(train=SimpleNamespace(batch_size=12, grad_accum=2))
        shape = SimpleNamespace(block_size=16)
        device = SimpleNamespace(type="cuda", device="cuda:0")

        def with_micro_batch(self, batch, accum):
            plan = dataclasses.replace(self.plan, batch_size=batch, grad_accum=accum)
            return dataclasses.replace(self, plan=plan)

        def train_step(self, read):
            sizes.append(self.plan.batch_size)
            self.state.step += 1  # as the real step does
            if self.plan.batch_size > 4:
                raise torch.cuda.OutOfMemoryError("fake")

        def sync(self):
            pass

    parts = FakeParts(BatchPlan(n_tokens=20_000, seq_len=16, batch_size=12, grad_accum=2),
                      TrainState())
    choice, chosen = est.choose_batch(parts)
    assert sizes == [24, 12, 6, 3]  # global batch 24: 24, 12, 6 do not fit, 3 does
    assert (choice.batch_size, choice.grad_accum, choice.global_batch) == (3, 8, 24)
    assert choice.method == "cuda probe"
    assert (chosen.plan.batch_size, chosen.plan.grad_accum) == (3, 8)
    assert chosen.state.step == 0  # the probe steps do not count


def test_cpu_pick_fits_memory_then_wants_real_speedups():
    mem = {8: 900, 4: 500, 2: 300, 1: 200}
    rates = {4: 100.0, 2: 99.0, 1: 60.0}
    measured = []

    def rate(b):
        measured.append(b)
        return rates[b]

    # 8 does not fit 80% of 1000; 4 is not 5% faster than 2; 2 is faster than 1: pick 2
    batch, tried = est.pick_cpu_batch([8, 4, 2, 1], memory_for=mem.get, available=1000,
                                      tokens_per_s=rate)
    assert batch == 2 and measured == [4, 2, 1]
    assert tried[0] == {"batch_size": 8, "memory_bytes": 900, "fits": False}
    # the largest wins when it is clearly faster
    rates[4] = 200.0
    measured.clear()
    assert est.pick_cpu_batch([8, 4, 2, 1], memory_for=mem.get, available=1000,
                              tokens_per_s=rate)[0] == 4
    assert measured == [4, 2]
    # nothing fits: the smallest, unmeasured
    assert est.pick_cpu_batch([2, 1], memory_for=lambda b: 10**12, available=1000,
                              tokens_per_s=rate)[0] == 1


def test_measure_step_time_skips_warmup():
    ticks = iter(range(1000))
    trainer = SimpleNamespace(train_step=lambda read: None, sync=lambda: None)
    # each clock() call advances 1 s: per timed step two reads (before and after)
    t = est.measure_step_time(trainer, warmup=2, timed=5, clock=lambda: float(next(ticks)))
    assert t == pytest.approx(11 / 5)  # start + 2 per step, read at the end
    ticks = iter(range(1000))
    assert est.measure_step_time(trainer, warmup=0, timed=3, median=True,
                                 clock=lambda: float(next(ticks))) == 1.0


def test_short_steps_are_timed_for_at_least_min_seconds():
    ticks = iter(range(10_000))
    trainer = SimpleNamespace(train_step=lambda read: None, sync=lambda: None)
    times, total = est.time_steps(trainer, warmup=1, timed=2, min_seconds=20.0,
                                  clock=lambda: float(next(ticks)))
    assert len(times) > 2 and total >= 20.0 and all(t == 1.0 for t in times)
    ticks = iter(range(10_000))
    times, _ = est.time_steps(trainer, warmup=0, timed=2, min_seconds=1e9, max_steps=7,
                              clock=lambda: float(next(ticks)))
    assert len(times) == 7  # capped


def _trainer(total_steps: int, steps_per_epoch: int) -> SimpleNamespace:
    return SimpleNamespace(train_time=0.0, total_steps=total_steps, parts=SimpleNamespace(
        plan=SimpleNamespace(steps_per_epoch=steps_per_epoch)))


def test_estimate_check_records_the_estimate_and_its_error():
    reports = []
    check = est.EstimateCheck(lambda **kw: reports.append(kw), warmup=2, timed=5,
                              min_seconds=0.0)
    trainer = _trainer(110, 50)
    check.on_start(trainer, SimpleNamespace(start_step=10))
    for step in range(11, 111):
        trainer.train_time += 1.0 if step <= 17 else 1.5  # slower after the estimate
        check.on_step_end(trainer, SimpleNamespace(step=step))
    [first] = reports
    assert first["estimate"]["step_time_s"] == pytest.approx(1.0)
    assert first["estimate"]["train_time_s"] == pytest.approx(100.0)
    assert first["estimate"]["epoch_time_s"] == pytest.approx(50.0)
    check.on_end(trainer, SimpleNamespace(step=110))
    actual = (7 * 1.0 + 93 * 1.5) / 100
    assert reports[1]["actual_step_time_s"] == pytest.approx(actual)
    assert reports[1]["estimate_error"] == pytest.approx(actual / 1.0 - 1)


def test_estimate_check_without_enough_steps_records_nothing():
    reports = []
    check = est.EstimateCheck(lambda **kw: reports.append(kw))
    trainer = _trainer(4, 4)
    check.on_start(trainer, SimpleNamespace(start_step=0))
    for step in range(1, 5):
        trainer.train_time += 1.0
        check.on_step_end(trainer, SimpleNamespace(step=step))
    check.on_end(trainer, SimpleNamespace(step=4))
    check.on_end(trainer, None)
    assert reports == []


def test_estimate_check_times_at_least_min_seconds():
    reports = []
    check = est.EstimateCheck(lambda **kw: reports.append(kw), warmup=2, timed=5,
                              min_seconds=7.5)
    trainer = _trainer(50, 50)
    check.on_start(trainer, SimpleNamespace(start_step=0))
    for step in range(1, 51):
        trainer.train_time += 1.0
        check.on_step_end(trainer, SimpleNamespace(step=step))
    assert reports[0]["estimate"]["timed_steps"] == 8  # 1 s steps: 8 to pass 7.5 s
