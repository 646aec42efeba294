"""`llm-trainer eval` through the real command line."""

import json
import math
import subprocess
import sys

import pytest

from llm_trainer.cli import main
from llm_trainer.data.sources import paragraphs
from tests.helpers import corpus_text, run_cli

KEYS = {"model", "checkpoint", "step", "dataset", "dataset_description", "split",
        "split_source", "tokenizer", "tokens", "windows", "bytes", "nats", "loss", "perplexity",
        "bits_per_byte", "block_size", "batch_size", "device", "dtype", "seconds", "notes"}


@pytest.fixture
def trained(zoo_copy):
    """A home with model demo: the tiny preset's char tokenizer, 10 steps on one.txt."""
    return zoo_copy


def eval_json(home, *args):
    proc = run_cli("eval", *args, "--json", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_eval_by_name_and_by_checkpoint_path(trained):
    proc = run_cli("eval", "demo", home=trained)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("model:          demo (step 10, ")
    assert "split val (held out" in lines[1]
    for label in ("tokens scored:", "loss:", "perplexity:", "bits per byte:", "time:"):
        assert any(line.startswith(label) for line in lines), proc.stdout

    by_name = eval_json(trained, "demo")
    assert set(by_name) == KEYS
    assert by_name["step"] == 10 and by_name["split"] == "val" and by_name["dtype"] == "float32"
    # ASCII: a token per byte, and a separator (no bytes) after each paragraph
    assert by_name["tokenizer"] == "char"
    assert 0 < by_name["tokens"] - by_name["bytes"] < by_name["tokens"] / 20
    assert math.isclose(by_name["perplexity"], math.exp(by_name["loss"]))
    assert math.isclose(by_name["bits_per_byte"],
                        by_name["nats"] / math.log(2) / by_name["bytes"])
    path = by_name["checkpoint"]
    by_path = eval_json(trained, path, "--batch-size", "3")
    assert by_path["checkpoint"] == path and by_path["model"] == "demo"
    assert by_path["tokens"] == by_name["tokens"] and by_path["batch_size"] == 3
    assert math.isclose(by_path["loss"], by_name["loss"], rel_tol=1e-5)


@pytest.mark.slow
def test_eval_splits_and_other_datasets(trained):
    proc = run_cli("eval", "demo", "--split", "test", home=trained)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: one.txt has no test split; its splits are train and "
                                  "val (held out")
    assert len(proc.stderr.splitlines()) == 2 and "hint: use --split val" in proc.stderr

    folder = trained / "parts"
    folder.mkdir()
    for name, seed in (("train.txt", 2), ("valid.txt", 3), ("test.txt", 4)):
        (folder / name).write_text(corpus_text(3_000, seed=seed))
    test = eval_json(trained, "demo", "--dataset", str(folder), "--split", "test")
    val = eval_json(trained, "demo", "--dataset", str(folder))
    assert (test["split"], test["split_source"]) == ("test", "split")
    assert test["tokens"] == char_tokens(corpus_text(3_000, seed=4)) - 1
    assert val["tokens"] == char_tokens(corpus_text(3_000, seed=3)) - 1
    assert val["loss"] != test["loss"]


def char_tokens(text: str) -> int:
    """Tokens of a text for a char model: each paragraph's characters, then its separator."""
    docs = [d.text for d in paragraphs([text]) if d.text.strip()]
    return sum(map(len, docs)) + len(docs)


def test_eval_errors_are_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    proc = run_cli("eval", "nope", home=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no model named 'nope'")
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr

    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))  # the same entry point, in-process
    gone = str(tmp_path / "gone" / "step-00000001")
    assert main(["eval", gone, "--split", "train"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown split 'train'\nhint: use --split")
    assert main(["eval", gone]) == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {gone!r} not found\nhint:")
    assert main(["eval", "nope", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_eval_is_listed_and_its_help_does_not_import_torch(tmp_path):
    assert "eval" in run_cli("--help", home=tmp_path).stdout
    code = ("import sys\nfrom llm_trainer.cli import main\ncode = main(['eval', '--help'])\n"
            "print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "--split" in out and "--json" in out and out.strip().endswith("0 False")
