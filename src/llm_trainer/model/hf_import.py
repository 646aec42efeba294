"""Import a Hugging Face GPT-2 folder on disk (GPT-2 small, DistilGPT2, your own) to fine-tune.

``inspect_hf_folder`` checks the folder with JSON and the tokenizers library only (no torch:
the launch planner calls it before anything starts) and refuses, in one line, what this model
cannot represent. ``load_hf_weights`` (torch) reads the weights into our parameter names:
they match ``GPT2LMHeadModel``'s one to one, except that HF's ``Conv1D`` layers store their
weights transposed, older files lack the ``transformer.`` prefix and carry the causal-mask
buffers (``attn.bias``, ``attn.masked_bias``), and the tied ``lm_head`` may be absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.config import ARCH_KEYS
from llm_trainer.errors import UsageError

PREFIX = "hf:"
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class HFSource:
    """A checked GPT-2 folder: where its parts are and the architecture it implies."""

    path: Path
    weights: Path
    tokenizer: Path
    vocab_size: int  # rows of the embedding (may exceed the tokenizer's size: padding)
    n_positions: int
    arch: dict[str, Any]  # our model.* keys: n_layer, n_head, n_embd, block_size, bias, ...

    @property
    def spec(self) -> str:
        return f"{PREFIX}{self.path}"


def parse_init_from(spec: str) -> Path:
    if not spec.startswith(PREFIX) or not spec[len(PREFIX):].strip():
        raise UsageError(f"--init-from {spec!r}: expected hf:PATH to a local GPT-2 folder",
                         hint="e.g. --init-from hf:~/models/distilgpt2 (config.json, "
                              "model.safetensors, tokenizer.json)")
    return Path(spec[len(PREFIX):].strip()).expanduser().resolve()


def inspect_hf_folder(spec: str) -> HFSource:
    """Check a ``hf:PATH`` folder; a UsageError names the first thing that is wrong."""
    path = parse_init_from(spec)
    hint = "a transformers GPT-2 folder, as `GPT2LMHeadModel.save_pretrained` writes it"
    if not path.is_dir():
        raise UsageError(f"--init-from: {path} is not a folder", hint=hint)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"--init-from: {path} has no config.json", hint=hint)
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--init-from: {cfg_path} is not readable JSON ({exc})") from None
    kind = hf.get("model_type")
    if kind != "gpt2":
        raise UsageError(f"--init-from: {path} holds a {kind or 'unknown'!s} model, not GPT-2",
                         hint="only GPT-2 architectures (model_type gpt2) can be imported")
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
    if weights is None:
        raise UsageError(f"--init-from: {path} has no weights",
                         hint=f"expected one of {', '.join(WEIGHT_FILES)}")
    tok_path = path / "tokenizer.json"
    if not tok_path.is_file():
        raise UsageError(f"--init-from: {path} has no tokenizer.json",
                         hint="save the fast tokenizer too: tokenizer.save_pretrained(FOLDER)")
    n_embd, n_inner = int(hf.get("n_embd", 768)), hf.get("n_inner")
    problems = []
    if n_inner not in (None, 4 * n_embd):
        problems.append(f"n_inner {n_inner} (this model's MLP is 4 x n_embd = {4 * n_embd})")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        problems.append(f"activation_function {act!r} (supported: {', '.join(ACTIVATIONS)})")
    if not hf.get("tie_word_embeddings", True):
        problems.append("untied input and output embeddings")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            problems.append(f"{flag}")
    if not hf.get("scale_attn_weights", True):
        problems.append("scale_attn_weights false")
    if abs(float(hf.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon {hf['layer_norm_epsilon']} (this model uses 1e-5)")
    if problems:
        raise UsageError(f"--init-from: {path} uses {problems[0]}, which this trainer's GPT "
                         f"cannot represent", hint="import a standard GPT-2 / DistilGPT2 model")
    vocab = int(hf.get("vocab_size", 50257))
    n_tokens = _tokenizer_size(tok_path)
    if n_tokens > vocab:
        raise UsageError(f"--init-from: {tok_path} has {n_tokens:,} tokens but the model only "
                         f"{vocab:,} embeddings: the tokenizer does not belong to this model",
                         hint="put the tokenizer.json saved with these weights in the folder")
    n_pos = int(hf.get("n_positions", hf.get("n_ctx", 1024)))
    arch = {"n_layer": int(hf.get("n_layer", 12)), "n_head": int(hf.get("n_head", 12)),
            "n_embd": n_embd, "block_size": n_pos, "bias": True,
            "activation": ACTIVATIONS[act],
            # GPT-2's block: nothing else (a preset, a config file) may change these
            "pos": "learned", "rope_theta": 10000.0, "norm": "layernorm", "qk_norm": False,
            "tie_embeddings": True}
    return HFSource(path, weights, tok_path, vocab, n_pos, arch)


def _tokenizer_size(path: Path) -> int:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as exc:
        raise UsageError(f"--init-from: {path} is not a tokenizer.json the tokenizers library "
                         f"can load: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def _same(value: Any, want: Any) -> bool:
    """An option's value (a --set string such as "false" or "1e4", or a YAML value) equals
    the folder's."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return False
    if str(value) == str(want):
        return True
    if isinstance(value, bool) or isinstance(want, bool):
        return False
    try:
        return float(value) == float(want)
    except (TypeError, ValueError):
        return False


