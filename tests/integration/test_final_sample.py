"""The sample at the end of a ``--foreground`` command: the worker writes it from the model
it has in memory (``FinalSample``), and the command prints it without importing torch or
loading the checkpoint; the text is the one the command drew itself before."""

from __future__ import annotations

import os

import pytest

from llm_trainer.config import load_config
from llm_trainer.inference.generate import TextGenerator
from llm_trainer.inference.samples import FINAL_SAMPLE_ENV, FinalSample, final_sample_settings
from llm_trainer.store.checkpoints import resolve_checkpoint
from llm_trainer.store.runs import RunStore
from llm_trainer.training.parts import TrainingJob
from llm_trainer.training.trainer import train
from tests.helpers import TINY, Flag, Recorder, corpus_text, run_cli


def test_the_worker_writes_the_sample_the_command_prints(tmp_path, corpus):
    home = tmp_path / "h"
    home.mkdir()
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--max-steps", "5", "--name",
                   "demo", "--foreground", "--sample", "30", home=home, check=True)
    [run_id] = RunStore(home).run_ids()
    records = RunStore(home).read_samples(run_id)
    assert [r.get("final") for r in records] == [True] and records[0]["step"] == 5
    text = records[0]["text"]
    assert f"--- sample from demo (30 tokens, temperature 0.8) ---\n{text}\n---\n" in proc.stdout
    assert RunStore(home).read_state(run_id).last_sample["final"] is True  # `status` shows it
    # what the command drew itself from the final checkpoint, before the worker did it
    ckpt = resolve_checkpoint(home / "checkpoints" / "demo", "latest").path
    assert ckpt.name == "step-00000005"
    expected = TextGenerator.from_checkpoint(ckpt, "cpu").generate("", final_sample_settings(30))
    assert text == expected and len(text) > 0
    assert FINAL_SAMPLE_ENV not in os.environ  # the request went to that launch only


def test_no_sample_asked_none_written(tmp_path, corpus):
    home = tmp_path / "h"
    home.mkdir()
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--max-steps", "3", "--name",
                   "quiet", "--foreground", "--sample", "0", home=home, check=True)
    [run_id] = RunStore(home).run_ids()
    assert RunStore(home).read_samples(run_id) == []
    assert "--- sample" not in proc.stdout


def test_a_run_that_does_not_complete_gets_no_final_sample(home, corpus):
    cfg = load_config(preset="tiny", overrides={
        "data.dataset": str(corpus), "train.max_steps": 20, "train.log_interval": 1,
        "model.n_embd": 32, "runtime.num_threads": 1})
    flag = Flag()
    rec = Recorder(stop_after=3, flag=flag)
    paused = train(TrainingJob(config=cfg, home=home, model_dir=home / "p", stop=flag),
                   [rec, FinalSample(20)])
    assert paused.status == "paused" and rec.samples == []
    rec = Recorder()
    done = train(TrainingJob(config=cfg, home=home, model_dir=home / "c"), [rec, FinalSample(20)])
    assert done.status == "completed"
    assert [(s["step"], s["prompt"], s["final"]) for s in rec.samples] == [(20, "", True)]


@pytest.mark.slow  # torchrun and two worker processes
def test_several_processes_the_command_samples_itself(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(60_000))
    proc = run_cli("train", *TINY, "--dataset", "corpus.txt", "--max-steps", "4",
                   "--set", "train.eval_interval=0", "--batch-size", "4", "--nproc", "2",
                   "--name", "pair", "--foreground", "--sample", "20", home=home, check=True)
    [run_id] = RunStore(home).run_ids()
    assert RunStore(home).read_samples(run_id) == []  # rank 0 left it to the command
    assert "--- sample from pair (20 tokens, temperature 0.8) ---" in proc.stdout


@pytest.mark.slow  # a training run in process (~4 s)
def test_a_chat_model_samples_a_reply_to_a_held_out_prompt(home, tmp_path):
    """From an empty prompt a chat model writes noise (``aaaa...`` after a good run): its
    sample is the first held-out conversation's prompt and the reply, up to the end of turn."""
    import json

    data = tmp_path / "tasks.jsonl"
    with open(data, "w") as fh:
        for i in range(200):
            word = "abcdefgh"[i % 4:i % 4 + 3 + i % 3]
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"rev: {word}"},
                                              {"role": "assistant",
                                               "content": word[::-1]}]}) + "\n")
    cfg = load_config(preset="tiny", overrides={
        "data.dataset": str(data), "data.tokenizer": "char", "data.val_fraction": 0.1,
        "model.block_size": 32, "model.n_embd": 32, "train.max_steps": 3,
        "train.batch_size": 4, "runtime.num_threads": 1})
    rec = Recorder()
    done = train(TrainingJob(config=cfg, home=home, model_dir=home / "chat"),
                 [rec, FinalSample(40)])
    assert done.status == "completed"
    [sample] = rec.samples
    first_held_out = json.loads(data.read_text().splitlines()[180])["messages"][0]["content"]
    prompt = f"<|im_start|>user\n{first_held_out}<|im_end|>\n<|im_start|>assistant\n"
    assert sample["text"].startswith(prompt)
    reply = sample["text"][len(prompt):]
    assert "<|im_end|>" not in reply and "<|im_start|>" not in reply
