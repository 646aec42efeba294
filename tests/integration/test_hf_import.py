"""`--init-from hf:FOLDER` as the inverse of `models export --format hf`: GPT-2 (tied and
untied), Llama and Qwen3 folders, whether we exported them or transformers saved them, import
with the same weights and logits; a folder with any part our GPT cannot represent is refused
in one line before anything is written. Tiny in-process models: no training (one slow test
trains through the CLI)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llm_trainer.config import ARCH_KEYS
from llm_trainer.errors import UsageError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.hf_import import check_complete, inspect_hf_folder, load_hf_weights
from llm_trainer.model.shape import ModelShape
from tests.helpers import imported_model
from tests.integration.test_export_llama import LLAMA, checkpoint


def imported(folder, block_size: int | None = None) -> GPT:
    return imported_model(inspect_hf_folder(f"hf:{folder}"), block_size)


ROUND_TRIPS = {
    "gpt2-untied": ("GPT-2", dict(tie_embeddings=False)),
    "gpt2-tied-gelu": ("GPT-2", dict(activation="gelu")),
    "llama-tied-bias": ("Llama", dict(**LLAMA, bias=True)),
    "llama-untied": ("Llama", dict(**LLAMA, bias=False, tie_embeddings=False,
                                   rope_theta=500.0)),
    "qwen3-untied": ("Qwen3", dict(**LLAMA, qk_norm=True, bias=False, tie_embeddings=False)),
    "qwen3-tied": ("Qwen3", dict(**LLAMA, qk_norm=True, bias=False)),
    "llama-gqa": ("Llama", dict(**LLAMA, bias=False, n_head=4, n_kv_head=2, mlp_width=80,
                                norm_eps=1e-6)),
    "qwen3-gqa-wide-heads": ("Qwen3", dict(**LLAMA, qk_norm=True, bias=False, n_head=4,
                                           n_kv_head=1, head_size=16)),
    "gpt2-inner-eps": ("GPT-2", dict(mlp_width=48, norm_eps=1e-6)),
}


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_export_then_import_gives_the_same_model(tmp_path, case):
    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.export import export

    family, options = ROUND_TRIPS[case]
    ckpt = checkpoint(tmp_path, case, **options)
    out = export(ckpt, tmp_path / "hf", "hf")
    src = inspect_hf_folder(f"hf:{out}")
    assert src.family == family
    assert src.arch == {k: getattr(ckpt.shape, k) for k in ARCH_KEYS}
    ours, back = load_model(ckpt).eval(), imported(out)
    want, got = ours.state_dict(), back.state_dict()
    assert want.keys() == got.keys()
    for name, value in want.items():
        assert torch.equal(got[name], value), name
    tied = back.lm_head.weight.data_ptr() == back.transformer.wte.weight.data_ptr()
    assert tied == ckpt.shape.tie_embeddings
    x = torch.randint(0, ckpt.shape.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(back(x)[0], ours(x)[0])


def test_a_gpt2_trained_without_biases_comes_back_with_zero_biases(tmp_path):
    """GPT-2 always has biases: the export writes zeros, the import keeps them (trainable)."""
    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.export import export

    ckpt = checkpoint(tmp_path, "nobias", bias=False, tie_embeddings=False)
    back = imported(export(ckpt, tmp_path / "hf", "hf"))
    assert back.shape.bias and back.transformer.h[0].attn.c_attn.bias.abs().sum() == 0
    x = torch.randint(0, ckpt.shape.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.allclose(back(x)[0], load_model(ckpt).eval()(x)[0], atol=1e-6)


def save_hf(folder, cls: str, **config):
    """A tiny random transformers model saved with save_pretrained, every weight (norms,
    biases) away from its init, and a byte tokenizer."""
    import transformers  # here, not at collection: its import costs each test worker ~1 s

    from llm_trainer.data.tokenizer import TextTokenizer

    if cls == "GPT2LMHeadModel":
        cfg = transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=2,
                                      n_head=2, **config)
    else:
        size = dict(vocab_size=300, hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                    rms_norm_eps=1e-5, head_dim=16)
        cfg_cls = transformers.LlamaConfig if cls == "LlamaForCausalLM" else \
            transformers.Qwen3Config
        cfg = cfg_cls(**(size | config))
    torch.manual_seed(0)
    model = getattr(transformers, cls)(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    TextTokenizer.build_byte().save(folder / "tokenizer.json")
    return model.eval()


@pytest.mark.slow  # builds and saves transformers models: seconds each
@pytest.mark.parametrize(("cls", "config"), [
    ("LlamaForCausalLM", {}),
    ("LlamaForCausalLM", dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                              rope_theta=500.0)),
    ("Qwen3ForCausalLM", {}),
    ("GPT2LMHeadModel", dict(tie_word_embeddings=False)),
    # what hub models have: grouped-query attention, their own MLP width and norm eps
    ("LlamaForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                              intermediate_size=128, rms_norm_eps=1e-6)),
    ("Qwen3ForCausalLM", dict(num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                              rms_norm_eps=1e-6)),
    ("GPT2LMHeadModel", dict(n_inner=48, layer_norm_epsilon=1e-6)),
], ids=["llama", "llama-tied-bias", "qwen3", "gpt2-untied", "llama-gqa", "qwen3-gqa-wide",
        "gpt2-inner-eps"])
def test_a_folder_transformers_saved_imports_with_its_logits(tmp_path, cls, config):
    hf = save_hf(tmp_path / "hf", cls, **config)
    ours = imported(tmp_path / "hf")
    assert ours.shape.tie_embeddings == hf.config.tie_word_embeddings
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        diff = (hf(x).logits - ours(x)[0]).abs().max().item()
    assert diff <= 1e-4
    # a shorter context (--seq-len) computes the same on what fits in it
    with torch.no_grad():
        short = imported(tmp_path / "hf", block_size=24)(x)[0]
    assert torch.allclose(short, ours(x)[0], atol=1e-6)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama") / "hf"
    save_hf(folder, "LlamaForCausalLM")
    return folder


def edited(folder, tmp_path, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    cfg = json.loads((copy / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (copy / "config.json").write_text(json.dumps(cfg))
    return copy


@pytest.mark.parametrize(("changes", "named"), [
    (dict(num_key_value_heads=3), "uses 3 key/value heads for 2 query heads: this trainer's "
                                  "GPT needs num_attention_heads a multiple of "
                                  "num_key_value_heads"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
     "uses rope scaling (linear): this trainer's GPT needs plain rotary embeddings"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}),
     "uses rope scaling (yarn)"),
    (dict(hidden_act="gelu"), "uses hidden_act 'gelu': this trainer's GPT needs silu"),
    (dict(head_dim=7), "uses heads of 7: this trainer's GPT needs an even head size"),
    (dict(attention_bias=True), "uses attention_bias true with mlp_bias false"),
    (dict(model_type="qwen3", attention_bias=True), "attention_bias false (its Qwen3 has no "
                                                    "MLP biases)"),
    (dict(model_type="qwen3", use_sliding_window=True), "uses sliding-window attention"),
    (dict(num_key_value_heads=3, hidden_act="relu"), "(also hidden_act 'relu')"),
    (dict(model_type="mistral"), "holds a mistral model, which this trainer cannot import"),
    (dict(hidden_size=None), "has no hidden_size: not a complete LlamaForCausalLM config"),
], ids=["kv-heads", "rope-scaling", "rope-parameters", "act", "head-dim", "bias",
        "qwen3-bias", "sliding", "two", "mistral", "incomplete"])
def test_a_folder_that_does_not_fit_is_refused_in_one_line(llama_folder, tmp_path, changes,
                                                           named):
    with pytest.raises(UsageError) as err:
        inspect_hf_folder(f"hf:{edited(llama_folder, tmp_path, **changes)}")
    message = str(err.value)
    assert named in message, message
    assert "\n" not in message and "\n" not in (err.value.hint or "")


def test_a_tied_folder_whose_head_differs_is_refused(llama_folder, tmp_path):
    folder = edited(llama_folder, tmp_path, tie_word_embeddings=True)  # lm_head.weight stays
    src = inspect_hf_folder(f"hf:{folder}")
    with pytest.raises(UsageError, match="lm_head that differs from the token embedding"):
        load_hf_weights(src, 32)


def test_a_missing_llama_tensor_is_named_by_its_hf_name(llama_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = edited(llama_folder, tmp_path)
    sd = load_file(str(folder / "model.safetensors"))
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, str(folder / "model.safetensors"))
    src = inspect_hf_folder(f"hf:{folder}")
    model = GPT(ModelShape(vocab_size=src.vocab_size, **src.arch))
    with pytest.raises(UsageError, match="lacks model.layers.1.mlp.gate_proj.weight \\+ "
                                         "model.layers.1.mlp.up_proj.weight"):
        check_complete(load_hf_weights(src, 32), model.state_dict(), src)


def test_the_cli_refuses_a_folder_that_does_not_fit_before_writing_anything(
        llama_folder, tmp_path, monkeypatch, capsys):
    from llm_trainer.cli import main
    from tests.helpers import corpus_text

    home = tmp_path / "home"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(2_000))
    bad = edited(llama_folder, tmp_path, num_key_value_heads=3)  # for 2 query heads
    monkeypatch.setenv("LLM_TRAINER_HOME", str(home))  # the CLI's entry point, in-process
    monkeypatch.chdir(home)
    assert main(["train", "--init-from", f"hf:{bad}", "--dataset", "corpus.txt", "--preset",
                 "tiny", "--foreground"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: --init-from: ") and "3 key/value heads" in err[0]
    assert len(err) == 1 or err[1].startswith("hint: ")
    assert sorted(p.name for p in home.iterdir()) == ["corpus.txt"]


@pytest.mark.slow
def test_a_gqa_llama_folder_fine_tunes_generates_and_exports_through_the_cli(tmp_path):
    """A hub-shaped Llama (grouped-query attention, its own MLP width and norm eps): import,
    train, generate with the KV cache, export back to transformers."""
    from safetensors.torch import load_file

    from tests.helpers import corpus_text, run_cli

    folder = tmp_path / "smol"
    save_hf(folder, "LlamaForCausalLM", num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, intermediate_size=128, rms_norm_eps=1e-6)
    home = tmp_path / "home"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(20_000))
    proc = run_cli("train", "--init-from", f"hf:{folder}", "--name", "llama-ft",
                   "--dataset", "corpus.txt", "--preset", "tiny", "--max-steps", "4",
                   "--batch-size", "2", "--seq-len", "16", "--set", "train.eval_interval=4",
                   "--foreground", "--sample", "0", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    step = home / "checkpoints" / "llama-ft" / "step-00000004"
    cfg = json.loads((step / "config.json").read_text())["config"]["model"]
    assert (cfg["pos"], cfg["norm"], cfg["activation"], cfg["tie_embeddings"]) == \
        ("rope", "rmsnorm", "swiglu", False)
    assert (cfg["n_kv_head"], cfg["head_size"], cfg["mlp_width"], cfg["norm_eps"]) == \
        (2, None, 128, 1e-6)
    shown = run_cli("models", "show", "llama-ft", home=home).stdout
    assert "4 heads sharing 2 key/value heads" in shown and "MLP width 128" in shown
    after = load_file(str(step / "model.safetensors"))
    before = imported(folder, block_size=16).state_dict()
    assert after.keys() <= before.keys()
    # fine-tuned from the folder's weights: close to them, not equal
    w = "transformer.h.0.attn.c_attn.weight"
    assert after[w].shape == (32 + 2 * 16, 32)  # q 4 x 8, k and v 2 x 8
    assert not torch.equal(after[w], before[w])
    assert (after[w] - before[w]).abs().max() < 0.05

    gen = run_cli("generate", "--model", "llama-ft", "--prompt", "the", "--max-new-tokens",
                  "12", "--seed", "1", home=home)
    assert gen.returncode == 0, gen.stderr
    out = tmp_path / "back"
    assert run_cli("models", "export", "llama-ft", "--format", "hf", "--out", str(out),
                   home=home).returncode == 0
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert hf.config.num_key_value_heads == 2 and hf.config.rms_norm_eps == 1e-6
    ours = imported(out)
    x = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)[0]).abs().max().item() <= 1e-4


def test_a_sharded_folder_imports(tmp_path):
    """Bigger hub models ship model.safetensors.index.json and several shards."""
    hf = save_hf(tmp_path / "one", "LlamaForCausalLM", num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shutil.copy(tmp_path / "one" / "tokenizer.json", tmp_path / "sharded" / "tokenizer.json")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    ours = imported(tmp_path / "sharded")
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)[0]).abs().max().item() <= 1e-4
