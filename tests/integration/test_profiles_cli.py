"""`train --profile` through the real CLI: --help lists the profiles, a wrong name or a
profile without --init-from is one line (exit 2), `--dry-run` shows every value with its
reason and the option that replaced it, and `compare --rerun` of a profiled fine-tune names
the profile and trains the same config again."""

from __future__ import annotations

import json
import shlex

import pytest
import typer
import yaml

from llm_trainer import cli
from llm_trainer.profiles import list_profiles, load_profile
from llm_trainer.service import Service
from tests.helpers import (
    TINY,
    corpus_text,
    fake_run,
    make_hf_gpt2,
    plan_only_hf_folder,
    run_cli,
)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny GPT-2 folder as transformers saves it: 2 blocks, 64 positions."""
    return make_hf_gpt2(tmp_path_factory.mktemp("hf") / "my-gpt2", corpus_text(30_000, seed=1))


def test_train_help_lists_the_profiles(tmp_path):
    proc = run_cli("train", "--help", home=tmp_path)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # as wrapped to any width
    assert f"--profile <str> use-case profile, a fine-tuning overlay over the preset " \
           f"({'|'.join(list_profiles())}, or your own in configs/profiles/)" in text
    assert "--preset <str> built-in config: chat-synthetic, default, medium, modern-medium, " \
           "modern-small, shakespeare-char, shakespeare-char-fast, small, tiny" in text


def test_a_wrong_profile_and_one_without_init_from_are_one_line(tmp_path):
    proc = run_cli("train", *TINY, "--profile", "sumarize", "--init-from", "hf:/nowhere",
                   "--dry-run", home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("error: unknown profile 'sumarize' (did you mean 'summarize'?); the "
                           "profiles: chatbot, code, creative, domain, qa, summarize\n")
    proc = run_cli("train", *TINY, "--profile", "creative", home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --profile creative sets up a fine-tune (LoRA "
                                  "adapters, their learning rate): it needs --init-from")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.slow  # the estimate loads the imported weights and times a few steps
def test_dry_run_shows_each_value_with_its_reason_and_what_replaced_it(tmp_path, hf_folder):
    (tmp_path / "corpus.txt").write_text(corpus_text(8_000))
    args = ("train", *TINY, "--init-from", f"hf:{hf_folder}", "--profile", "chatbot",
            "--dataset", "corpus.txt", "--lr", "1e-3", "--set", "train.epochs=2",
            "--set", "train.max_steps=4", "--dry-run")
    proc = run_cli(*args, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    prof = load_profile("chatbot")
    start = out.index("  profile:     chatbot: " + prof.description)
    rows = {line.split("=")[0].strip(): line for line in out[start + 1:] if " = " in line}
    assert set(rows) == {v.key for v in prof.values}
    for v in prof.values:
        assert rows[v.key].endswith(v.why), rows[v.key]  # every value with its reason
    assert "train.lr                 = 0.001  # overridden by --lr; the profile's 0.0002: " \
        in rows["train.lr"]
    assert "= 2  # overridden by --set; the profile's 3: " in rows["train.epochs"]
    assert "finetune.lora_r          = 16  # room to learn" in rows["finetune.lora_r"]
    assert "model.block_size         = 64  # " in rows["model.block_size"]
    assert "(cut from 1024 to the 64 positions of my-gpt2)" in [line.strip() for line in out]
    assert "context 64," in proc.stdout  # the model the estimate built has the cut context
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())

    proc = run_cli(*args, "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["config"]["finetune"]["profile"] == "chatbot"
    assert report["profile"]["name"] == "chatbot"
    lr = next(v for v in report["profile"]["values"] if v["key"] == "train.lr")
    assert lr == {"key": "train.lr", "value": 2e-4, "why": prof.get("train.lr").why,
                  "used": 1e-3, "overridden_by": "--lr", "note": None}


def test_rerun_of_a_profiled_fine_tune_names_the_profile(tmp_path, monkeypatch, capsys):
    hf_folder = plan_only_hf_folder(tmp_path / "gpt2")
    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(corpus_text(2000))
    seen = {}

    def plan_only(self, req):
        seen["config"] = self.planner.plan_train(req).config
        raise typer.Exit(0)

    monkeypatch.setattr(Service, "train", plan_only)
    assert cli.main(["train", "--init-from", f"hf:{hf_folder}", "--profile", "qa",
                     "--dataset", str(tmp_path / "corpus.txt"), "--set", "train.epochs=4",
                     "--set", "train.weight_decay=0.0"]) == 0
    want = seen.pop("config")
    assert want.finetune.profile == "qa" and want.train.epochs == 4
    fake_run(tmp_path, "20261130-100000-p", want.to_dict(), model="tuned")
    capsys.readouterr()
    assert cli.main(["compare", "--rerun", "20261130-100000-p"]) == 0
    args = shlex.split(capsys.readouterr().out.strip())
    assert args[args.index("--profile") + 1] == "qa"
    sets = {args[i + 1].split("=", 1)[0] for i, a in enumerate(args) if a == "--set"}
    # the profile's values are not repeated: only what differs from preset + profile (and
    # the lr, which an import always names)
    assert sets == {"train.epochs", "train.max_steps", "train.weight_decay", "train.lr"}
    assert cli.main(args[1:]) == 0
    assert seen["config"] == want
    # a run whose profile file is gone gives every value with --set
    home_profile = tmp_path / "configs" / "profiles" / "gone.yaml"
    home_profile.parent.mkdir(parents=True)
    raw = yaml.safe_load(load_profile("qa").path.read_text())
    raw["train"]["epochs"]["value"] = 9
    home_profile.write_text(yaml.safe_dump(raw))
    assert cli.main(["train", "--init-from", f"hf:{hf_folder}", "--profile", "gone",
                     "--dataset", str(tmp_path / "corpus.txt")]) == 0
    gone = seen.pop("config")
    home_profile.unlink()
    fake_run(tmp_path, "20261130-100100-g", gone.to_dict(), model="tuned2")
    capsys.readouterr()
    assert cli.main(["compare", "--rerun", "20261130-100100-g"]) == 0
    captured = capsys.readouterr()
    assert "profile gone is not found any more" in captured.err
    args = shlex.split(captured.out.strip())
    assert "--profile" not in args and "train.epochs=9" in args
    assert cli.main(args[1:]) == 0
    assert seen["config"] == gone
