"""Our GPT in Hugging Face transformers' terms, one table for both directions: which class
represents which model options, and which of its tensors each of our weights is.
``inference.export`` writes folders with it; ``model.hf_import`` reads them back.

No torch here: the launch planner checks an ``--init-from`` folder before anything starts.

GPT-2: our names are GPT2LMHeadModel's; its ``Conv1D`` layers store (in, out), our
``nn.Linear`` (out, in). Llama / Qwen3: ``c_attn`` is q/k/v_proj stacked by rows (heads in the
same order), the swiglu ``c_fc`` gate_proj then up_proj; the rotary embedding already follows
Llama's convention (``rotate_half``), so no permutation either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
               "mlp.c_proj.weight")
# GPT-2's activation_function -> ours; the first name of each is the one the export writes
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


@dataclass(frozen=True)
class HFFamily:
    name: str  # what messages call it
    model_type: str  # config.json's model_type
    architecture: str  # the transformers class
    requires: dict[str, tuple]  # model option -> the values this class represents
    gqa: bool = True  # key/value heads fewer than query heads, heads of any width


HF_FAMILIES: dict[str, HFFamily] = {f.name: f for f in (
    HFFamily("GPT-2", "gpt2", "GPT2LMHeadModel",
             {"pos": ("learned",), "norm": ("layernorm",), "activation": ("gelu", "gelu_tanh"),
              "qk_norm": (False,)}, gqa=False),
    HFFamily("Llama", "llama", "LlamaForCausalLM",
             {"pos": ("rope",), "norm": ("rmsnorm",), "activation": ("swiglu",),
              "qk_norm": (False,)}),
    HFFamily("Qwen3", "qwen3", "Qwen3ForCausalLM",
             {"pos": ("rope",), "norm": ("rmsnorm",), "activation": ("swiglu",),
              "qk_norm": (True,), "bias": (False,)}),
)}
BY_MODEL_TYPE = {f.model_type: f for f in HF_FAMILIES.values()}


def show(value: Any) -> str:
    """An option value as config files spell it (booleans lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def option(shape: Any, key: str) -> Any:
    """``shape``'s value of a model option: a ModelShape's attribute or an arch dict's key."""
    return shape[key] if isinstance(shape, dict) else getattr(shape, key)


def misfits(shape: Any, family: str) -> list[str]:
    """The options of ``shape`` (a ModelShape or an arch dict) that ``family`` cannot represent,
    as "key value" (e.g. ``["pos rope", "qk_norm true"]``); empty when it fits."""
    fam = HF_FAMILIES[family]
    out = [f"{key} {show(option(shape, key))}" for key, allowed in fam.requires.items()
           if option(shape, key) not in allowed]
    if not fam.gqa:  # one key/value head per query head, each n_embd / n_head wide
        n_head, n_embd = option(shape, "n_head"), option(shape, "n_embd")
        kv, size = option(shape, "n_kv_head"), option(shape, "head_size")
        if kv not in (None, n_head):
            out.append(f"n_kv_head {kv}")
        if size is not None and size * n_head != n_embd:
            out.append(f"head_size {size}")
    return out


def requirements(family: str) -> str:
    """What ``family`` needs, in words: "pos learned, norm layernorm, activation gelu or ..."."""
    fam = HF_FAMILIES[family]
    needs = [f"{key} {' or '.join(show(v) for v in allowed)}"
             for key, allowed in fam.requires.items()]
    if not fam.gqa:
        needs.append("one key/value head per query head, n_embd / n_head wide")
    return ", ".join(needs)


def llama_weight_names(n_layer: int, *, qk_norm: bool, bias: bool,
                       tie_embeddings: bool) -> list[tuple[str, tuple[str, ...]]]:
    """(our weight, the Llama / Qwen3 tensors it is, stacked by rows in this order) for every
    weight of such a model: export splits ours into row blocks (``llama_rows``), import
    concatenates theirs."""
    names = [("transformer.wte.weight", ("model.embed_tokens.weight",)),
             ("transformer.ln_f.weight", ("model.norm.weight",))]
    if not tie_embeddings:
        names.append(("lm_head.weight", ("lm_head.weight",)))
    parts = ("weight", "bias") if bias else ("weight",)
    for i in range(n_layer):
        p, h = f"transformer.h.{i}.", f"model.layers.{i}."
        names += [(p + "ln_1.weight", (h + "input_layernorm.weight",)),
                  (p + "ln_2.weight", (h + "post_attention_layernorm.weight",))]
        if qk_norm:
            names += [(p + "attn.q_norm.weight", (h + "self_attn.q_norm.weight",)),
                      (p + "attn.k_norm.weight", (h + "self_attn.k_norm.weight",))]
        for part in parts:
            names += [
                (f"{p}attn.c_attn.{part}",
                 tuple(f"{h}self_attn.{x}_proj.{part}" for x in "qkv")),
                (f"{p}attn.c_proj.{part}", (f"{h}self_attn.o_proj.{part}",)),
                (f"{p}mlp.c_fc.{part}", (f"{h}mlp.gate_proj.{part}", f"{h}mlp.up_proj.{part}")),
                (f"{p}mlp.c_proj.{part}", (f"{h}mlp.down_proj.{part}",))]
    return names


def llama_rows(name: str, n_parts: int, *, q_dim: int, kv_dim: int, rows: int) -> list[int]:
    """How many rows of our weight ``name`` (``rows`` in all) each of its ``n_parts`` Llama
    tensors takes: q, k, v of c_attn are q_dim, kv_dim, kv_dim (grouped-query attention:
    fewer key/value rows); swiglu's gate and up are halves."""
    if n_parts == 3:
        return [q_dim, kv_dim, kv_dim]
    return [rows // n_parts] * n_parts
