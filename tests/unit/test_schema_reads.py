"""Every versioned file is read through its schema: a checkpoint's manifest.json and
config.json and a run's control.json carry ``schema_version``; an older file is read (and
migrated), a newer one is refused in one line instead of being misread."""

from __future__ import annotations

import json

import pytest
import torch

from llm_trainer.checkpoint_io import read_checkpoint, save_checkpoint
from llm_trainer.config import RunConfig
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import NotFoundError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from llm_trainer.store.checkpoints import (
    CHECKPOINT_CONFIG_SCHEMA,
    MANIFEST_SCHEMA,
    inspect_checkpoint,
    sha256_file,
)
from llm_trainer.store.runs import CONTROL_SCHEMA, RunStore
from llm_trainer.store.schema import SchemaError

SHAPE = ModelShape(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16)


def _checkpoint(tmp_path):
    model = GPT(SHAPE)
    return save_checkpoint(tmp_path, model=model,
                           optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                           trainer_state={"step": 1, "schedule": {}}, config=RunConfig(),
                           shape=SHAPE, tokenizer=TextTokenizer.build_byte(), step=1,
                           epoch=0.1, val_loss=None)


def _rewrite(path, change):
    """Edit a JSON file and (for config.json) keep the manifest's hash of it true."""
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))
    manifest_path = path.parent / "manifest.json"
    if path != manifest_path:
        manifest = json.loads(manifest_path.read_text())
        manifest["files"][path.name] = {"sha256": sha256_file(path),
                                        "bytes": path.stat().st_size}
        manifest_path.write_text(json.dumps(manifest))


def test_checkpoint_files_carry_their_schema_version(tmp_path):
    path = _checkpoint(tmp_path)
    assert json.loads((path / "manifest.json").read_text())["schema_version"] == \
        MANIFEST_SCHEMA
    assert json.loads((path / "config.json").read_text())["schema_version"] == \
        CHECKPOINT_CONFIG_SCHEMA
    assert read_checkpoint(path).shape == SHAPE


def test_a_config_json_of_the_first_release_still_reads(tmp_path):
    path = _checkpoint(tmp_path)
    _rewrite(path / "config.json", lambda d: {k: v for k, v in d.items()
                                              if k != "schema_version"})
    assert read_checkpoint(path).shape == SHAPE


def test_a_newer_manifest_makes_the_checkpoint_unusable_with_a_reason(tmp_path):
    path = _checkpoint(tmp_path)
    _rewrite(path / "manifest.json", lambda d: {**d, "schema_version": MANIFEST_SCHEMA + 1})
    info = inspect_checkpoint(path)
    assert not info.valid and "newer llm-trainer" in info.problem
    with pytest.raises(NotFoundError, match="newer llm-trainer"):
        read_checkpoint(path)


def test_a_newer_checkpoint_config_is_refused(tmp_path):
    path = _checkpoint(tmp_path)
    _rewrite(path / "config.json",
             lambda d: {**d, "schema_version": CHECKPOINT_CONFIG_SCHEMA + 1})
    with pytest.raises(SchemaError, match="config.json was written by a newer llm-trainer"):
        read_checkpoint(path)


def test_control_json_is_versioned_and_a_newer_one_refused(tmp_path):
    runs = RunStore(tmp_path)
    runs.paths("r1").dir.mkdir(parents=True)
    assert runs.read_control("r1") == {}
    runs.write_control("r1", stop="now", requested_at=1.0)
    assert runs.read_control("r1")["stop"] == "now"
    control = runs.paths("r1").control
    assert json.loads(control.read_text())["schema_version"] == CONTROL_SCHEMA
    control.write_text(json.dumps({"run_id": "r1", "stop": "now"}))  # no version: the first
    assert runs.read_control("r1")["stop"] == "now"
    control.write_text(json.dumps({"schema_version": CONTROL_SCHEMA + 1, "stop": "now"}))
    with pytest.raises(SchemaError, match="newer llm-trainer"):
        runs.read_control("r1")
