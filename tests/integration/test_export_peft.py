"""--format peft: a LoRA checkpoint's adapters as a peft adapter folder, loaded by peft itself
(``PeftModel.from_pretrained``) on the transformers model ``--format hf`` writes for the base,
and compared logit for logit with ours: GPT-2 (fused c_attn on Conv1D, fan_in_fan_out), Llama
and Qwen3 (c_attn split into q/k/v_proj, swiglu c_fc into gate/up_proj), with rsLoRA, DoRA
and the rows a chat template added. Tiny in-process checkpoints: no training (every adapter
weight is set away from its init, so B is not zero and DoRA's magnitude is not the norm)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from llm_trainer.errors import UsageError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape

LLAMA = dict(pos="rope", norm="rmsnorm", activation="swiglu", bias=False)
ADDED = 2  # rows a chat template added (trained as peft's Trainable Tokens)


def _save(root, name, model, shape, tok, config=None):
    from llm_trainer.checkpoint_io import read_checkpoint, save_checkpoint
    from llm_trainer.config import RunConfig

    path = save_checkpoint(root / "checkpoints" / name, model=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                           trainer_state={"step": 1, "schedule": {}},
                           config=config or RunConfig(), shape=shape, tokenizer=tok, step=1,
                           epoch=0.1, val_loss=None)
    return read_checkpoint(path)


def lora_pair(root, settings: dict, tokens: bool, **options):
    """(the base as a full checkpoint, a LoRA checkpoint on that base with ``settings``);
    with ``tokens`` the base has ADDED rows more than the model it grew from, saved as
    ``original``."""
    from llm_trainer.checkpoint_io import save_base
    from llm_trainer.config import RunConfig
    from llm_trainer.data.tokenizer import TextTokenizer
    from llm_trainer.model.lora import apply_lora

    tok = TextTokenizer.build_byte()
    shape = ModelShape(**(dict(vocab_size=tok.vocab_size, block_size=16, n_layer=2,
                               n_head=2, n_embd=32) | options))
    torch.manual_seed(0)
    model = GPT(shape)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if tokens:
        _save(root, "original", model, shape, tok)
        model.grow_vocab(shape.vocab_size + ADDED)
        shape = model.shape
        settings = {**settings, "tokens": list(range(shape.vocab_size - ADDED,
                                                     shape.vocab_size))}
    base = _save(root, "base-model", model, shape, tok)
    save_base(root / "checkpoints" / "lora", model=model, config=RunConfig(), shape=shape,
              tokenizer=tok, source="hf:/nowhere")
    model = apply_lora(model, settings)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)  # B, DoRA's magnitude, the token rows
    return base, _save(root, "lora", model, shape, tok)


CASES = {
    # GPT-2: c_attn fused in HF too; attn.c_proj alone (peft must not adapt the MLP's c_proj)
    "gpt2": ({}, {"targets": ["c_attn", "attn.c_proj"]}, False),
    "gpt2-dora-rslora-tokens": ({}, {"targets": ["c_attn", "c_proj", "c_fc"], "use_dora": True,
                                     "use_rslora": True}, True),
    "llama-gqa-dora-tokens": (dict(**LLAMA, n_head=4, n_kv_head=2, tie_embeddings=False),
                              {"targets": ["c_attn", "c_fc", "mlp.c_proj"], "use_dora": True},
                              True),
    "llama-dora-rslora": (LLAMA | {"bias": True}, {"targets": ["c_attn", "c_proj", "c_fc"],
                                                    "use_dora": True, "use_rslora": True},
                          False),
    "qwen3-dora-tokens": (dict(**LLAMA, qk_norm=True, n_head=4, n_kv_head=1, head_size=16),
                          {"targets": ["c_attn", "attn.c_proj"], "use_dora": True}, True),
}
FAST_CASES = ()  # all slow: building and running transformers models takes seconds each


@pytest.mark.parametrize("case", [c if c in FAST_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in CASES])
def test_peft_loads_the_adapters_on_the_hf_export_with_our_logits(tmp_path, case):
    transformers = pytest.importorskip("transformers")
    from peft import PeftModel

    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.export import export

    options, settings, tokens = CASES[case]
    base, ckpt = lora_pair(tmp_path, {"r": 4, "alpha": 8.0, "dropout": 0.1, **settings},
                           tokens, **options)
    hf_base = export(base, tmp_path / "hf", "hf")
    out = export(ckpt, tmp_path / "adapter", "peft")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json",
                                                      "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert config["use_dora"] == bool(settings.get("use_dora"))
    assert config["use_rslora"] == bool(settings.get("use_rslora"))
    assert config["fan_in_fan_out"] == case.startswith("gpt2")
    keys = load_file(str(out / "adapter_model.safetensors"))
    if case.startswith("gpt2"):
        assert "c_proj" in config["target_modules"] or "attn.c_proj" in config["target_modules"]
    else:  # fused layers split into Hugging Face's projections, with its key names
        assert {"q_proj", "k_proj", "v_proj"} <= set(config["target_modules"])
        assert "c_attn" not in json.dumps(config) and not any("c_attn" in k for k in keys)
        assert "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight" in keys
    assert any("lora_magnitude_vector" in k for k in keys) == bool(settings.get("use_dora"))

    ids = torch.tensor([[1, 5, 9, 2, 7, 3, 250, 4]])
    if tokens:
        ids[0, 3], ids[0, 6] = ckpt.shape.vocab_size - 2, ckpt.shape.vocab_size - 1
    with torch.no_grad():
        ours = load_model(ckpt, merged=False).eval()(ids)[0]
        merged = load_model(ckpt).eval()(ids)[0]
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_base)).eval()
        peft_model = PeftModel.from_pretrained(hf, str(out)).eval()
        theirs = peft_model(ids).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-5
    assert (merged - theirs).abs().max().item() < 1e-4
    # the adapters change the model (a base without them computes something else)
    with torch.no_grad():
        plain = transformers.AutoModelForCausalLM.from_pretrained(str(hf_base)).eval()(ids)
    assert (plain.logits - theirs).abs().max().item() > 1e-2


@pytest.mark.slow  # builds transformers models: seconds the fast suite cannot spare
def test_rslora_and_dora_compute_peft_s_definitions_on_our_layers(tmp_path):
    """One adapted layer, computed by hand: rsLoRA scales B A by alpha / sqrt(r); DoRA takes
    the direction of W + s B A row by row and the trained magnitude m per output row:
    y = m / ||W + s B A||_row * ((W + s B A) x) + b (peft's DoraLinearLayer, no dropout)."""
    from llm_trainer.model.lora import apply_lora

    torch.manual_seed(1)
    model = GPT(ModelShape(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))
    model = apply_lora(model, {"r": 4, "alpha": 6.0, "dropout": 0.0, "targets": ["c_attn"],
                               "use_rslora": True, "use_dora": True})
    layer = model.transformer.h[0].attn.c_attn
    with torch.no_grad():
        for p in layer.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    scale = 6.0 / math.sqrt(4)
    assert layer.scaling["default"] == pytest.approx(scale)
    W, b = layer.base_layer.weight, layer.base_layer.bias
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"].weight
    x = torch.randn(3, 16)
    with torch.no_grad():
        direction = W + scale * B @ A
        want = (m / direction.norm(dim=1)) * (x @ direction.T) + b
        assert (layer(x) - want).abs().max().item() < 1e-5


def test_a_full_weights_model_is_refused_for_peft(tmp_path):
    from llm_trainer.inference.export import export

    base, _ = lora_pair(tmp_path, {"r": 2, "alpha": 4.0, "dropout": 0.0,
                                   "targets": ["c_attn"]}, False)
    with pytest.raises(UsageError, match="--format peft is for a model trained with --lora"):
        export(base, tmp_path / "adapter", "peft")
    assert not (tmp_path / "adapter").exists()


def test_an_adapter_without_a_transformers_base_is_refused(tmp_path):
    """relu2 has no transformers class: peft would have no model to put the adapter on."""
    from llm_trainer.inference.export import export

    _, ckpt = lora_pair(tmp_path, {"r": 2, "alpha": 4.0, "dropout": 0.0,
                                   "targets": ["c_attn"]}, False, activation="relu2")
    with pytest.raises(UsageError, match="--format peft needs a base that --format hf can "
                                         "write: --format hf cannot represent this model: "
                                         "activation relu2"):
        export(ckpt, tmp_path / "adapter", "peft")
    assert not (tmp_path / "adapter").exists()



@pytest.mark.slow
@pytest.mark.parametrize("case", ["gpt2-dora-rslora-tokens", "llama-gqa-dora-tokens"])
def test_the_base_without_the_added_tokens_loads_the_adapter_once_resized(tmp_path, case):
    """The folder a chat model was imported from lacks the rows its template added: resized
    (what the export prints), it takes the adapter and computes ours, since peft's Trainable
    Tokens replace those rows whatever the base holds."""
    transformers = pytest.importorskip("transformers")
    from peft import PeftModel

    from llm_trainer.checkpoint_io import load_model, read_checkpoint
    from llm_trainer.inference.export import export
    from llm_trainer.inference.peft_export import adapter_base, base_model_path
    from llm_trainer.store.checkpoints import resolve_checkpoint

    options, settings, _ = CASES[case]
    _, ckpt = lora_pair(tmp_path, {"r": 4, "alpha": 8.0, "dropout": 0.0, **settings}, True,
                        **options)
    original = read_checkpoint(resolve_checkpoint(tmp_path / "checkpoints" / "original",
                                                  "latest").path)
    folder = export(original, tmp_path / "hf", "hf")
    ckpt.config = ckpt.config.replace(**{"finetune.init_from": f"hf:{folder}"})
    assert base_model_path(ckpt) == str(folder)
    out = export(ckpt, tmp_path / "adapter", "peft")
    assert adapter_base(out) == (str(folder), ckpt.shape.vocab_size)
    ids = torch.tensor([[1, 5, ckpt.shape.vocab_size - 1, 7, ckpt.shape.vocab_size - 2, 3]])
    with torch.no_grad():
        ours = load_model(ckpt, merged=False).eval()(ids)[0]
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        hf.resize_token_embeddings(ckpt.shape.vocab_size)
        theirs = PeftModel.from_pretrained(hf, str(out)).eval()(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-5


@pytest.mark.slow
def test_a_lora_run_with_hugging_face_names_exports_an_adapter_peft_loads(tmp_path):
    """Through the real CLI: `--lora targets=q_proj,o_proj,use_dora=true,use_rslora=true` on
    an imported GPT-2 folder trains (q_proj: the fused c_attn), `models export --format peft`
    points the adapter at that folder and says how to load it, and peft computes our
    logits on it."""
    transformers = pytest.importorskip("transformers")
    from peft import AutoPeftModelForCausalLM, PeftModel

    from llm_trainer.checkpoint_io import load_model, read_checkpoint
    from llm_trainer.store.checkpoints import resolve_checkpoint
    from tests.helpers import corpus_text, make_hf_gpt2, run_cli

    home = tmp_path / "home"
    home.mkdir()
    (home / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    folder = make_hf_gpt2(tmp_path / "my-gpt2", corpus_text(30_000, seed=1))
    proc = run_cli("train", "--init-from", f"hf:{folder}", "--name", "adapted", "--lora",
                   "r=2,alpha=4,dropout=0.0,targets=q_proj,o_proj,use_dora=true,"
                   "use_rslora=true", "--dataset", "corpus.txt", "--preset", "tiny",
                   "--max-steps", "6", "--batch-size", "4", "--seq-len", "32", "--set",
                   "train.eval_interval=6", "--foreground", "--sample", "0", "--set",
                   "runtime.num_threads=1", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LoRA r=2 alpha=4 on c_attn, attn.c_proj" in proc.stdout
    out = tmp_path / "adapter"
    exp = run_cli("models", "export", "adapted", "--format", "peft", "--out", str(out),
                  home=home)
    assert exp.returncode == 0, exp.stderr
    assert (f"load it: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
            f"{str(folder)!r}), {str(out)!r})") in exp.stdout
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(folder)
    assert config["target_modules"] == ["attn.c_proj", "c_attn"]
    assert config["use_dora"] and config["use_rslora"]

    ckpt = read_checkpoint(resolve_checkpoint(home / "checkpoints" / "adapted", "latest").path)
    ids = torch.randint(0, ckpt.shape.vocab_size, (1, 12),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = load_model(ckpt).eval()(ids)[0]
        base = transformers.AutoModelForCausalLM.from_pretrained(config[
            "base_model_name_or_path"]).eval()
        theirs = PeftModel.from_pretrained(base, str(out)).eval()(ids).logits
        # the folder alone: peft finds the base through base_model_name_or_path
        alone = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    assert (ours - alone).abs().max().item() < 1e-4
