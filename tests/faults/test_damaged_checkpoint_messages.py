"""Messages that do not invite data loss: "delete it and train it again" only for a model
that never saved a checkpoint. A model whose checkpoints all fail their checks is told
which files fail, that nothing was deleted, and that --checkpoint picks another."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llm_trainer.store.models import ModelStore
from tests.helpers import run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def v1_home(tmp_path) -> Path:
    """v1model with one checkpoint (step 20)."""
    return Path(shutil.copytree(FIXTURES / "v1-home", tmp_path / "home"))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", [
    ("resume", "v1model", "--more-epochs", "1"),
    # these import torch first: seconds
    pytest.param(("generate", "--model", "v1model", "--prompt", "a"), marks=pytest.mark.slow),
    pytest.param(("models", "export", "v1model", "--out", "out"), marks=pytest.mark.slow)])
def test_every_checkpoint_damaged_names_the_files_and_never_says_delete(v1_home, command):
    flip_a_byte(v1_home / "checkpoints/v1model/step-00000020/model.safetensors")
    proc = run_cli(*command, home=v1_home)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error, hint = proc.stderr.splitlines()[:2]
    assert "every checkpoint it saved fails its check" in error
    assert "step-00000020/model.safetensors does not match its sha256" in error
    assert "--checkpoint" in hint and "nothing was deleted" in hint
    assert "delete" not in proc.stderr.replace("nothing was deleted", "")


def test_a_step_that_is_not_there_lists_the_good_ones(v1_home):
    proc = run_cli("resume", "v1model", "--checkpoint", "5", home=v1_home)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: model v1model has no usable checkpoint at step 5",
        "hint: available steps: 20 (pick one with --checkpoint STEP)"]


def test_only_a_model_that_never_saved_a_checkpoint_is_told_to_delete_it(home):
    ModelStore(home).create("fresh", default_base="x")
    (home / "checkpoints/fresh/step-00000010").mkdir()  # a save cut short: no manifest
    proc = run_cli("resume", "fresh", home=home)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: model fresh has no usable checkpoint: it never saved a checkpoint",
        "hint: its runs ended before saving one: delete it with `llm-trainer models delete "
        "fresh` and train it again"]
