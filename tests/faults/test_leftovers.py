"""What a killed writer leaves in a model's folder is cleaned up as soon as someone looks:
staging folders of dead processes at the next save and by `models list` / `models show`,
and step folders a kill left half-deleted (no manifest) without calling the model
corrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from llm_trainer.store.checkpoints import STAGING_PREFIX, list_checkpoints, new_staging_dir
from tests.helpers import TINY, run_cli


def killed_writer(model_dir, step: int, megabytes: int = 2):
    """A real process that started a checkpoint of ``step`` in ``model_dir`` (a staging
    folder with a partly written file) and was killed with SIGKILL."""
    staging = killed_while(f"""
        staging = new_staging_dir(model_dir, {step})
        (staging / "model.safetensors").write_bytes(b"\\0" * ({megabytes} << 20))
        print(staging, flush=True)
        time.sleep(60)
    """, model_dir)
    assert os.path.isdir(staging)
    return staging


def killed_while(code: str, model_dir) -> str:
    """Run ``code`` (with ``model_dir`` set) in a real process, kill it with SIGKILL once it
    has printed a line; that line."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from llm_trainer.store.atomic import atomic_open
        from llm_trainer.store.checkpoints import new_staging_dir
        model_dir = Path({str(model_dir)!r})
    """) + textwrap.dedent(code)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    line = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert line
    return line


def staging_dirs(model_dir) -> list[str]:
    return sorted(p.name for p in model_dir.glob(f"{STAGING_PREFIX}*"))


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_models_list_and_show_remove_dead_writers_staging_not_live_ones(zoo_copy):
    model = zoo_copy / "checkpoints" / "demo"
    live = new_staging_dir(model, 13)  # this process: a writer still at work
    dead = killed_writer(model, 12)
    assert len(staging_dirs(model)) == 2
    proc = run_cli("models", "list", home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert staging_dirs(model) == [live.name], dead
    killed_writer(model, 14)
    proc = run_cli("models", "show", "demo", home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert staging_dirs(model) == [live.name]
    shutil.rmtree(live)


def test_a_killed_writers_temp_file_is_removed(zoo_copy):
    """A process killed while it wrote model.json leaves its temp file; it goes as its
    staging folders do."""
    model = zoo_copy / "checkpoints" / "demo"
    killed_while("""
        with atomic_open(model_dir / "model.json") as fh:
            fh.write("{")
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    """, model)
    assert len(list(model.glob(".model.json.*.tmp"))) == 1
    proc = run_cli("models", "list", home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(model.glob(".*.tmp")) == []


def test_the_next_save_removes_dead_writers_staging(zoo_copy):
    model = zoo_copy / "checkpoints" / "demo"
    killed_writer(model, 11)
    # a folder named as before the writer's start time was in the name: its pid only
    legacy = model / f"{STAGING_PREFIX}step-00000012-{dead_pid()}"
    legacy.mkdir()
    proc = run_cli("train", *TINY, "--model", "demo", "--foreground", "--sample", "0",
                   "--dataset", "one.txt", "--max-steps", "1", home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert staging_dirs(model) == []


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def half_deleted(model) -> str:
    """An older checkpoint as a kill during pruning leaves it: rmtree took its manifest and
    some files, and its folder's mtime is now the newest."""
    newest = list_checkpoints(model)[-1].path
    old = shutil.copytree(newest, model / "step-00000005")
    (old / "manifest.json").unlink()
    (old / "optimizer.pt").unlink()
    os.utime(old)
    return old.name


def test_a_step_folder_without_manifest_is_an_unfinished_deletion(zoo_copy):
    model = zoo_copy / "checkpoints" / "demo"
    name = half_deleted(model)
    proc = run_cli("models", "list", "--json", home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    views = {m["name"]: m for m in json.loads(proc.stdout)}
    assert views["demo"]["status"] == "ready", views["demo"]
    assert not (model / name).exists()
    assert views["demo"]["checkpoint_count"] == 1


def test_no_warning_for_an_unfinished_deletion_when_the_model_is_used(zoo_copy):
    model = zoo_copy / "checkpoints" / "demo"
    half_deleted(model)
    proc = run_cli("generate", "--model", "demo", "--prompt", "the", "--max-new-tokens", "3",
                   home=zoo_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipping" not in proc.stderr and "warning" not in proc.stderr, proc.stderr


def test_a_staging_folder_of_another_machine_is_left_to_the_age_rule(zoo_copy):
    """A home shared between machines: a writer's pid means nothing on this one, so its
    staging folder is not judged by this machine's processes (only by its age, an hour)."""
    from llm_trainer.store.atomic import writer_tag

    model = zoo_copy / "checkpoints" / "demo"
    host = writer_tag().rsplit("-h", 1)[1]
    other = "000000" if host != "000000" else "111111"
    theirs = model / f"{STAGING_PREFIX}step-00000011-p{dead_pid()}-t1-h{other}"
    theirs.mkdir()
    assert run_cli("models", "list", home=zoo_copy).returncode == 0
    assert theirs.is_dir()