def arch_changes(src: HFSource, overrides: dict[str, Any]) -> list[str]:
    """The user's ``model.*`` options that would change the imported architecture (a shorter
    context is allowed: it keeps the first ``block_size`` rows of the position table)."""
    out = []
    for key in ARCH_KEYS:
        value = overrides.get(f"model.{key}")
        if value is None or _same(value, src.arch[key]):
            continue
        if key == "block_size" and 2 <= int(value) <= src.n_positions:
            continue
        out.append(f"model.{key}={value} (the folder's model has {src.arch[key]})")
    return out


def load_hf_weights(src: HFSource, block_size: int) -> dict[str, Any]:
    """The folder's weights as our float32 state dict (``lm_head.weight`` tied to ``wte``),
    the position table cut to ``block_size``. Raises UsageError when a tensor is missing."""
    import torch

    raw = _read_tensors(src.weights)
    sd: dict[str, torch.Tensor] = {}
    for name, tensor in raw.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older transformers versions, not weights
        key = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
        tensor = tensor.to(torch.float32)
        if key.endswith(CONV1D):
            tensor = tensor.t()
        sd[key] = tensor.contiguous()
    wte = sd.get("transformer.wte.weight")
    head = sd.pop("lm_head.weight", None)
    if wte is not None and head is not None and not torch.equal(head, wte):
        raise UsageError(f"--init-from: {src.weights.name} has an lm_head that differs from "
                         "the token embedding (untied), which this model cannot represent")
    if wte is not None:
        sd["lm_head.weight"] = wte
    if "transformer.wpe.weight" in sd:
        sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:block_size].contiguous()
    return sd


def check_complete(sd: dict[str, Any], expected: dict[str, Any], src: HFSource) -> None:
    """Every parameter of ``expected`` (a fresh model's state dict) present with its shape."""
    for name, ref in expected.items():
        got = sd.get(name)
        if got is None:
            raise UsageError(f"--init-from: {src.weights.name} lacks {name}: not a complete "
                             f"GPT-2 model of the size its config.json describes")
        if tuple(got.shape) != tuple(ref.shape):
            raise UsageError(f"--init-from: {name} has shape {tuple(got.shape)}, config.json "
                             f"implies {tuple(ref.shape)}")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise UsageError(f"--init-from: {src.weights.name} has tensors this GPT-2 does not "
                         f"know: {', '.join(extra[:3])}")


def _read_tensors(path: Path) -> dict[str, Any]:
    import torch

    if path.name == "pytorch_model.bin":
        # weights_only: a pickle from the internet must not run code
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UsageError(f"--init-from: {path} cannot be loaded as plain tensors "
                             f"({type(exc).__name__})",
                             hint="convert it to model.safetensors with transformers") from None
    from safetensors.torch import load_file

    if path.name.endswith(".index.json"):
        index = json.loads(path.read_text(encoding="utf-8"))
        out: dict[str, Any] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            out.update(load_file(str(path.parent / shard)))
        return out
    return load_file(str(path))
