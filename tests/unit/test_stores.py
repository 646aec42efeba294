"""Run and model stores: ids, atomic JSON, liveness, names, locks."""

import json
import os
import subprocess
import sys
import time

import pytest

from llm_trainer.errors import NotFoundError, UnreadableRecord, UsageError
from llm_trainer.launcher import process_alive, process_start_time
from llm_trainer.store.atomic import (
    atomic_write_json,
    read_json,
    read_jsonl,
    read_jsonl_lines,
    read_record,
)
from llm_trainer.store.locks import LOCK_FD_ENV, LockHeld, ModelLock, lock_holder
from llm_trainer.store.models import ModelStore, validate_name
from llm_trainer.store.records import RunMeta, RunState
from llm_trainer.store.runs import RunStore


def test_run_ids_are_readable_sortable_and_unique(tmp_path):
    store = RunStore(tmp_path)
    t = time.mktime((2026, 11, 23, 14, 25, 1, 0, 0, -1))
    a = store.new_run_id("shakespeare", now=t)
    b = store.new_run_id("shakespeare", now=t)
    assert a == "20261123-142501-shakespeare" and b == "20261123-142501-shakespeare-2"
    store.create(RunMeta(run_id=a), RunState(run_id=a))
    store.create(RunMeta(run_id=b), RunState(run_id=b))
    assert store.run_ids() == [b, a]
    assert store.require("20261123-142501-shakespeare-") == b


def test_atomic_json_carries_schema_version_and_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "s.json", {"a": 1})
    assert json.loads((tmp_path / "s.json").read_text()) == {"schema_version": 1, "a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text('{"a": ')
    assert read_json(tmp_path / "torn.json") is None


def test_metrics_reader_skips_a_torn_last_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [1, 2]


def test_read_record_says_why_a_record_cannot_be_read(tmp_path):
    assert read_record(tmp_path / "missing.json") is None
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    (tmp_path / "torn.json").write_text('{"a": ')
    (tmp_path / "list.json").write_text("[1]")
    for name, reason in (("folder.json", "is a folder, not a file"),
                         ("latin1.json", "not UTF-8 text (byte 7)"),
                         ("torn.json", "not valid JSON"), ("list.json", "not a JSON object")):
        with pytest.raises(UnreadableRecord) as exc:
            read_record(tmp_path / name)
        assert exc.value.reason.startswith(reason) and exc.value.path.endswith(name)
        assert read_json(tmp_path / name) is None  # the lenient reader: absent or damaged


def test_jsonl_lines_are_read_one_by_one_and_bad_ones_counted(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n\xff\n[2]\n{"step": "x"}\n\n{"step": 3}\n{"st')
    lines = read_jsonl_lines(path, check=lambda r: isinstance(r.get("step"), int))
    assert [r["step"] for r in lines.records] == [1, 3]
    assert lines.bad == 3  # not UTF-8, not an object, refused; the line being written is not
    assert read_jsonl_lines(path, tail=1).records == [{"step": 3}]


def test_liveness_uses_pid_and_start_time():
    me = os.getpid()
    assert process_alive(me, process_start_time(me))
    assert not process_alive(me, process_start_time(me) - 100)  # a reused pid: not ours
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid, None)
    assert not process_alive(None, None)


@pytest.mark.parametrize("name", ["", " ", "../x", "a/b", ".hidden", "x" * 200, "[bold]x[/]",
                                  "a b", "dä", "a\\b", "..", "x..y"])
def test_bad_model_names_are_refused_with_a_reason(name):
    with pytest.raises(UsageError) as info:
        validate_name(name)
    assert info.value.hint


@pytest.mark.parametrize("name", ["shakespeare", "gpt-2_small.v1", "A", "x" * 64])
def test_good_model_names(name):
    assert validate_name(name) == name


def test_model_create_collisions_and_default_names(tmp_path):
    store = ModelStore(tmp_path)
    a = store.create(None, default_base="wikitext-2-small")
    b = store.create(None, default_base="wikitext-2-small")
    assert (a.name, b.name) == ("wikitext-2-small-1", "wikitext-2-small-2")
    store.create("mine", default_base="x")
    with pytest.raises(UsageError, match="already exists"):
        store.create("mine", default_base="x")
    with pytest.raises(NotFoundError, match="no model named 'mien'") as info:
        store.get("mien")
    assert "mine" in info.value.hint


def test_rename_keeps_the_id_and_moves_the_folder(tmp_path):
    store = ModelStore(tmp_path)
    rec = store.create("old", default_base="x")
    store.set_active("old")
    renamed = store.rename("old", "new")
    assert renamed.id == rec.id and not (tmp_path / "checkpoints" / "old").exists()
    assert store.active().name == "new"
    store.create("taken", default_base="x")
    with pytest.raises(UsageError, match="already exists") as taken:
        store.rename("new", "taken")
    assert "delete" not in taken.value.hint  # freeing a name is no reason to lose a model
    assert "rename" in taken.value.hint


def test_delete_stays_inside_the_model_folder(tmp_path):
    store = ModelStore(tmp_path)
    store.create("a", default_base="x")
    keep = tmp_path / "checkpoints" / "b"
    store.create("b", default_base="x")
    (tmp_path / "outside.txt").write_text("keep me")
    store.delete("a")
    assert not (tmp_path / "checkpoints" / "a").exists()
    assert keep.exists() and (tmp_path / "outside.txt").exists()


def test_training_lock_is_exclusive_and_names_its_holder(tmp_path):
    d = tmp_path / "m"
    with ModelLock.acquire(d, run_id="run-1"):
        with pytest.raises(LockHeld) as held:
            ModelLock.acquire(d, run_id="run-2")
        assert held.value.holder["run_id"] == "run-1" and lock_holder(d) == "run-1"
    with ModelLock.acquire(d, run_id="run-2"):  # released: free again
        assert lock_holder(d) == "run-2"


def test_a_handed_over_lock_lives_as_long_as_the_child_and_no_longer(tmp_path):
    """The launcher's hand-over: the child inherits the descriptor, the parent lets go, and the
    kernel frees the lock when the child dies (kill -9 included)."""
    d = tmp_path / "m"
    lock = ModelLock.acquire(d, run_id="run-1")
    child = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         "from pathlib import Path\n"
         "from llm_trainer.store.locks import ModelLock\n"
         "lock = ModelLock.adopt(Path(sys.argv[1]))\n"
         "print('adopted' if lock else 'none', flush=True)\n"
         "time.sleep(60)\n", str(d)],
        stdout=subprocess.PIPE, text=True, pass_fds=(lock.fd,),
        env={**os.environ, LOCK_FD_ENV: str(lock.fd)})
    try:
        assert child.stdout.readline().strip() == "adopted"
        lock.release()
        with pytest.raises(LockHeld):  # the child holds it now
            ModelLock.acquire(d, run_id="run-2")
        child.kill()
        child.wait()
        ModelLock.acquire(d, run_id="run-2").release()  # at once: no stale lock
    finally:
        child.kill()
        child.wait()


