"""Training on conversations through the real CLI: the template goes into the checkpoint, the
loss and tokens/s count the trained tokens, `eval` scores the replies, and `generate --chat`
answers with the reply alone."""

from __future__ import annotations

import json
import random

import pytest

from llm_trainer.store.checkpoints import resolve_checkpoint
from llm_trainer.store.runs import RunStore
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # real training processes


def _tasks(path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            w = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 6)))
            fh.write(json.dumps({"conversations": [
                {"from": "human", "value": f"reverse: {w}"},
                {"from": "gpt", "value": w[::-1]}]}) + "\n")


def test_train_on_chat_data_then_eval_and_generate_chat(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    _tasks(home / "tasks.jsonl", 400)
    tiny = ("--preset", "tiny", "--seq-len", "64", "--max-steps", "30", "--sample", "0",
            "--batch-size", "8")
    out = run_cli("train", "--foreground", *tiny, "--dataset", "tasks.jsonl", "--name", "c",
                  home=home, check=True)
    assert "conversations (sharegpt format, chatml template)" in out.stdout
    assert "trained tokens" in out.stdout
    ckpt = resolve_checkpoint(home / "checkpoints" / "c")
    config = json.loads((ckpt.path / "config.json").read_text())
    assert config["chat"]["kind"] == "chatml" and "<|im_start|>" in config["chat"]["template"]
    store = RunStore(home)
    run = store.paths(store.run_ids()[0])
    metrics = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    rates = [m["tokens_per_s"] for m in metrics if m.get("tokens_per_s")]
    assert rates  # the trained tokens: far fewer than 8 x 64 per step
    scored = json.loads(run_cli("eval", "c", "--json", home=home, check=True).stdout)
    assert any("the loss is over the assistant replies" in n for n in scored["notes"])
    assert 0 < scored["tokens"] < scored["windows"] * 64 / 2

    run_cli("train", "--foreground", *tiny, "--dataset", "tasks.jsonl", "--name", "all",
            "--loss-on", "all", home=home, check=True)
    every = json.loads(run_cli("eval", "all", "--json", home=home, check=True).stdout)
    assert every["tokens"] > 2 * scored["tokens"]  # every token of the conversations
    assert any("whole conversations" in n for n in every["notes"])

    reply = run_cli("generate", "--chat", "--model", "c", "--prompt", "reverse: abc",
                    "--temperature", "0", "--max-new-tokens", "12", home=home, check=True)
    assert "<|im_" not in reply.stdout and "user" not in reply.stdout


def test_a_text_model_has_no_chat(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "t.txt").write_text("hello world\n\n" * 400)
    run_cli("train", "--foreground", "--preset", "tiny", "--max-steps", "5", "--sample", "0",
            "--dataset", "t.txt", "--name", "t", home=home, check=True)
    out = run_cli("generate", "--chat", "--model", "t", "--prompt", "hi", home=home)
    assert out.returncode != 0 and "chat template" in out.stderr
