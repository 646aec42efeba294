"""A run that names no dataset, on a machine where WikiText-2 cannot be had, trains on the
built-in corpus, and its new model is named after that (issue 21, item 7: the demo model was
called ``wikitext-2-default-1`` though it trained on ``builtin:python-docs``). The hub is
unreachable here: the tests run with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import pytest

from llm_trainer.app.planner import TrainRequest
from llm_trainer.service import Service


@pytest.fixture(autouse=True)
def no_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_the_fallback_is_decided_before_the_model_is_named(home):
    plan = Service(home).planner.plan_train(TrainRequest(command=["llm-trainer", "train"]))
    assert plan.config.data.dataset == "builtin:python-docs"
    assert plan.new_model_base == "python-docs-default"
    assert any(n.startswith("WikiText-2 is not available") for n in plan.notes)


def test_a_cached_wikitext_is_left_to_the_worker(home):
    (home / "data" / "hf" / "Salesforce___wikitext").mkdir(parents=True)
    plan = Service(home).planner.plan_train(TrainRequest(command=["llm-trainer", "train"]))
    assert plan.config.data.dataset == "wikitext-2"
    assert plan.new_model_base == "wikitext-2-default" and not plan.notes


def test_a_dataset_the_user_named_is_never_replaced(home):
    req = TrainRequest(sets={"data.dataset": "wikitext-2"}, command=["llm-trainer", "train"])
    plan = Service(home).planner.plan_train(req)
    assert plan.config.data.dataset == "wikitext-2" and plan.dataset_explicit
