"""Use-case profiles (`train --profile`): every shipped one loads with a reason for each value,
a wrong profile file names the file and the key, and the layers compose as config.py says:
preset < profile < option < --set, on the real config resolution (load_config, and the
planner of a fine-tune, whose weights cut the profile's context to theirs)."""

from __future__ import annotations

import pytest
import yaml

from llm_trainer.app.options import LaunchOptions, launch_overrides
from llm_trainer.config import load_config, preset_dirs
from llm_trainer.errors import ConfigError, UsageError
from llm_trainer.profiles import PROFILE_DIR, list_profiles, load_profile
from llm_trainer.service import Service, TrainRequest
from tests.helpers import corpus_text, plan_only_hf_folder

SHIPPED = ["chatbot", "code", "creative", "domain", "qa", "summarize"]
# what every shipped profile decides (the list), and its loss_on
REQUIRED = {"finetune.lora_r", "finetune.lora_alpha", "finetune.lora_targets", "train.lr",
            "train.epochs", "train.loss_on", "model.block_size", "train.sample_temperature"}
LOSS_ON = {"chatbot": "assistant", "code": "assistant", "summarize": "assistant",
           "qa": "assistant", "creative": "all", "domain": "all"}


def test_every_shipped_profile_loads_and_each_value_has_its_reason():
    assert list_profiles() == SHIPPED
    for name in SHIPPED:
        prof = load_profile(name)
        raw = yaml.safe_load(prof.path.read_text())
        entries = {f"{s}.{k}": e for s, keys in raw.items() if s != "description"
                   for k, e in keys.items()}
        assert {v.key for v in prof.values} == set(entries) >= REQUIRED, name
        for v in prof.values:
            assert entries[v.key]["why"].strip() == v.why and len(v.why) > 20, (name, v.key)
        assert prof.get("train.loss_on").value == LOSS_ON[name]
        assert prof.get("finetune.lora_r").value > 0 and prof.description
        # the values are typed as the config's fields: they apply to a real config
        cfg = load_config(preset="tiny", profile=prof)
        assert cfg.finetune.profile == name
        assert all(cfg.get(v.key) == v.value for v in prof.values), name


def test_profiles_are_packaged_with_the_presets():
    """The wheel force-includes configs/ (pyproject): the profiles live under it."""
    assert load_profile("qa").path.parent.parent in preset_dirs()
    assert load_profile("qa").path.parent.name == PROFILE_DIR


def _home_profile(home, text: str, name: str = "mine"):
    folder = home / "configs" / PROFILE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)
    return folder / f"{name}.yaml"


