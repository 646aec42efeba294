"""The real command line (in this process, as tests.helpers.run_cli runs it), on tiny data."""

import json
import subprocess
import sys

import pytest

from tests.helpers import TINY, run_cli

COMMANDS = [[], ["train"], ["status"], ["resume"], ["stop"], ["generate"], ["models"],
            ["models", "list"], ["models", "show"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(tmp_path, command):
    proc = run_cli(*command, "--help", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


def test_front_ends_do_not_import_torch_or_hf_at_startup():
    code = ("import sys, llm_trainer.cli, llm_trainer.service, llm_trainer.store.runs, "
            "llm_trainer.store.models, llm_trainer.launcher, llm_trainer.telemetry, "
            "llm_trainer.config, llm_trainer.progress\n"
            "heavy = [m for m in ('torch', 'datasets', 'tokenizers', 'numpy', 'transformers') "
            "if m in sys.modules]\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.slow
def test_train_foreground_then_generate(tmp_path, corpus):
    proc = run_cli("train", *TINY, "--dataset", str(corpus), "--max-steps", "60",
                   "--name", "demo", "--foreground", "--sample", "40", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "device: requested auto, using cpu" in out
    assert "completed: model demo at step 60" in out
    assert "--- sample from demo" in out
    ckpt = tmp_path / "checkpoints" / "demo"
    steps = sorted(p.name for p in ckpt.glob("step-*"))
    assert steps[-1] == "step-00000060"

    gen = run_cli("generate", "--model", "demo", "--prompt", "The water", "--max-new-tokens",
                  "30", "--temperature", "0", home=tmp_path)
    assert gen.returncode == 0, gen.stderr
    # 30 new characters (a 60-step char model's greedy choice may well be spaces)
    assert gen.stdout.startswith("The water") and len(gen.stdout.rstrip("\n")) > len("The water")
    again = run_cli("generate", "--model", "demo", "--prompt", "The water", "--max-new-tokens",
                    "30", "--temperature", "0", home=tmp_path)
    assert again.stdout == gen.stdout  # greedy is deterministic

    by_path = run_cli("generate", "--checkpoint", str(ckpt / steps[-1]), "--prompt", "",
                      "--max-new-tokens", "10", "--seed", "1", home=tmp_path)
    assert by_path.returncode == 0, by_path.stderr

    models = run_cli("models", "list", "--json", home=tmp_path)
    [m] = json.loads(models.stdout)
    assert m["name"] == "demo" and m["status"] == "ready" and m["steps_completed"] == 60


@pytest.mark.slow
def test_generate_without_a_model_says_which_it_used(zoo_copy):
    """On stderr, so the text piped from stdout stays the model's alone (issue 21, item 7)."""
    args = ("generate", "--prompt", "The", "--max-new-tokens", "5", "--seed", "1")
    gen = run_cli(*args, home=zoo_copy)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("The") and "note" not in gen.stdout
    assert "note: using model demo (the latest trained model; step-00000010, trained on " \
        in gen.stderr and "one.txt); pick another with --model NAME" in gen.stderr
    assert run_cli("models", "activate", "bytes", home=zoo_copy).returncode == 0
    gen = run_cli(*args, home=zoo_copy)
    assert "note: using model bytes (the active model; step-00000010" in gen.stderr
    named = run_cli(*args, "--model", "demo", home=zoo_copy)
    assert named.returncode == 0 and "using model" not in named.stderr


def test_generate_errors(tmp_path):  # in this process: fast
    proc = run_cli("generate", "--model", "nope", home=tmp_path)
    assert proc.returncode == 2 and "no model named 'nope'" in proc.stderr
    proc = run_cli("generate", "--temperature", "-1", home=tmp_path)
    assert proc.returncode == 2 and "--temperature -1.0 is not allowed" in proc.stderr
    proc = run_cli("generate", home=tmp_path)
    assert proc.returncode == 2 and "none trained yet" in proc.stderr


def test_missing_dataset_is_one_line_with_a_hint(tmp_path):
    proc = run_cli("train", *TINY, "--dataset", "nowhere.txt", "--foreground", home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: dataset 'nowhere.txt' is not a file or folder")
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "checkpoints").glob("*/model.json"))  # no half-made model


@pytest.mark.slow
def test_offline_default_dataset_falls_back_to_the_builtin_corpus(tmp_path):
    proc = run_cli("train", "--preset", "tiny", "--max-steps", "5", "--foreground",
                   "--sample", "0", home=tmp_path,
                   env={"HF_HUB_CACHE": str(tmp_path / "hub")})  # WikiText-2 in no cache
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: WikiText-2 is not available" in proc.stderr
    assert "builtin:python-docs" in proc.stdout
    meta = json.loads(next((tmp_path / "runs").glob("*/meta.json")).read_text())
    assert meta["config"]["data"]["dataset"] == "builtin:python-docs"
    # named after what it trained on (issue 21, item 7)
    assert meta["model"]["name"] == "python-docs-tiny-1"
    assert "completed: model python-docs-tiny-1" in proc.stdout


@pytest.mark.slow
def test_home_option_moves_everything(tmp_path, corpus):
    elsewhere = tmp_path / "elsewhere"
    proc = run_cli("--home", str(elsewhere), "train", *TINY, "--dataset", str(corpus),
                   "--max-steps", "5", "--foreground", "--sample", "0", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "runs").is_dir() and (elsewhere / "checkpoints").is_dir()
    assert (elsewhere / "data" / "tokens").is_dir()
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_relative_paths_are_the_callers_not_the_homes(tmp_path):
    """A detached run works in the home; --dataset and a tokenizer file given relative to the
    folder the command was typed in must still be found (they are made absolute)."""
    from tests.helpers import corpus_text

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "notes.txt").write_text(corpus_text(20_000))
    from llm_trainer.data.tokenizer import TextTokenizer

    TextTokenizer.build_byte().save(work / "sub" / "tok.json")
    proc = run_cli("train", *TINY, "--dataset", "sub/notes.txt", "--set",
                   "data.tokenizer=sub/tok.json", "--max-steps", "3", "--name", "rel",
                   "--foreground", "--sample", "0", home=home, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from llm_trainer.store.runs import RunStore

    runs = RunStore(home)
    data = runs.read_meta(runs.run_ids()[0]).config["data"]
    assert data["dataset"] == str(work / "sub" / "notes.txt")
    assert data["tokenizer"] == str(work / "sub" / "tok.json")
