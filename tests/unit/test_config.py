import pytest

from llm_trainer.config import (
    RunConfig,
    apply_overrides,
    list_presets,
    load_config,
    parse_set,
)
from llm_trainer.errors import ConfigError
from tests.helpers import run_cli


def test_every_preset_loads_and_validates():
    assert {"default", "tiny", "shakespeare-char", "small", "medium"} <= set(list_presets())
    for name in ("default", "tiny", "shakespeare-char", "small", "medium"):
        cfg = load_config(preset=name)
        assert cfg.model.n_embd % cfg.model.n_head == 0


def _shape(cfg, vocab: int = 65):
    from llm_trainer.model.shape import ModelShape

    m = cfg.model
    return ModelShape(vocab_size=vocab, block_size=m.block_size, n_layer=m.n_layer,
                      n_head=m.n_head, n_embd=m.n_embd, bias=m.bias, activation=m.activation,
                      pos=m.pos, rope_theta=m.rope_theta, norm=m.norm, qk_norm=m.qk_norm,
                      tie_embeddings=m.tie_embeddings)


@pytest.mark.parametrize("name", list_presets())
def test_every_packaged_preset_builds_its_model(name):
    _shape(load_config(preset=name))  # ModelShape checks what the config cannot


def test_the_fast_preset_keeps_shakespeare_chars_data_tokenizer_and_size():
    fast, base = load_config(preset="shakespeare-char-fast"), load_config(preset="shakespeare-char")
    size = ("n_layer", "n_head", "n_embd", "block_size")
    assert [getattr(fast.model, k) for k in size] == [getattr(base.model, k) for k in size]
    assert (fast.data.dataset, fast.data.tokenizer, fast.data.val_fraction) == (
        base.data.dataset, base.data.tokenizer, base.data.val_fraction)
    assert fast.train.optimizer == "muon" and fast.model.pos == "rope"


@pytest.mark.parametrize("name", ["modern-small", "modern-medium"])
def test_the_modern_presets_export_as_qwen3(name):
    from llm_trainer.model.families import family_for

    cfg = load_config(preset=name)
    assert cfg.train.optimizer == "muon"
    assert family_for(_shape(cfg, vocab=cfg.data.vocab_size)).name == "Qwen3"


def test_shakespeare_char_is_nanogpts_cpu_recipe():
    cfg = load_config(preset="shakespeare-char")
    m, t = cfg.model, cfg.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (4, 4, 128, 64, 0.0)
    assert t.batch_size == 12 and cfg.data.tokenizer == "char"


def test_default_is_wikitext_bpe():
    cfg = load_config()
    assert cfg.data.dataset == "wikitext-2" and cfg.data.tokenizer == "bpe"


def test_overrides_are_typed_from_strings():
    cfg = load_config(preset="tiny", overrides=parse_set(
        ["train.lr=3e-4", "model.bias=false", "train.max_steps=none", "model.n_layer=3"]))
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.bias is False
    assert cfg.train.max_steps is None
    assert cfg.model.n_layer == 3


def test_round_trip_through_dict():
    cfg = load_config(preset="small")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("key,value,expected", [
    ("train.lrr", "1", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ("trian.lr", "1", "unknown section 'trian'"),
    ("lr", "1", "'lr' is not a section.key name"),
    ("train.batch_size", "abc", "train.batch_size must be an integer >= 1 (got 'abc')"),
    ("train.batch_size", "0", "train.batch_size must be an integer >= 1 (got 0)"),
    ("train.batch_size", "2.5", "must be an integer"),
    ("train.lr", "-1", "train.lr must be a number > 0"),
    ("train.lr", "nan", "train.lr must be a finite number"),
    ("model.dropout", "1", "model.dropout must be a number >= 0 and < 1"),
    ("runtime.precision", "fp8", "runtime.precision must be one of auto, fp32, bf16, fp16"),
    ("model.bias", "maybe", "model.bias must be true or false"),
    ("data.dataset", "", "data.dataset cannot be empty"),
])
def test_bad_values_name_the_key_and_what_is_allowed(key, value, expected):
    with pytest.raises(ConfigError) as info:
        apply_overrides(RunConfig(), {key: value}, source="option")
    assert expected in str(info.value)


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="divisible by model.n_head"):
        RunConfig().replace(**{"model.n_embd": 100, "model.n_head": 3})
    # unless the heads have their own width
    cfg = RunConfig().replace(**{"model.n_embd": 100, "model.n_head": 3, "model.head_size": 32})
    assert (cfg.model.head_size, cfg.model.n_kv_head, cfg.model.mlp_width) == (32, None, None)


@pytest.mark.parametrize(("changes", "message"), [
    ({"model.n_head": 4, "model.n_kv_head": 3}, "model.n_kv_head (3) must divide model.n_head (4)"),
    ({"model.n_head": 4, "model.n_kv_head": 8}, "model.n_kv_head (8) must divide model.n_head (4)"),
    ({"model.pos": "rope", "model.head_size": 15},
     "model.pos rope needs an even head size, not 15"),
    ({"model.norm_eps": 0}, "model.norm_eps must be a number > 0"),
    ({"model.mlp_width": 0}, "model.mlp_width must be an integer >= 1"),
])
def test_attention_and_size_options_are_checked(changes, message):
    with pytest.raises(ConfigError) as info:
        RunConfig().replace(**changes)
    assert message in str(info.value)
    cfg = RunConfig().replace(**{"model.n_head": 4, "model.n_kv_head": "2",
                                 "model.mlp_width": "", "model.norm_eps": "1e-6"})
    assert (cfg.model.n_kv_head, cfg.model.mlp_width, cfg.model.norm_eps) == (2, None, 1e-6)


def test_set_needs_an_equals_sign():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set(["train.lr"])


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  n_layers: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'model.n_layer'"):
        load_config(config_file=unknown)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(config_file=tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'tinyy' \\(did you mean 'tiny'"):
        load_config(preset="tinyy")


def test_user_presets_in_home_configs(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("model:\n  n_layer: 7\n")
    assert load_config(preset="mine", home=tmp_path).model.n_layer == 7


@pytest.mark.parametrize("args,needle", [
    (["--set", "train.lrr=1"], "did you mean 'train.lr'"),
    (["--batch-size", "0"], "train.batch_size must be an integer >= 1"),
    (["--precision", "fp8"], "runtime.precision must be one of"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--bogus"], "No such option"),
])
def test_cli_config_errors_are_one_line_exit_2(tmp_path, args, needle):
    proc = run_cli("train", "--dataset", "x.txt", *args, home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1