def test_a_lock_whose_holder_has_died_is_waited_for_while_the_kernel_frees_it(tmp_path):
    """kill -9 of a many-threaded rank: its pid is gone (or a zombie) a moment before its last
    thread lets go of the lock. A launch then waits for it; a live holder is refused at once."""
    import threading

    d = tmp_path / "m"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    lock = ModelLock.acquire(d, run_id="run-1")
    lock.record(run_id="run-1", pid=int(dead.stdout))  # its holder has exited
    threading.Timer(0.4, lock.release).start()  # ... and the kernel frees the lock later
    start = time.monotonic()
    ModelLock.acquire(d, run_id="run-2").release()
    assert 0.3 < time.monotonic() - start < 4.0

    with ModelLock.acquire(d, run_id="run-3"):  # this process, alive, holds it
        start = time.monotonic()
        with pytest.raises(LockHeld):
            ModelLock.acquire(d, run_id="run-4")
        assert time.monotonic() - start < 0.3


def test_adopt_ignores_a_descriptor_that_is_not_this_lock(tmp_path, monkeypatch):
    other = open(tmp_path / "other.txt", "w")  # noqa: SIM115
    monkeypatch.setenv(LOCK_FD_ENV, str(other.fileno()))
    (tmp_path / "m").mkdir()
    ModelLock.acquire(tmp_path / "m", run_id="r").release()
    assert ModelLock.adopt(tmp_path / "m") is None
    other.close()
