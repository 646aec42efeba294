"""The launch-options table: one row per flag that sets a config field, its help taken from
that field, feeding Typer (`train`, `resume`), the TUI's fields and the request; following
`--max-steps` by reading reaches RunConfig.train.max_steps through typed fields only."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest
import typer

from llm_trainer import cli
from llm_trainer.app.options import BY_NAME, LAUNCH_OPTIONS, LaunchOptions, option_for
from llm_trainer.config import SECTIONS, TrainConfig, all_keys
from llm_trainer.errors import UsageError
from llm_trainer.service import Service, TrainRequest

SRC = Path(cli.__file__).parents[1]


def planned(monkeypatch, tmp_path, *args: str):
    """(the request `llm-trainer train ARGS` builds, the config the planner makes of it)."""
    seen = {}

    def plan_only(self, req):
        seen["req"], seen["config"] = req, self.planner.plan_train(req).config
        raise typer.Exit(0)

    monkeypatch.setenv("LLM_TRAINER_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Service, "train", plan_only)
    assert cli.main(["train", "--dataset", "builtin:python-docs", *args]) == 0
    return seen["req"], seen["config"]


def test_every_row_sets_a_config_field_and_takes_its_help_from_it():
    assert [o.name for o in LAUNCH_OPTIONS] == [f.name for f in fields(LaunchOptions)]
    for opt in LAUNCH_OPTIONS:
        assert opt.config_key in all_keys(), opt.name
        own = {f.name: f for f in fields(opt.section)}[opt.key].metadata["help"]
        if opt.name not in ("lora", "sample_prompt"):  # these say how the flag is written
            assert opt.help.startswith(own.replace(f" ({opt.flag})", "")), opt.name
    assert BY_NAME["seq_len"].config_key == "model.block_size"
    assert BY_NAME["seq_len"].help == "context length in tokens"  # not "(--seq-len)"
    assert option_for(TrainConfig, "max_steps") is BY_NAME["max_steps"]
    assert set(SECTIONS.values()) >= {o.section for o in LAUNCH_OPTIONS}


def test_the_typer_options_are_the_table():
    def flags(command) -> set[str]:
        params = inspect.signature(command).parameters.values()
        return {p.name for p in params}

    assert {o.name for o in LAUNCH_OPTIONS} <= flags(cli.train)
    assert {"device", "precision", "tensorboard"} <= flags(cli.resume)
    assert "max_steps" not in flags(cli.resume)


def test_help_lists_every_flag_with_the_config_help(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for opt in LAUNCH_OPTIONS:
        assert opt.flag in text
    assert "stop after this many optimizer steps (wins over epochs)" in text


def test_max_steps_is_one_typed_field_from_the_flag_to_the_config(monkeypatch, tmp_path):
    req, cfg = planned(monkeypatch, tmp_path, "--max-steps", "7", "--strict-device",
                       "--sample-prompt", "a", "--sample-prompt", "b")
    assert isinstance(req, TrainRequest) and req.sets == {}
    assert req.options.max_steps == 7 and req.options.strict_device is True
    assert req.options.sample_prompt == ("a", "b") and req.options.epochs is None
    assert cfg.train.max_steps == 7 and cfg.runtime.strict_device
    assert cfg.train.sample_prompts == ("a", "b")


def test_set_wins_over_a_flag_and_epochs_clears_max_steps(monkeypatch, tmp_path):
    _req, cfg = planned(monkeypatch, tmp_path, "--max-steps", "5", "--set",
                        "train.max_steps=9")
    assert cfg.train.max_steps == 9
    req, cfg = planned(monkeypatch, tmp_path, "--epochs", "2", "--set", "train.max_steps=3",
                       "--set", "train.epochs=2")
    assert cfg.train.max_steps == 3 and req.sets == {"train.max_steps": "3", "train.epochs": "2"}
    _req, cfg = planned(monkeypatch, tmp_path, "--preset", "tiny", "--epochs", "2")
    assert cfg.train.epochs == 2 and cfg.train.max_steps is None  # the preset's is cleared


def test_options_become_config_values_with_lora_split():
    opts = LaunchOptions(lora="r=4,targets=c_attn,c_fc", seq_len=32, tensorboard=True)
    assert opts.overrides() == {"finetune.lora_r": "4",
                                "finetune.lora_targets": ["c_attn", "c_fc"],
                                "model.block_size": 32, "runtime.tensorboard": True}
    assert LaunchOptions().overrides() == {}
    with pytest.raises(UsageError, match="needs a rank"):
        LaunchOptions(lora="alpha=2").overrides()


def test_batch_size_auto_is_parsed_at_the_edge(monkeypatch, tmp_path):
    req, _cfg = planned(monkeypatch, tmp_path, "--batch-size", "4")
    assert req.options.batch_size == 4 and not req.auto_batch
    req, _cfg = planned(monkeypatch, tmp_path, "--batch-size", "auto")
    assert req.options.batch_size is None and req.auto_batch


def test_front_ends_leave_config_checkpoints_and_inference_to_the_app_layer():
    for path in [*(SRC / "cli").glob("*.py"), *(SRC / "tui").rglob("*.py")]:
        text = path.read_text()
        for banned in ("llm_trainer.inference", "load_config", "list_presets",
                       "config.json\")", "read_json", '"train.', '"runtime.', '"data.',
                       '"model.', '"finetune.'):
            assert banned not in text, f"{path.name}: {banned}"


def test_the_panel_names_a_dataset_only_when_it_is_not_the_presets(tmp_path):
    svc = Service(tmp_path)
    preset = svc.preset_defaults("tiny")
    assert "tiny" in svc.presets() and preset.batch_size >= 1
    same = svc.panel_request(LaunchOptions(dataset=preset.dataset, seq_len=32), preset="tiny")
    assert same.options.dataset is None and same.options.seq_len == 32
    assert same.preset == "tiny" and same.command == ["llm-trainer", "tui"]
    other = svc.panel_request(LaunchOptions(dataset="my.txt"), preset="tiny")
    assert other.options.dataset == "my.txt"
    existing = svc.panel_request(LaunchOptions(dataset=preset.dataset, seq_len=32),
                                 preset="tiny", model="m")
    assert existing.options.dataset == preset.dataset and existing.options.seq_len is None
    assert existing.preset is None and existing.model == "m"


def test_hugging_face_names_select_our_layers():
    """q/k/v_proj all name the fused c_attn, gate/up_proj the fused c_fc, o_proj and down_proj
    the attention's and the MLP's c_proj; both outputs together are c_proj."""
    from llm_trainer.app.options import parse_lora
    from llm_trainer.config import RunConfig
    from llm_trainer.errors import ConfigError

    def targets(spec):
        return RunConfig().replace(**parse_lora(f"r=8,targets={spec}")).finetune.lora_targets

    assert targets("q_proj,v_proj") == ("c_attn",)
    assert targets("q_proj,k_proj,v_proj,o_proj") == ("c_attn", "attn.c_proj")
    assert targets("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj") == \
        ("c_attn", "c_proj", "c_fc")
    assert targets("c_attn,c_proj,c_fc") == ("c_attn", "c_proj", "c_fc")
    assert targets("down_proj") == ("mlp.c_proj",)
    cfg = RunConfig().replace(**parse_lora("r=8,use_dora=true,use_rslora=yes"))
    assert cfg.finetune.lora_use_dora and cfg.finetune.lora_use_rslora
    with pytest.raises(ConfigError, match="no module named 'qkv_proj'"):
        targets("qkv_proj")
