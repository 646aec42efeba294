"""The state-dict adapters of model.families: each Hugging Face family's to_hf and from_hf
are inverses, and the exports meet them without importing each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import llm_trainer
from llm_trainer.model.families import FAMILIES, GPT2Adapter, family_for
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape

TINY = dict(vocab_size=40, block_size=8, n_layer=2, n_head=4, n_embd=32)
SHAPES = {
    "GPT-2": ModelShape(**TINY),
    "Llama": ModelShape(**TINY, pos="rope", norm="rmsnorm", activation="swiglu", n_kv_head=2,
                        tie_embeddings=False),
    "Qwen3": ModelShape(**TINY, pos="rope", norm="rmsnorm", activation="swiglu", qk_norm=True,
                        bias=False, head_size=16),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_from_hf_undoes_to_hf(name):
    shape = SHAPES[name]
    family = family_for(shape)
    assert family is FAMILIES[name] and family.misfits(shape) == []
    torch.manual_seed(0)
    sd = GPT(shape).state_dict()
    adapter = family(shape)
    back = adapter.from_hf(adapter.to_hf(sd))
    want = {k: v for k, v in sd.items() if k != "lm_head.weight" or not shape.tie_embeddings}
    assert set(back) == set(want)
    for k, v in want.items():
        assert torch.equal(back[k], v), k


def test_gpt2_without_biases_gets_zero_biases():
    shape = ModelShape(**TINY, bias=False)
    hf = GPT2Adapter(shape).to_hf(GPT(shape).state_dict())
    assert torch.count_nonzero(hf["transformer.h.1.attn.c_attn.bias"]) == 0
    assert hf["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)


def _imports(module: str) -> set[str]:
    path = Path(llm_trainer.__file__).parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module}


def test_the_gguf_export_does_not_import_the_hf_export():
    assert "llm_trainer.inference.export" not in _imports("llm_trainer.inference.gguf_export")



def test_the_model_layer_does_not_discover_checkpoints():
    for module in ("llm_trainer.model.hf_import", "llm_trainer.model.families",
                   "llm_trainer.model.shape", "llm_trainer.model.gpt"):
        assert not any(m.startswith(("llm_trainer.store", "llm_trainer.checkpoint_io"))
                       for m in _imports(module)), module