GOOD = "description: mine\ntrain:\n  lr: {value: 1.0e-4, why: small steps}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("description: d\ntrain:\n  lr: 1.0e-4\n", "train.lr has no reason"),
    ("description: d\ntrain:\n  lr: {value: 1.0e-4}\n", "train.lr has no reason"),
    ("description: d\ntrain:\n  lr: {value: 1.0e-4, why: '  '}\n", "train.lr has no reason"),
    ("description: d\ntrain:\n  lr: {why: fast}\n", "train.lr has no value"),
    ("description: d\ntrain:\n  lr: {value: 1, why: x, because: y}\n",
     "train.lr has an unknown field 'because'"),
    ("description: d\ntrain:\n  lr: {value: 1, why: \"a\\nb\"}\n",
     "train.lr's reason must be one line"),
    ("description: d\nfinetune:\n  lora_rank: {value: 8, why: x}\n",
     "unknown key 'finetune.lora_rank' (did you mean 'finetune.lora_r'?)"),
    ("description: d\ntrian:\n  lr: {value: 1.0e-4, why: x}\n",
     "unknown section 'trian' (did you mean 'train'?)"),
    ("description: d\ntrain:\n  lr: {value: fast, why: x}\n",
     "train.lr must be a number > 0 and <= 10 (got 'fast')"),
    ("description: d\ntrain:\n  loss_on: {value: prompts, why: x}\n",
     "train.loss_on must be one of assistant, all (got 'prompts')"),
    ("description: d\nfinetune:\n  lora_targets: {value: [c_attn, qkv_proj], why: x}\n",
     "finetune.lora_targets: no module named 'qkv_proj'"),
    ("description: d\nfinetune:\n  init_from: {value: hf:x, why: x}\n",
     "finetune.init_from is recorded from the command line"),
    ("train:\n  lr: {value: 1.0e-4, why: x}\n", "description is missing"),
    ("description: d\n", "the profile sets no values"),
])
def test_a_wrong_profile_file_names_the_file_and_the_key(tmp_path, text, message):
    path = _home_profile(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_profile("mine", tmp_path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_homes_own_profile_is_listed_and_found_before_the_packaged_one(tmp_path):
    _home_profile(tmp_path, GOOD)
    _home_profile(tmp_path, GOOD.replace("mine", "my chatbot"), name="chatbot")
    assert list_profiles(tmp_path) == sorted([*SHIPPED, "mine"])
    assert load_profile("chatbot", tmp_path).description == "my chatbot"
    assert load_profile("mine", tmp_path).overrides() == {"train.lr": 1e-4}


def test_an_unknown_profile_is_one_line_with_close_matches_and_the_list():
    with pytest.raises(UsageError) as err:
        load_profile("chatbto")
    assert str(err.value) == ("unknown profile 'chatbto' (did you mean 'chatbot'?); the "
                              "profiles: " + ", ".join(SHIPPED))
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_preset_then_profile_then_option_then_set():
    """tiny: lr 0.003, epochs 1, block_size 32, batch_size 8; chatbot: lr 2e-4, epochs 3,
    block_size 1024, sample_temperature 0.7."""
    prof = load_profile("chatbot")
    only_profile = load_config(preset="tiny", profile=prof)
    assert (only_profile.train.lr, only_profile.train.epochs) == (2e-4, 3)
    assert only_profile.model.block_size == 1024 and only_profile.train.batch_size == 8
    # the profile's epochs are what it means: they clear the preset's max_steps (200)
    assert only_profile.train.max_steps is None
    assert load_config(preset="tiny", profile=prof, overrides={
        "train.max_steps": 5}).train.max_steps == 5
    overrides = launch_overrides(LaunchOptions(lr=0.01, epochs=5, seq_len=64),
                                 {"train.epochs": "7", "train.sample_temperature": "0.1"})
    cfg = load_config(preset="tiny", profile=prof, overrides=overrides)
    assert cfg.train.lr == 0.01  # the option over the profile
    assert cfg.train.epochs == 7  # --set over the option
    assert cfg.train.sample_temperature == 0.1  # --set over the profile
    assert cfg.model.block_size == 64  # the option
    assert cfg.train.batch_size == 8 and cfg.model.n_layer == 2  # the preset, not in profile
    assert cfg.finetune.lora_alpha == 32.0 and cfg.train.loss_on == "assistant"  # profile
    assert load_config(preset="tiny").finetune.profile is None


# ---------------------------------------------------------------------------- the planner


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A GPT-2 folder with 64 positions (less than any profile's context), as planning reads
    it (tests/integration/test_profiles_cli.py's dry run loads a real one)."""
    return plan_only_hf_folder(tmp_path_factory.mktemp("hf") / "gpt2")


def _plan(home, **req):
    (home / "corpus.txt").write_text(corpus_text(5000))
    request = TrainRequest(preset="tiny", options=req.pop("options", LaunchOptions(
        dataset=str(home / "corpus.txt"))), **req)
    return Service(home).planner.plan_train(request)


def test_a_fine_tunes_plan_layers_the_profile_and_marks_what_options_replaced(tmp_path,
                                                                               hf_folder):
    plan = _plan(tmp_path, init_from=f"hf:{hf_folder}", profile="code",
                 options=LaunchOptions(dataset=str(tmp_path / "corpus.txt"), lr=1e-3,
                                       lora="r=4"),
                 sets={"train.epochs": "2"})
    cfg = plan.config
    assert cfg.finetune.profile == "code" and cfg.finetune.init_from == f"hf:{hf_folder}"
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 2 and cfg.finetune.lora_r == 4
    assert cfg.finetune.lora_alpha == 64 and cfg.train.sample_temperature == 0.2  # profile's
    assert cfg.train.batch_size == 8  # the preset's
    assert cfg.model.block_size == 64  # the profile's 2048, cut to the folder's positions
    rows = {v.key: v for v in plan.profile.values}
    assert (rows["train.lr"].overridden_by, rows["train.lr"].used) == ("--lr", 1e-3)
    assert rows["finetune.lora_r"].overridden_by == "--lora"
    assert rows["train.epochs"].overridden_by == "--set"
    assert rows["finetune.lora_alpha"].overridden_by is None
    assert rows["model.block_size"].overridden_by is None
    assert rows["model.block_size"].note == "cut from 2048 to the 64 positions of gpt2"
    assert plan.notes == []
    # a shorter --seq-len still wins, and no LoRA default replaces the profile's own lr
    plan = _plan(tmp_path, init_from=f"hf:{hf_folder}", profile="qa",
                 options=LaunchOptions(dataset=str(tmp_path / "corpus.txt"), seq_len=16))
    assert plan.config.model.block_size == 16 and plan.config.train.lr == 2e-4
    assert {v.key: v.overridden_by for v in plan.profile.values}["model.block_size"] == \
        "--seq-len"


def test_a_full_fine_tune_with_a_profile_is_told_its_lr_is_for_adapters(tmp_path, hf_folder):
    plan = _plan(tmp_path, init_from=f"hf:{hf_folder}", profile="chatbot",
                 sets={"finetune.lora_r": "0"})
    assert plan.config.finetune.lora_r == 0 and plan.config.train.lr == 2e-4
    assert plan.notes == ["profile chatbot's learning rate 0.0002 is meant for LoRA adapters; "
                          "a full fine-tune usually wants about 5e-05 (--lr)"]


def test_a_profile_needs_init_from_and_a_known_name(tmp_path):
    with pytest.raises(UsageError, match=r"^--profile qa sets up a fine-tune .* it needs "
                                         r"--init-from"):
        _plan(tmp_path, profile="qa")
    with pytest.raises(UsageError, match="unknown profile 'q'"):
        _plan(tmp_path, profile="q", init_from="hf:/nowhere")
