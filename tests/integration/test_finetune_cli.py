"""`train --init-from hf:FOLDER [--lora ...]` through the real CLI: a new model that keeps the
folder's tokenizer and architecture, trains, resumes, generates and exports; refusals in one
line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from llm_trainer.store.runs import RunStore
from tests.helpers import corpus_text, make_hf_gpt2, run_cli, stop_all_runs

FAST = ["--dataset", "corpus.txt", "--preset", "tiny", "--max-steps", "10", "--batch-size", "4",
        "--seq-len", "32", "--set", "train.eval_interval=10", "--foreground", "--sample", "0",
        "--set", "runtime.num_threads=1"]  # a tiny model trains faster on one thread


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    home = root / "home"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    folder = make_hf_gpt2(root / "my-gpt2", corpus_text(30_000, seed=1))
    yield home, folder
    stop_all_runs(home)


def config_of(home, model):
    store = RunStore(home)
    run = next(r for r in store.run_ids() if store.read_meta(r).model["name"] == model)
    return store.read_meta(run).config


@pytest.mark.slow
def test_full_fine_tune_keeps_the_folder_tokenizer_and_architecture(env):
    home, folder = env
    proc = run_cli("train", "--init-from", f"hf:{folder}", "--name", "full", *FAST, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "importing the weights of" in proc.stdout
    cfg = config_of(home, "full")
    assert cfg["train"]["lr"] == 5e-5  # the fine-tuning default, --lr not given
    assert cfg["finetune"]["init_from"] == f"hf:{folder}"
    assert (cfg["model"]["n_layer"], cfg["model"]["n_embd"], cfg["model"]["block_size"]) == \
        (2, 32, 32)
    ckpt = home / "checkpoints" / "full" / "step-00000010"
    assert (ckpt / "model.safetensors").is_file()
    ours = json.loads((ckpt / "tokenizer.json").read_text())
    assert ours["model"]["vocab"] == json.loads((folder / "tokenizer.json").read_text())[
        "model"]["vocab"]
    gen = run_cli("generate", "--model", "full", "--max-new-tokens", "8", "--seed", "1",
                  "--prompt", "Hi", home=home)
    assert gen.returncode == 0, gen.stderr


@pytest.mark.slow
def test_lora_model_saves_adapters_resumes_generates_and_exports_merged(env, tmp_path):
    home, folder = env
    proc = run_cli("train", "--init-from", f"hf:{folder}", "--name", "adapted", "--lora",
                   "r=2,alpha=4,dropout=0.0,targets=c_attn,c_fc", *FAST, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fine-tuning: " in proc.stdout and "LoRA r=2 alpha=4 on c_attn, c_fc" in proc.stdout
    shown = run_cli("models", "show", "adapted", home=home).stdout
    assert f"imported:    hf:{folder} (LoRA r=2 alpha=4 on c_attn, c_fc)" in shown
    cfg = config_of(home, "adapted")
    assert cfg["train"]["lr"] == 2e-4 and cfg["finetune"]["lora_targets"] == ["c_attn", "c_fc"]
    model_dir = home / "checkpoints" / "adapted"
    step = model_dir / "step-00000010"
    assert (step / "adapter.safetensors").is_file() and not (step / "model.safetensors").exists()
    base = model_dir / "base" / "model.safetensors"
    base_bytes = base.read_bytes()
    assert (step / "adapter.safetensors").stat().st_size < 0.05 * len(base_bytes)

    again = run_cli("resume", "adapted", "--more-epochs", "1", "--set", "train.max_steps=20",
                    "--foreground", "--sample", "0", home=home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "completed: model adapted" in again.stdout
    assert base.read_bytes() == base_bytes  # no base weight changes

    gen = run_cli("generate", "--model", "adapted", "--max-new-tokens", "8", "--seed", "1",
                  "--prompt", "Hi", home=home)
    assert gen.returncode == 0, gen.stderr

    out = tmp_path / "hf"
    exp = run_cli("models", "export", "adapted", "--format", "hf", "--out", str(out),
                  home=home)
    assert exp.returncode == 0, exp.stderr
    from transformers import GPT2LMHeadModel

    from llm_trainer.checkpoint_io import load_model, read_checkpoint
    from llm_trainer.store.checkpoints import resolve_checkpoint

    ckpt = read_checkpoint(resolve_checkpoint(model_dir, "latest").path)
    ids = torch.randint(0, ckpt.shape.vocab_size, (1, 12),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = load_model(ckpt, merged=False).eval()(ids)[0]
        theirs = GPT2LMHeadModel.from_pretrained(out).eval()(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)  # the export has the adapters merged in

    import gguf

    merged = load_model(ckpt).state_dict()
    out = tmp_path / "adapted.gguf"
    exp = run_cli("models", "export", "adapted", "--format", "gguf", "--out", str(out),
                  home=home)
    assert exp.returncode == 0, exp.stderr
    tensors = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    for i in range(2):
        qkv = tensors[f"blk.{i}.attn_qkv.weight"].data
        assert np.array_equal(qkv, merged[f"transformer.h.{i}.attn.c_attn.weight"].numpy())

    raw = tmp_path / "raw"  # our own format: full (merged) weights, loadable on their own
    assert run_cli("models", "export", "adapted", "--format", "safetensors", "--out",
                   str(raw), home=home).returncode == 0
    from safetensors.torch import load_file

    raw_config = json.loads((raw / "config.json").read_text())
    assert "lora" not in raw_config and "base" not in raw_config
    assert raw_config["merged_lora"]["r"] == 2 and raw_config["config"]["finetune"]["lora_r"] == 0
    weights = load_file(str(raw / "model.safetensors"))
    assert torch.equal(weights["transformer.h.0.attn.c_attn.weight"],
                       merged["transformer.h.0.attn.c_attn.weight"])


@pytest.mark.slow
def test_a_lora_model_keeps_its_adapter_shape(env):
    home, _ = env
    """(runs after the test above, which trains `adapted`)"""
    assert (home / "checkpoints" / "adapted").is_dir(), "needs the LoRA model trained above"
    proc = run_cli("train", "--model", "adapted", "--lora", "r=8", *FAST, home=home)
    assert proc.returncode == 2
    assert "finetune.lora_r: checkpoint 2, requested 8" in proc.stderr
    proc = run_cli("resume", "adapted", "--more-epochs", "1", "--set", "finetune.lora_alpha=32",
                   home=home)
    assert proc.returncode == 2
    assert "finetune.lora_alpha: checkpoint 4.0, requested 32.0" in proc.stderr
    proc = run_cli("resume", "adapted", "--more-epochs", "1", "--set",
                   "finetune.freeze_layers=1", home=home)
    assert proc.returncode == 2 and "finetune.freeze_layers: checkpoint 0, requested 1" in \
        proc.stderr
    # DoRA adds a trained magnitude per row, rsLoRA another scale: neither can start midway
    proc = run_cli("resume", "adapted", "--more-epochs", "1", "--set",
                   "finetune.lora_use_dora=true", home=home)
    assert proc.returncode == 2 and "finetune.lora_use_dora: checkpoint False, requested " \
        "True" in proc.stderr


def _broken(folder, tmp_path, what):
    bad = tmp_path / what
    shutil.copytree(folder, bad)
    cfg = json.loads((bad / "config.json").read_text())
    if what == "mistral":
        cfg["model_type"] = "mistral"
    elif what == "small-vocab":
        cfg["vocab_size"] = 100
    elif what == "relu":
        cfg["activation_function"] = "relu"
    elif what == "no-weights":
        (bad / "model.safetensors").unlink()
    elif what == "no-tokenizer":
        (bad / "tokenizer.json").unlink()
    (bad / "config.json").write_text(json.dumps(cfg))
    return bad


@pytest.mark.slow  # the module's GPT-2 folder costs ~2.5 s to make
@pytest.mark.parametrize("what, message", [
    ("mistral", "holds a mistral model, which this trainer cannot import"),
    ("small-vocab", "the tokenizer does not belong to this model"),
    ("relu", "uses activation_function 'relu'"),
    ("no-weights", "has no weights"),
    ("no-tokenizer", "has no tokenizer.json"),
])
def test_a_folder_that_is_not_a_usable_gpt2_is_refused_in_one_line(env, tmp_path, what,
                                                                   message):
    home, folder = env
    bad = _broken(folder, tmp_path, what)
    proc = run_cli("train", "--init-from", f"hf:{bad}", *FAST, home=home)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: ") and message in first, proc.stderr
    assert "hint" in proc.stderr or len(proc.stderr.splitlines()) == 1


SLOW = pytest.mark.slow  # the fast suite keeps a few of these (its 30 s budget)


@pytest.mark.parametrize("args, message", [
    (["--init-from", "hf:/nowhere/at/all"], "is not a folder"),
    pytest.param(["--init-from", "gpt2"],
                 "is not a model of this home, a checkpoint folder or hf:PATH", marks=SLOW),
    pytest.param(["--init-from", "{path}"], "a Hugging Face folder is given as hf:",
                 marks=SLOW),
    (["--init-from", "{folder}", "--set", "model.n_layer=3"],
     "model.n_layer=3 (the folder's model has 2)"),
    pytest.param(["--init-from", "{folder}", "--set", "model.block_size=128"],
                 "model.block_size=128", marks=SLOW),
    pytest.param(["--init-from", "{folder}", "--set", "data.tokenizer=char"],
                 "keeps the folder's tokenizer", marks=SLOW),
    (["--init-from", "{folder}", "--lora", "rank=4"], "--lora: unknown setting 'rank'"),
    pytest.param(["--init-from", "{folder}", "--lora", "r=4,targets=wte"],
                 "no module named 'wte'", marks=SLOW),
    pytest.param(["--init-from", "{folder}", "--freeze-layers", "3"], "has 2 blocks",
                 marks=SLOW),
    pytest.param(["--init-from", "{folder}", "--freeze-layers", "2", "--lora", "r=2"],
                 "with --lora at least one must keep its adapters", marks=SLOW),
    (["--lora", "r=4"], "need --init-from"),
])
def test_bad_fine_tuning_options_are_refused_in_one_line(env, args, message):
    home, folder = env
    args = [a.replace("{folder}", f"hf:{folder}").replace("{path}", str(folder))
            for a in args]
    proc = run_cli("train", *args, *FAST, home=home)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr.splitlines()[0], proc.stderr


@pytest.mark.slow
def test_lora_on_chat_data_trains_the_added_markers(env):
    """A folder without a chat template: the ChatML markers are added to its tokenizer, and
    with --lora their embedding rows train with the adapters (saved in adapter.safetensors,
    their ids in config.json), so the model can tell them apart."""
    home, folder = env
    with open(home / "chats.jsonl", "w") as fh:
        for i in range(200):
            word = "abcdefgh"[: 3 + i % 5]
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"reverse {word}"},
                                              {"role": "assistant", "content": word[::-1]}]})
                     + "\n")
    fast = [a if a != "corpus.txt" else "chats.jsonl" for a in FAST]
    proc = run_cli("train", "--init-from", f"hf:{folder}", "--name", "chat-lora", "--lora",
                   "r=4", *fast, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "added 2 token embeddings" in proc.stdout
    from llm_trainer.store.checkpoints import resolve_checkpoint

    step = resolve_checkpoint(home / "checkpoints" / "chat-lora", "latest").path
    config = json.loads((step / "config.json").read_text())
    assert config["lora"]["tokens"] == [300, 301] and config["chat"]["kind"] == "chatml"
    from safetensors.torch import load_file

    rows = load_file(str(step / "adapter.safetensors"))[
        "transformer.wte.token_adapter.trainable_tokens_delta"]
    assert rows.shape == (2, 32) and not torch.allclose(rows[0], rows[1])
    gen = run_cli("generate", "--chat", "--model", "chat-lora", "--prompt", "reverse abc",
                  "--max-new-tokens", "6", "--seed", "1", home=home)
    assert gen.returncode == 0, gen.stderr
