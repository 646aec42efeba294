import json
import shutil

import numpy as np
import pytest
import torch

from llm_trainer.checkpoint_io import (
    capture_rng,
    load_model,
    load_optimizer_state,
    load_rng_state,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from llm_trainer.config import RunConfig
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import NotFoundError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from llm_trainer.store.checkpoints import (
    inspect_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    resolve_checkpoint,
)

SHAPE = ModelShape(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16)


def _trained():
    torch.manual_seed(0)
    model = GPT(SHAPE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 30, (2, 8))
    for _ in range(3):
        model(x, x)[1].backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(model_dir, model, opt, step, val=None):
    return save_checkpoint(model_dir, model=model, optimizer=opt,
                           trainer_state={"step": step, "schedule": {}}, config=RunConfig(),
                           shape=SHAPE, tokenizer=TextTokenizer.build_byte(), step=step,
                           epoch=step / 10, val_loss=val)


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = _trained()
    torch.manual_seed(123)
    np.random.seed(5)
    rng_before = capture_rng()
    path = _save(tmp_path, model, opt, 3)
    after_save = torch.rand(3)  # what the stream gives next, seen from the save point
    np_after = np.random.rand(2)

    ckpt = read_checkpoint(path)
    restored = load_model(ckpt)
    for (n, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), n
    opt2 = torch.optim.AdamW(restored.parameters(), lr=1e-2)
    opt2.load_state_dict(load_optimizer_state(ckpt, "cpu"))
    for s1, s2 in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert torch.equal(s1["exp_avg"], s2["exp_avg"])
        assert torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
    torch.manual_seed(999)
    restore_rng(load_rng_state(ckpt))
    assert torch.equal(torch.rand(3), after_save)
    assert np.array_equal(np.random.rand(2), np_after)
    assert torch.equal(rng_before["torch"], load_rng_state(ckpt)["torch"])
    assert ckpt.tokenizer.vocab_size == 257 and ckpt.shape == SHAPE


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path, model, opt, 3)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "rng.pt",
                                      "trainer.json", "config.json", "tokenizer.json"}
    assert manifest["schema_version"] == 1 and manifest["step"] == 3
    assert not list(tmp_path.glob(".staging-*"))  # nothing left half-written


def test_tampered_checkpoint_is_skipped_and_the_previous_one_loads(tmp_path):
    model, opt = _trained()
    first = _save(tmp_path, model, opt, 10)
    second = _save(tmp_path, model, opt, 20)
    data = bytearray((second / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF  # flip bits in the weights, same size
    (second / "model.safetensors").write_bytes(bytes(data))
    warnings = []
    chosen = resolve_checkpoint(tmp_path, "latest", warn=warnings.append)
    assert chosen.path == first
    assert "model.safetensors does not match its sha256" in warnings[0]
    with pytest.raises(NotFoundError, match="does not match its sha256"):
        read_checkpoint(second)


def test_checkpoint_without_manifest_does_not_exist(tmp_path):
    model, opt = _trained()
    good = _save(tmp_path, model, opt, 10)
    half = _save(tmp_path, model, opt, 20)
    (half / "manifest.json").unlink()  # as if the process died before the manifest
    assert not inspect_checkpoint(half).valid
    assert resolve_checkpoint(tmp_path, "latest").path == good


def test_retention_keeps_latest_best_and_every_n(tmp_path):
    model, opt = _trained()
    vals = {10: 3.0, 20: 1.0, 30: 2.5, 40: 2.6, 50: 2.7, 60: 2.8}
    for step, val in vals.items():
        _save(tmp_path, model, opt, step, val)
    prune_checkpoints(tmp_path, keep_last=2, keep_every=30)
    kept = [c.step for c in list_checkpoints(tmp_path)]
    assert kept == [20, 30, 50, 60]  # best (20), every 30 (30, 60), newest two (50, 60)
    assert resolve_checkpoint(tmp_path, "best").step == 20
    assert resolve_checkpoint(tmp_path, "30").step == 30
    assert resolve_checkpoint(tmp_path, "step-00000050").step == 50
    assert resolve_checkpoint(tmp_path, "40") is None


def test_a_lora_checkpoint_is_usable_only_with_intact_base_weights(tmp_path):
    from llm_trainer.checkpoint_io import save_base
    from llm_trainer.model.lora import apply_lora
    from llm_trainer.service import Service
    from llm_trainer.store.models import ModelStore

    home = tmp_path / "home"
    rec = ModelStore(home).create("adapted", default_base="x")
    model, _ = _trained()
    tok = TextTokenizer.build_byte()
    base = save_base(rec.path, model=model, config=RunConfig(), shape=SHAPE, tokenizer=tok,
                     source="test")
    lora = apply_lora(model, {"r": 2, "alpha": 4, "dropout": 0.0, "targets": ["c_attn"]})
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    step = _save(rec.path, lora, opt, 10)
    assert not (step / "model.safetensors").exists() and inspect_checkpoint(step).valid
    _save(rec.path, lora, opt, 20)
    import llm_trainer.store.checkpoints as store

    hashed = []
    real = store.sha256_file
    store.sha256_file = lambda p, *a: hashed.append(p.name) or real(p, *a)
    try:
        assert all(c.valid for c in list_checkpoints(rec.path, verify=True))
    finally:
        store.sha256_file = real
    assert hashed.count("model.safetensors") == 1  # the shared base: hashed once, not per step
    shutil.rmtree(rec.path / "step-00000020")
    assert read_checkpoint(step).base_path == base
    service = Service(home)  # one instance, as the TUI holds one: its cache must notice
    assert service.model_detail("adapted").status == "ready"

    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # the base's weights change, same size: only a hash shows it
    weights.write_bytes(bytes(data))
    assert inspect_checkpoint(step, verify=False).valid
    checked = inspect_checkpoint(step)
    assert not checked.valid
    assert checked.problem == ("step-00000010 needs its base weights, and "
                               "base/model.safetensors does not match its sha256")
    warnings = []
    assert resolve_checkpoint(rec.path, "latest", warn=warnings.append) is None
    assert "needs its base weights" in warnings[0]
    view = service.model_detail("adapted")
    assert (view.status, view.problem) == ("corrupted", checked.problem)

    weights.unlink()  # gone: even the cheap check (sizes only) sees it
    assert "base/model.safetensors is missing" in inspect_checkpoint(step, verify=False).problem
