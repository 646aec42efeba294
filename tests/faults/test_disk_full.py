"""A full disk is a normal event: a save that fails on ENOSPC says so in one line, names the
checkpoint that is still intact, and leaves nothing behind that keeps the disk full.

ENOSPC is faked by making a write raise it (a test machine's disk is not full); where a tmpfs
can be mounted (root), a real full filesystem is used too."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from llm_trainer.store.checkpoints import STAGING_PREFIX, inspect_checkpoint, list_checkpoints
from llm_trainer.store.runs import RunStore
from tests.helpers import TINY, run_cli

EVERY_STEP = ("--set", "train.checkpoint_interval=1", "--set", "train.eval_interval=0")


def only_run(home: Path):
    runs = RunStore(home)
    (run_id,) = runs.run_ids()
    return runs.read_state(run_id)


def leftovers(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.glob(f"{STAGING_PREFIX}*"))


@pytest.mark.slow  # trains a tiny model
def test_checkpoint_save_on_a_full_disk_fails_the_run_in_plain_words(home, corpus,
                                                                     monkeypatch):
    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):  # the disk fills up while step 3 is written
        if "step-00000003" in str(f):
            Path(f).write_bytes(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    proc = run_cli("train", *TINY, "--foreground", "--sample", "0", "--dataset", str(corpus),
                   "--name", "full", "--max-steps", "5", *EVERY_STEP, home=home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    state = only_run(home)
    model_dir = home / "checkpoints" / "full"
    assert state.status == "failed"
    assert state.error.startswith(
        f"disk full while saving step 3 at {model_dir / 'step-00000003'}; the previous "
        "checkpoint step 2 is intact"), state.error
    assert "internal error" not in state.error
    assert leftovers(model_dir) == []  # removed at once: it is what filled the disk
    ckpts = list_checkpoints(model_dir, verify=True)
    assert [c.step for c in ckpts] == [1, 2] and all(c.valid for c in ckpts)


def test_base_weights_save_on_a_full_disk_leaves_no_staging(tmp_path, monkeypatch):
    """The same rule for a LoRA model's base weights (``save_base``)."""
    import safetensors.torch

    from llm_trainer.checkpoint_io import save_base
    from llm_trainer.errors import DiskFullError

    def save_model(model, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 100)
        raise RuntimeError("Error while serializing: I/O error: No space left on device "
                           "(os error 28)")  # what safetensors raises

    monkeypatch.setattr(safetensors.torch, "save_model", save_model)
    model_dir = tmp_path / "m"
    with pytest.raises(DiskFullError, match=r"^disk full while saving the base weights at "):
        save_base(model_dir, model=None, config=None, shape=None, tokenizer=None, source="x")
    assert leftovers(model_dir) == []


def can_mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(where)],
                          capture_output=True)
    return proc.returncode == 0


@pytest.mark.slow
def test_a_real_full_disk_fails_the_run_in_plain_words(home, corpus):
    """torch.save on a really full filesystem says only "[enforce fail at
    inline_container.cc:672] . unexpected pos": the free space tells what happened. The
    models' folder is a 6 MiB tmpfs that the test fills once the first checkpoint is
    saved, up to a little room that small writes (model.json) fit in."""
    checkpoints = home / "checkpoints"
    if not can_mount_tmpfs(checkpoints):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_trainer", "train", *TINY, "--foreground", "--sample",
             "0", "--dataset", str(corpus), "--name", "full", "--max-steps", "400",
             *EVERY_STEP], cwd=home, env={**os.environ, "LLM_TRAINER_HOME": str(home)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        model_dir = checkpoints / "full"
        from tests.helpers import wait_for

        wait_for(lambda: list(model_dir.glob("step-*/manifest.json")), timeout=60)
        filler = checkpoints / f"filler-{uuid.uuid4().hex}"
        with open(filler, "wb") as fh, pytest.raises(OSError):
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        # room for model.json's small writes, not for a checkpoint
        os.truncate(filler, filler.stat().st_size - (64 << 10))
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, out
        state = only_run(home)
        assert state.status == "failed"
        assert state.error.startswith("disk full while saving step "), state.error
        assert "is intact" in state.error
        assert leftovers(model_dir) == []
        good = [c for c in list_checkpoints(model_dir) if c.valid]
        assert good and inspect_checkpoint(good[-1].path, verify=True).valid
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["umount", "-l", str(checkpoints)], check=False)
