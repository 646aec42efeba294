"""The model manager through the real CLI: names, refusals, corruption, cross-model, export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from llm_trainer.store.models import ModelStore
from tests.helpers import TINY, corpus_text, run_cli, stop_all_runs, wait_for

pytestmark = pytest.mark.slow  # real training processes


def started_run_id(stdout: str) -> str:
    return re.search(r"started run (\S+)", stdout).group(1)


def train(home, *args):
    proc = run_cli("train", *TINY, "--foreground", "--sample", "0", *args, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    home = tmp_path_factory.mktemp("zoo")
    (home / "one.txt").write_text(corpus_text(30_000, seed=1))
    (home / "two.txt").write_text(corpus_text(30_000, seed=2).upper())
    train(home, "--dataset", "one.txt", "--name", "alpha", "--max-steps", "40")
    train(home, "--dataset", "two.txt", "--name", "beta", "--max-steps", "40",
          "--set", "data.tokenizer=byte")
    yield home
    stop_all_runs(home)


def models_json(home, *extra):
    return {m["name"]: m for m in json.loads(run_cli("models", "list", "--json", *extra,
                                                      home=home).stdout)}


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 200, "[bold]x[/]"])
def test_bad_names_are_refused(zoo, bad):
    proc = run_cli("models", "rename", "alpha", bad, home=zoo)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: ") and "hint: use letters, digits" in proc.stderr
    assert "alpha" in models_json(zoo)
    proc = run_cli("train", *TINY, "--dataset", "one.txt", "--name", bad, home=zoo)
    assert proc.returncode == 2


def test_list_show_and_activate(zoo):
    models = models_json(zoo)
    assert set(models) >= {"alpha", "beta"}
    a = models["alpha"]
    assert a["status"] == "ready" and a["steps_completed"] == 40 and a["disk_bytes"] > 0
    assert a["tokenizer"]["kind"] == "char" and a["best_val_loss"] is not None
    table = run_cli("models", "list", home=zoo).stdout
    assert "latest trained model:" in table
    show = json.loads(run_cli("models", "show", "alpha", "--json", home=zoo).stdout)
    assert show["checkpoints"] and all(c["valid"] for c in show["checkpoints"])
    assert show["lineage"][0]["kind"] == "train"
    assert run_cli("models", "activate", "beta", home=zoo).returncode == 0
    gen = run_cli("generate", "--prompt", "THE", "--max-new-tokens", "5", home=zoo)
    assert gen.returncode == 0 and gen.stdout.startswith("THE")  # the active model: beta
    assert run_cli("models", "show", "gamma", home=zoo).returncode == 2


def test_rename_collision_and_runs_still_resolve(zoo):
    proc = run_cli("models", "rename", "alpha", "beta", home=zoo)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    old_runs = ModelStore(zoo).get("alpha").runs
    assert run_cli("models", "rename", "alpha", "alpha2", home=zoo).returncode == 0
    rows = json.loads(run_cli("status", "--json", home=zoo).stdout)
    assert next(r for r in rows if r["run_id"] == old_runs[0])["model"] == "alpha2"
    proc = run_cli("resume", old_runs[0], "--more-epochs", "1", "--set", "train.max_steps=45",
                   home=zoo)
    assert proc.returncode == 0 and "training model alpha2" in proc.stdout
    run_id = started_run_id(proc.stdout)
    wait_for(lambda: json.loads(run_cli("status", run_id, "--json", home=zoo).stdout)[
        "status"] not in ("queued", "running"), timeout=120)
    assert run_cli("models", "rename", "alpha2", "alpha", home=zoo).returncode == 0


def test_archive_unarchive(zoo):
    assert run_cli("models", "archive", "beta", home=zoo).returncode == 0
    assert "beta" not in models_json(zoo)
    assert models_json(zoo, "--all")["beta"]["status"] == "archived"
    assert run_cli("models", "unarchive", "beta", home=zoo).returncode == 0
    assert models_json(zoo)["beta"]["status"] == "ready"


def test_changes_are_refused_while_training(zoo):
    proc = run_cli("train", "--preset", "tiny", "--dataset", "one.txt", "--name", "busy",
                   "--max-steps", "100000", home=zoo)
    run_id = started_run_id(proc.stdout)
    wait_for(lambda: json.loads(run_cli("status", run_id, "--json", home=zoo).stdout)[
        "status"] == "running")
    assert models_json(zoo)["busy"]["status"] == "training"
    for args in (["rename", "busy", "busy2"], ["archive", "busy"], ["delete", "busy", "--yes"]):
        proc = run_cli("models", *args, home=zoo)
        assert proc.returncode == 1, args
        assert f"it is training in run {run_id}" in proc.stderr
    run_cli("stop", run_id, "--now", home=zoo)
    assert run_cli("models", "delete", "busy", "--yes", home=zoo).returncode == 0


def test_delete_asks_on_a_terminal_and_needs_yes_in_scripts(zoo):
    train(zoo, "--dataset", "one.txt", "--name", "doomed", "--max-steps", "5")
    proc = run_cli("models", "delete", "doomed", home=zoo)  # stdin is not a terminal
    assert proc.returncode == 2 and "--yes" in proc.stderr
    for answer, kept in ((b"n\n", True), (b"y\n", False)):
        primary, secondary = os.openpty()
        child = subprocess.Popen([sys.executable, "-m", "llm_trainer", "models", "delete",
                                  "doomed"], stdin=secondary, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env={**os.environ,
                                                              "LLM_TRAINER_HOME": str(zoo)})
        os.write(primary, answer)
        child.communicate(timeout=60)
        os.close(primary)
        os.close(secondary)
        assert ("doomed" in models_json(zoo)) is kept


def test_corrupted_newest_checkpoint(zoo):
    train(zoo, "--dataset", "one.txt", "--name", "fragile", "--max-steps", "40",
          "--set", "train.checkpoint_interval=20")
    rec = ModelStore(zoo).get("fragile")
    newest = sorted(rec.path.glob("step-*"))[-1]
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x55
    weights.write_bytes(bytes(data))
    model = models_json(zoo)["fragile"]
    assert model["status"] == "corrupted"
    assert "model.safetensors does not match its sha256" in model["problem"]
    gen = run_cli("generate", "--model", "fragile", "--prompt", "the", "--max-new-tokens", "5",
                  home=zoo)
    assert gen.returncode == 0 and "skipping checkpoint" in gen.stderr
    proc = run_cli("resume", "fragile", "--foreground", "--sample", "0", home=zoo)
    assert proc.returncode == 0, proc.stderr
    assert "skipping checkpoint" in proc.stderr


def test_data_from_trains_a_on_bs_data_with_as_tokenizer(zoo):
    before = ModelStore(zoo).get("alpha")
    proc = run_cli("train", "--model", "alpha", "--data-from", "beta", "--max-steps", "10",
                   "--foreground", "--sample", "0", home=zoo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = ModelStore(zoo).get("alpha")
    assert after.tokenizer == before.tokenizer  # alpha's char tokenizer, not beta's bytes
    beta = ModelStore(zoo).get("beta")
    assert after.datasets[-1]["spec"] == beta.datasets[0]["spec"]
    assert after.lineage[-1]["data_from"] == "beta" and after.lineage[-1]["kind"] == "continue"
    caches = list((zoo / "data" / "tokens").iterdir())
    assert len(caches) >= 3  # two.txt tokenized separately with alpha's tokenizer


def test_export_hf_round_trip_matches_our_logits(zoo, tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    from llm_trainer.checkpoint_io import load_model, read_checkpoint
    from llm_trainer.store.checkpoints import resolve_checkpoint

    for name, bias_args in (("alpha", []), ("nobias", ["--set", "model.bias=false"])):
        if name == "nobias":
            train(zoo, "--dataset", "one.txt", "--name", "nobias", "--max-steps", "20",
                  *bias_args)
        out = tmp_path / name
        proc = run_cli("models", "export", name, "--format", "hf", "--out", str(out), home=zoo)
        assert proc.returncode == 0, proc.stderr
        for f in ("config.json", "model.safetensors", "tokenizer.json",
                  "generation_config.json"):
            assert (out / f).is_file()
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
        tok = transformers.AutoTokenizer.from_pretrained(str(out))
        ckpt = read_checkpoint(resolve_checkpoint(zoo / "checkpoints" / name, "latest").path)
        ours = load_model(ckpt).eval()
        text = "the water was"
        ids = ckpt.tokenizer.encode(text)
        assert tok(text)["input_ids"] == ids
        with torch.no_grad():
            x = torch.tensor([ids])
            diff = (hf(x).logits - ours(x)[0]).abs().max().item()
        assert diff <= 1e-4
    again = run_cli("models", "export", "alpha", "--out", str(tmp_path / "alpha"), home=zoo)
    assert again.returncode == 2 and "not empty" in again.stderr
    bare = run_cli("models", "export", "alpha", "--format", "safetensors", "--out",
                   str(tmp_path / "bare"), home=zoo)
    assert bare.returncode == 0 and (tmp_path / "bare" / "model.safetensors").is_file()


def test_init_from_a_model_of_this_home_starts_a_new_model_from_its_weights(zoo):
    from safetensors.torch import load_file

    from llm_trainer.store.checkpoints import resolve_checkpoint

    alpha_dir = zoo / "checkpoints" / "alpha"
    alpha = resolve_checkpoint(alpha_dir, "latest").path
    alpha_weights = load_file(str(alpha / "model.safetensors"))
    proc = run_cli("train", "--init-from", "alpha", "--lora", "r=2,alpha=4", "--dataset",
                   "two.txt", "--max-steps", "6", "--foreground", "--sample", "0", home=zoo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed: model alpha-lora-" in proc.stdout
    name = re.search(r"completed: model (alpha-lora-\d+)", proc.stdout).group(1)
    shown = run_cli("models", "show", name, home=zoo).stdout
    assert f"imported:    alpha ({alpha.name}) (LoRA r=2 alpha=4" in shown
    base = load_file(str(zoo / "checkpoints" / name / "base" / "model.safetensors"))
    for key, value in base.items():  # the new model starts from alpha's weights
        assert torch.equal(value, alpha_weights[key]), key
    assert load_file(str(alpha / "model.safetensors")).keys() == alpha_weights.keys()
    assert resolve_checkpoint(alpha_dir, "latest").path == alpha  # alpha itself untouched

    # a checkpoint folder (here: the LoRA model's, adapters folded in) -> a full fine-tune;
    # given relative to a folder that is not the home (the worker runs in the home)
    lora_ckpt = resolve_checkpoint(zoo / "checkpoints" / name, "latest").path
    proc = run_cli("train", "--init-from", f"{name}/{lora_ckpt.name}", "--name", "grandchild",
                   "--dataset", str(zoo / "one.txt"), "--max-steps", "4", "--freeze-layers",
                   "1", "--foreground", "--sample", "0", home=zoo, cwd=zoo / "checkpoints")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "embeddings and the first 1 blocks frozen" in proc.stdout
    child = load_file(str(resolve_checkpoint(zoo / "checkpoints" / "grandchild",
                                             "latest").path / "model.safetensors"))
    from llm_trainer.checkpoint_io import load_model, read_checkpoint

    merged = load_model(read_checkpoint(lora_ckpt)).state_dict()
    assert torch.equal(child["transformer.h.0.attn.c_attn.weight"],  # frozen: as imported
                       merged["transformer.h.0.attn.c_attn.weight"])

    for spec, message in (("alpah", "hint: models like it: alpha"),
                          (str(zoo / "one.txt"), "is not a model of this home")):
        bad = run_cli("train", "--init-from", spec, "--dataset", "one.txt", home=zoo)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    bad = run_cli("train", "--init-from", "alpha", "--set", "model.n_layer=5", home=zoo)
    assert bad.returncode == 2 and "takes the architecture from alpha" in bad.stderr
