"""Our GPT in Hugging Face transformers' terms: one state-dict adapter per family (GPT-2,
Llama, Qwen3), as torchtitan's ``state_dict_adapter`` has one per model. Each adapter knows,
for its transformers class, which model options it represents (``misfits``), how its
config.json reads (``read_config``, the import) and is written (``hf_config``, the export),
and how our weights map onto its tensors both ways (``to_hf`` / ``from_hf``).
``model.hf_import`` reads folders with them; ``inference.export`` writes folders, and
``inference.gguf_export`` writes each family as llama.cpp's architecture of the same name
(GPT-2's layout from ``GPT2Adapter.with_biases``, Llama's and Qwen3's from ``to_hf``).

No torch at import: the launch planner checks an ``--init-from`` folder before anything
starts (the tensor methods import it when called).

GPT-2: our names are GPT2LMHeadModel's; its ``Conv1D`` layers store (in, out), our
``nn.Linear`` (out, in). Llama / Qwen3: ``c_attn`` is q/k/v_proj stacked by rows (heads in the
same order), the swiglu ``c_fc`` gate_proj then up_proj; the rotary embedding already follows
Llama's convention (``rotate_half``), so no permutation either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from llm_trainer.errors import UsageError
from llm_trainer.model.shape import ModelShape, mlp_hidden

GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
               "mlp.c_proj.weight")
# GPT-2's activation_function -> ours; the first name of each is the one the export writes
GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
# what transformers' config.json always holds for Llama / Qwen3: no defaults guessed for sizes
LLAMA_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "max_position_embeddings")
HF_EXPORTS = ("GPT-2 (pos learned, norm layernorm, activation gelu or gelu_tanh), Llama (pos "
              "rope, norm rmsnorm, activation swiglu) and Qwen3 (Llama's with qk_norm, no bias)")

Problem = tuple[str, str]  # what the folder has, what this model needs instead
# what a folder's config.json gives: embedding rows, context, our model.* keys, problems
HFArch = tuple[int, int, dict[str, Any], list[Problem]]


def show(value: Any) -> str:
    """An option value as config files spell it (booleans lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class StateDictAdapter:
    """One Hugging Face family: the class-level facts and config.json both ways; an instance
    (for one ``ModelShape``) converts state dicts."""

    name: ClassVar[str]  # what messages call it
    model_type: ClassVar[str]  # config.json's model_type
    architecture: ClassVar[str]  # the transformers class
    requires: ClassVar[dict[str, tuple]]  # model option -> the values this class represents
    gqa: ClassVar[bool] = True  # key/value heads fewer than query heads, heads of any width

    def __init__(self, shape: ModelShape) -> None:
        self.shape = shape

    @classmethod
    def misfits(cls, shape: ModelShape) -> list[str]:
        """The options of ``shape`` this family cannot represent, as "key value" (e.g.
        ``["pos rope", "qk_norm true"]``); empty when it fits."""
        out = [f"{key} {show(getattr(shape, key))}" for key, allowed in cls.requires.items()
               if getattr(shape, key) not in allowed]
        if not cls.gqa:  # one key/value head per query head, each n_embd / n_head wide
            kv, size = shape.n_kv_head, shape.head_size
            if kv not in (None, shape.n_head):
                out.append(f"n_kv_head {kv}")
            if size is not None and size * shape.n_head != shape.n_embd:
                out.append(f"head_size {size}")
        return out

    @classmethod
    def requirements(cls) -> str:
        """What this family needs, in words: "pos learned, norm layernorm, activation gelu
        or ..."."""
        needs = [f"{key} {' or '.join(show(v) for v in allowed)}"
                 for key, allowed in cls.requires.items()]
        if not cls.gqa:
            needs.append("one key/value head per query head, n_embd / n_head wide")
        return ", ".join(needs)

    @classmethod
    def read_config(cls, hf: dict, cfg_path: Path) -> HFArch:
        """A folder's config.json in our terms, with what does not map (the import)."""
        raise NotImplementedError

    def hf_config(self, eos_id: int | None) -> dict:
        """config.json for this family (the export)."""
        s = self.shape
        return {"architectures": [self.architecture], "model_type": self.model_type,
                "vocab_size": s.vocab_size, "tie_word_embeddings": s.tie_embeddings,
                "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float32",
                "bos_token_id": eos_id, "eos_token_id": eos_id}

    def to_hf(self, sd: dict[str, Any]) -> dict[str, Any]:
        """Our model's state dict -> this family's tensors (new, contiguous)."""
        raise NotImplementedError

    def from_hf(self, hf_sd: dict[str, Any]) -> dict[str, Any]:
        """This family's tensors -> our names and layout; tensors it does not know stay
        under their own names (``hf_import.check_complete`` names them)."""
        raise NotImplementedError

    def hf_names(self) -> dict[str, tuple[str, ...]]:
        """Our weight -> the tensors of this family it is made of, where the names differ."""
        return {}


class GPT2Adapter(StateDictAdapter):
    name, model_type, architecture = "GPT-2", "gpt2", "GPT2LMHeadModel"
    requires = {"pos": ("learned",), "norm": ("layernorm",),
                "activation": ("gelu", "gelu_tanh"), "qk_norm": (False,)}
    gqa = False

    @classmethod
    def read_config(cls, hf: dict, cfg_path: Path) -> HFArch:
        n_embd, n_head, n_inner = int(hf.get("n_embd", 768)), int(hf.get("n_head", 12)), \
            hf.get("n_inner")
        act = hf.get("activation_function", "gelu_new")
        ours = GPT2_ACTIVATIONS.get(act, "gelu_tanh")
        problems: list[Problem] = []
        if n_embd % n_head:
            problems.append((f"n_embd {n_embd} with n_head {n_head}",
                             "n_embd divisible by n_head"))
        if act not in GPT2_ACTIVATIONS:
            problems.append((f"activation_function {act!r}", ", ".join(GPT2_ACTIVATIONS)))
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(flag):
                problems.append((f"{flag} true", f"{flag} false"))
        if not hf.get("scale_attn_weights", True):
            problems.append(("scale_attn_weights false",
                             "attention scaled by 1/sqrt(head size)"))
        n_pos = int(hf.get("n_positions", hf.get("n_ctx", 1024)))
        width = None if n_inner in (None, mlp_hidden(n_embd, ours)) else int(n_inner)
        arch = {"n_layer": int(hf.get("n_layer", 12)), "n_head": n_head, "n_embd": n_embd,
                "block_size": n_pos, "bias": True, "activation": ours,
                # GPT-2's block: nothing else (a preset, a config file) may change these
                "pos": "learned", "rope_theta": 10000.0, "norm": "layernorm",
                "qk_norm": False, "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
                "n_kv_head": None, "head_size": None, "mlp_width": width,
                "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5))}
        return int(hf.get("vocab_size", 50257)), n_pos, arch, problems

    def hf_config(self, eos_id: int | None) -> dict:
        s = self.shape
        activation = next(hf for hf, ours in GPT2_ACTIVATIONS.items() if ours == s.activation)
        return {
            **super().hf_config(eos_id), "n_positions": s.block_size, "n_ctx": s.block_size,
            "n_embd": s.n_embd, "n_layer": s.n_layer, "n_head": s.n_head,
            "n_inner": s.mlp_width, "activation_function": activation,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "layer_norm_epsilon": s.norm_eps, "scale_attn_weights": True}

    def with_biases(self, sd: dict[str, Any]) -> dict[str, Any]:
        """Our weights as nn.Linear stores them (out, in), without a tied
        ``lm_head.weight``; a model trained without biases gets zero biases (GPT-2 and
        llama.cpp's gpt2 always have them: zeros are the same function)."""
        import torch

        s = self.shape
        out = {k: v.detach().clone().contiguous() for k, v in sd.items()
               if k != "lm_head.weight" or not s.tie_embeddings}  # tied: transformer.wte
        if not s.bias:
            for i in range(s.n_layer):
                p = f"transformer.h.{i}."
                out[p + "ln_1.bias"] = torch.zeros(s.n_embd)
                out[p + "ln_2.bias"] = torch.zeros(s.n_embd)
                out[p + "attn.c_attn.bias"] = torch.zeros(s.q_dim + 2 * s.kv_dim)
                out[p + "attn.c_proj.bias"] = torch.zeros(s.n_embd)
                out[p + "mlp.c_fc.bias"] = torch.zeros(s.mlp_hidden)
                out[p + "mlp.c_proj.bias"] = torch.zeros(s.n_embd)
            out["transformer.ln_f.bias"] = torch.zeros(s.n_embd)
        return out

    def to_hf(self, sd: dict[str, Any]) -> dict[str, Any]:
        out = self.with_biases(sd)
        for name in list(out):
            if name.endswith(GPT2_CONV1D):  # HF's Conv1D stores (in, out)
                out[name] = out[name].t().contiguous()
        return out

    def from_hf(self, hf_sd: dict[str, Any]) -> dict[str, Any]:
        """Older files lack the ``transformer.`` prefix and carry the causal-mask buffers."""
        out = {}
        for name, tensor in hf_sd.items():
            if name.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # causal-mask buffers of older transformers versions, not weights
            key = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
            if key.endswith(GPT2_CONV1D):
                tensor = tensor.t()
            out[key] = tensor.contiguous()
        return out


class LlamaAdapter(StateDictAdapter):
    name, model_type, architecture = "Llama", "llama", "LlamaForCausalLM"
    requires = {"pos": ("rope",), "norm": ("rmsnorm",), "activation": ("swiglu",),
                "qk_norm": (False,)}

    has_mlp_bias: ClassVar[bool] = True  # config.json has mlp_bias beside attention_bias

    @classmethod
    def default_head_dim(cls, hidden: int, n_head: int) -> int:
        """transformers' default where config.json has no head_dim: LlamaConfig's."""
        return hidden // n_head

    @classmethod
    def read_config(cls, hf: dict, cfg_path: Path) -> HFArch:
        missing = [k for k in LLAMA_SIZES if not isinstance(hf.get(k), int)]
        if missing:
            raise UsageError(f"--init-from: {cfg_path} has no {missing[0]}: not a complete "
                             f"{cls.architecture} config",
                             hint="a transformers folder, as `save_pretrained` writes it")
        C, n_head = hf["hidden_size"], hf["num_attention_heads"]
        problems: list[Problem] = []
        n_kv = hf.get("num_key_value_heads") or n_head
        head_dim = hf.get("head_dim") or cls.default_head_dim(C, n_head)
        if n_kv > n_head or n_head % n_kv:
            problems.append((f"{n_kv} key/value heads for {n_head} query heads",
                             "num_attention_heads a multiple of num_key_value_heads"))
        if head_dim % 2:
            problems.append((f"heads of {head_dim}", "an even head size (rotary embeddings)"))
        scaling = hf.get("rope_scaling") or {}
        params = hf.get("rope_parameters") or {}
        rope_type = scaling.get("rope_type", scaling.get("type")) if scaling else \
            params.get("rope_type", "default")
        if rope_type != "default":
            problems.append((f"rope scaling ({rope_type})",
                             "plain rotary embeddings (rope_scaling null)"))
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            problems.append((f"hidden_act {act!r}", "silu (its MLP is swiglu)"))
        width = hf["intermediate_size"]
        eps = float(hf.get("rms_norm_eps", 1e-6))  # transformers' default for both
        bias = bool(hf.get("attention_bias", False))
        if cls.has_mlp_bias and bool(hf.get("mlp_bias", False)) != bias:
            problems.append((f"attention_bias {show(bias)} with mlp_bias {show(not bias)}",
                             "both the same (one bias flag for attention and MLP)"))
        if hf.get("use_sliding_window") or any(t != "full_attention"
                                               for t in hf.get("layer_types") or ()):
            problems.append(("sliding-window attention", "full attention in every layer "
                                                         "(use_sliding_window false)"))
        theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
        arch = {"n_layer": hf["num_hidden_layers"], "n_head": n_head, "n_embd": C,
                "block_size": hf["max_position_embeddings"], "bias": bias,
                **{k: v[0] for k, v in cls.requires.items() if k != "bias"},
                "rope_theta": float(theta),
                "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
                "n_kv_head": None if n_kv == n_head else n_kv,
                "head_size": None if head_dim * n_head == C else head_dim,
                "mlp_width": None if width == mlp_hidden(C, "swiglu") else width,
                "norm_eps": eps}
        if bias not in cls.requires.get("bias", (bias,)):  # Qwen3: its MLP has no biases
            problems.append((f"attention_bias {show(bias)}", f"attention_bias false (its "
                                                             f"{cls.name} has no MLP biases)"))
        return hf["vocab_size"], hf["max_position_embeddings"], arch, problems

    def hf_config(self, eos_id: int | None) -> dict:
        s = self.shape
        return {
            **super().hf_config(eos_id), "hidden_size": s.n_embd,
            "intermediate_size": s.mlp_hidden, "num_hidden_layers": s.n_layer,
            "num_attention_heads": s.n_head, "num_key_value_heads": s.kv_heads,
            "head_dim": s.head_dim, "hidden_act": "silu",
            "max_position_embeddings": s.block_size, "rms_norm_eps": s.norm_eps,
            # rope_theta: transformers 4.x; rope_parameters: 5.x
            "rope_theta": s.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": s.rope_theta},
            "attention_bias": s.bias, "attention_dropout": 0.0, **self.extra_config()}

    def extra_config(self) -> dict:
        return {"mlp_bias": self.shape.bias, "pretraining_tp": 1}

    def weight_names(self) -> list[tuple[str, tuple[str, ...]]]:
        """(our weight, its tensors, stacked by rows in this order) for every weight:
        ``to_hf`` splits ours into row blocks, ``from_hf`` concatenates theirs."""
        s = self.shape
        names = [("transformer.wte.weight", ("model.embed_tokens.weight",)),
                 ("transformer.ln_f.weight", ("model.norm.weight",))]
        if not s.tie_embeddings:
            names.append(("lm_head.weight", ("lm_head.weight",)))
        parts = ("weight", "bias") if s.bias else ("weight",)
        for i in range(s.n_layer):
            p, h = f"transformer.h.{i}.", f"model.layers.{i}."
            names += [(p + "ln_1.weight", (h + "input_layernorm.weight",)),
                      (p + "ln_2.weight", (h + "post_attention_layernorm.weight",))]
            if s.qk_norm:
                names += [(p + "attn.q_norm.weight", (h + "self_attn.q_norm.weight",)),
                          (p + "attn.k_norm.weight", (h + "self_attn.k_norm.weight",))]
            for part in parts:
                names += [
                    (f"{p}attn.c_attn.{part}",
                     tuple(f"{h}self_attn.{x}_proj.{part}" for x in "qkv")),
                    (f"{p}attn.c_proj.{part}", (f"{h}self_attn.o_proj.{part}",)),
                    (f"{p}mlp.c_fc.{part}",
                     (f"{h}mlp.gate_proj.{part}", f"{h}mlp.up_proj.{part}")),
                    (f"{p}mlp.c_proj.{part}", (f"{h}mlp.down_proj.{part}",))]
        return names

    def hf_names(self) -> dict[str, tuple[str, ...]]:
        return dict(self.weight_names())

    def to_hf(self, sd: dict[str, Any]) -> dict[str, Any]:
        """c_attn (q_dim + 2 kv_dim, C) -> q/k/v_proj (grouped-query attention: fewer
        key/value rows), swiglu c_fc (2H, C) -> gate_proj, up_proj (its halves)."""
        s = self.shape
        out = {}
        for name, theirs in self.weight_names():
            weight = sd[name].detach()
            rows = weight.shape[0]
            sizes = [s.q_dim, s.kv_dim, s.kv_dim] if len(theirs) == 3 else \
                [rows // len(theirs)] * len(theirs)
            for hf_name, block in zip(theirs, weight.split(sizes, dim=0), strict=True):
                out[hf_name] = block.clone().contiguous()
        return out

    def from_hf(self, hf_sd: dict[str, Any]) -> dict[str, Any]:
        import torch

        raw = dict(hf_sd)
        out = {}
        for ours, theirs in self.weight_names():
            if not all(n in raw for n in theirs):
                continue
            parts = [raw.pop(n) for n in theirs]
            if len({tuple(p.shape[1:]) for p in parts}) > 1:
                raise UsageError(f"--init-from: {' / '.join(theirs)} have shapes "
                                 f"{', '.join(str(tuple(p.shape)) for p in parts)}, which do "
                                 "not stack into one layer")
            out[ours] = torch.cat(parts, dim=0).contiguous()  # (sum of rows, in)
        for name, tensor in raw.items():  # the tied head (checked by the caller), or unknown
            if not name.endswith("rotary_emb.inv_freq"):  # a buffer some old files carry
                out[name] = tensor
        return out


class Qwen3Adapter(LlamaAdapter):
    """Llama's, with qk_norm, without biases or sliding windows."""

    name, model_type, architecture = "Qwen3", "qwen3", "Qwen3ForCausalLM"
    requires = {"pos": ("rope",), "norm": ("rmsnorm",), "activation": ("swiglu",),
                "qk_norm": (True,), "bias": (False,)}

    has_mlp_bias = False

    @classmethod
    def default_head_dim(cls, hidden: int, n_head: int) -> int:
        return 128  # Qwen3Config's

    def extra_config(self) -> dict:
        return {"use_sliding_window": False, "sliding_window": None,
                "max_window_layers": self.shape.n_layer}


FAMILIES: dict[str, type[StateDictAdapter]] = {
    a.name: a for a in (GPT2Adapter, LlamaAdapter, Qwen3Adapter)}
BY_MODEL_TYPE = {a.model_type: a for a in FAMILIES.values()}


def nearest_family(shape: ModelShape) -> tuple[str, list[str]]:
    """The family that fits ``shape`` (no misfits), or the nearest one and what of ``shape``
    it cannot represent: fewest misfits; on a tie, one that has the model's qk_norm (Qwen3
    for a Llama block with qk_norm and biases: "bias true" says more than "qk_norm true")."""
    odd = {name: family.misfits(shape) for name, family in FAMILIES.items()}
    for name, names in odd.items():
        if not names:
            return name, []
    nearest = min(odd, key=lambda f: (len(odd[f]), any(o.startswith("qk_norm") for o in odd[f])))
    return nearest, odd[nearest]


def family_for(shape: ModelShape) -> type[StateDictAdapter]:
    """The Hugging Face family that represents ``shape``, or a one-line UsageError naming
    what the nearest one cannot represent."""
    nearest, misfits = nearest_family(shape)
    if not misfits:
        return FAMILIES[nearest]
    raise UsageError(f"--format hf cannot represent this model: {', '.join(misfits)} "
                     f"does not fit {nearest}, the nearest; it exports {HF_EXPORTS}",
                     hint="--format safetensors exports any model in our own layout")
