"""Names are checked whole, and files we write atomically get the modes the umask gives
any other file (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from llm_trainer.errors import UsageError
from llm_trainer.store.models import validate_name
from tests.helpers import run_cli


@pytest.mark.parametrize("name", ["x\n", "ok\n"])
def test_a_name_with_a_trailing_control_character_is_refused(name):
    with pytest.raises(UsageError, match="not allowed"):
        validate_name(name)


def test_train_refuses_a_name_ending_in_a_newline(home, corpus):
    proc = run_cli("train", "--name", "x\n", "--dataset", str(corpus), "--dry-run", home=home)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not allowed" in proc.stderr
    assert not (home / "checkpoints" / "x\n").exists()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_model_and_checkpoint_files_follow_the_umask(zoo_copy):
    """model.json, manifest.json, model.safetensors (safetensors writes 0600 itself) and
    state.json are readable by the group and others under the usual 022 umask, as the logs
    beside them are."""
    old = os.umask(0o022)
    os.umask(old)
    expected = 0o666 & ~old
    model = zoo_copy / "checkpoints" / "demo"
    step = sorted(model.glob("step-*"))[-1]
    run = sorted((zoo_copy / "runs").iterdir())[-1]
    for path in (model / "model.json", step / "manifest.json", step / "model.safetensors",
                 step / "optimizer.pt", run / "state.json", run / "meta.json"):
        assert mode(path) == expected, f"{path.name}: {oct(mode(path))}"


def test_exported_files_follow_the_umask(zoo_copy, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("models", "export", "demo", "--out", str(out), "--format", "safetensors",
                   home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = 0o666 & ~_umask()
    assert {p.name: oct(mode(p)) for p in out.iterdir()} == {
        p.name: oct(expected) for p in out.iterdir()}


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old
