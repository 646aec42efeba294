"""`models export` on a full disk leaves nothing half-written, so that a retry works; it never
writes into a model's own folders."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from llm_trainer.store.checkpoints import list_checkpoints
from tests.helpers import run_cli


def fail_writes_of(monkeypatch, module, name: str, after_bytes: int = 1000) -> None:
    """``module.name(tensors, filename, ...)`` writes a truncated file, then the disk is
    full (as safetensors' writer meets it)."""
    def write(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * after_bytes)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(module, name, write)


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_a_failed_hf_export_leaves_nothing_and_a_retry_works(zoo_copy, tmp_path,
                                                             monkeypatch):
    import safetensors.torch

    out = tmp_path / "exports" / "demo-hf"
    with monkeypatch.context() as m:
        fail_writes_of(m, safetensors.torch, "save_file")
        proc = run_cli("models", "export", "demo", "--out", str(out), home=zoo_copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"error: disk full while exporting to {out}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # no 0-byte config.json, no truncated model.safetensors
    assert os.listdir(out.parent) == []  # and no staging folder beside it
    proc = run_cli("models", "export", "demo", "--out", str(out), home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "model.safetensors").stat().st_size > 1000


def test_a_failed_forced_export_keeps_the_previous_files(zoo_copy, tmp_path, monkeypatch):
    import safetensors.torch

    out = tmp_path / "demo-hf"
    assert run_cli("models", "export", "demo", "--out", str(out), home=zoo_copy).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as m:
        fail_writes_of(m, safetensors.torch, "save_file")
        proc = run_cli("models", "export", "demo", "--out", str(out), "--force", home=zoo_copy)
    assert proc.returncode == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["demo-hf", "zoo"]


@pytest.mark.parametrize("where", ["checkpoint", "model", "other-model", "models"])
def test_export_into_a_models_folder_is_refused(zoo_copy, where):
    model = zoo_copy / "checkpoints" / "demo"
    step = list_checkpoints(model)[-1].path
    out = {"checkpoint": step, "model": model, "other-model": zoo_copy / "checkpoints" / "bpe",
           "models": zoo_copy / "checkpoints"}[where]
    before = sorted(p.name for p in out.iterdir())
    for fmt in ("hf", "safetensors"):
        proc = run_cli("models", "export", "demo", "--out", str(out), "--format", fmt,
                       "--force", home=zoo_copy)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "inside the models' folder" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == before
    assert list_checkpoints(model, verify=True)[-1].valid
