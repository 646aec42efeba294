import numpy as np
import pytest

from llm_trainer.data.batches import Batches, BatchPlan, DataPosition, eval_windows
from llm_trainer.errors import DataError

TOKENS = np.arange(10_000, dtype=np.uint16)  # token i == position i: windows are easy to check


def test_shapes_and_next_token_targets():
    plan = BatchPlan(n_tokens=len(TOKENS), seq_len=16, batch_size=4, seed=1)
    x, y = Batches(TOKENS, plan).get(DataPosition())
    assert x.shape == (4, 16) and y.shape == (4, 16)
    assert x.dtype == np.int64
    assert (y == x + 1).all()  # targets are the inputs shifted by one


def test_seeded_determinism():
    plan = BatchPlan(n_tokens=len(TOKENS), seq_len=16, batch_size=4, seed=7)
    a = Batches(TOKENS, plan).get(DataPosition(2, 40))
    b = Batches(TOKENS, plan).get(DataPosition(2, 40))
    assert (a[0] == b[0]).all()
    other = Batches(TOKENS, BatchPlan(n_tokens=len(TOKENS), seq_len=16, batch_size=4, seed=8))
    assert not (other.get(DataPosition(2, 40))[0] == a[0]).all()


def test_one_epoch_visits_every_window_once():
    plan = BatchPlan(n_tokens=len(TOKENS), seq_len=16, batch_size=4, seed=3)
    batches, pos = Batches(TOKENS, plan), DataPosition()
    starts = []
    for _ in range(plan.steps_per_epoch):
        x, _ = batches.get(pos)
        starts += x[:, 0].tolist()
        pos.advance(plan)
    assert pos.epoch == 1 and pos.cursor == 0
    assert len(starts) == len(set(starts)) == plan.steps_per_epoch * 4
    assert len({s % 16 for s in starts}) == 1  # one shift per epoch, non-overlapping windows


def test_data_parallel_ranks_see_the_same_windows_as_accumulation():
    single = BatchPlan(n_tokens=len(TOKENS), seq_len=16, batch_size=4, grad_accum=2, seed=5)
    double = BatchPlan(n_tokens=len(TOKENS), seq_len=16, batch_size=4, grad_accum=1,
                       world_size=2, seed=5)
    assert single.steps_per_epoch == double.steps_per_epoch
    pos = DataPosition(0, single.seqs_per_step * 3)
    one = Batches(TOKENS, single)
    ranks = [Batches(TOKENS, double, rank=r) for r in range(2)]
    for micro, rank in ((0, 0), (1, 1)):
        assert (one.get(pos, micro)[0] == ranks[rank].get(pos)[0]).all()


def test_too_little_data_is_an_actionable_error():
    with pytest.raises(DataError, match="has 100 tokens; one step needs") as info:
        BatchPlan(n_tokens=100, seq_len=32, batch_size=8).check()
    assert "lower --batch-size or --seq-len" in info.value.hint


def test_eval_windows_are_fixed():
    val = np.arange(1000, dtype=np.uint16)
    a = [x for x, _ in eval_windows(val, 16, 4, 3)]
    b = [x for x, _ in eval_windows(val, 16, 4, 3)]
    assert len(a) == 3 and all((p == q).all() for p, q in zip(a, b, strict=True))
    with pytest.raises(DataError, match="validation split"):
        list(eval_windows(np.arange(10, dtype=np.uint16), 16, 4, 3))
