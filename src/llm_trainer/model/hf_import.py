"""Import a Hugging Face folder on disk to fine-tune: the inverse of ``models export --format
hf`` (a Hub id, ``hf:OWNER/NAME``, is made a folder first: ``llm_trainer.hub``). A folder
imports when every part of it maps exactly onto our GPT (its family's adapter in
``model.families``):

  GPT2LMHeadModel   GPT-2 / DistilGPT2: gelu_new or gelu; any n_inner, layer_norm_epsilon;
                    tied or untied head
  LlamaForCausalLM  no rope scaling, hidden_act silu, attention_bias == mlp_bias; any
                    key/value heads (grouped-query attention), head_dim, intermediate_size,
                    rms_norm_eps; tied or untied head
  Qwen3ForCausalLM  Llama's, with qk_norm, without biases or sliding windows

``inspect_hf_folder`` checks the folder with JSON and the tokenizers library (the launch
planner calls it before anything starts) and refuses, in one line, what this model cannot
represent. ``load_hf_weights`` (torch) reads the weights into our parameter names through the
family's ``from_hf``: GPT-2's match one to one, except that HF's ``Conv1D`` layers store their
weights transposed, older files lack the ``transformer.`` prefix and carry the causal-mask
buffers (``attn.bias``, ``attn.masked_bias``), and a tied ``lm_head`` may be absent; Llama's
and Qwen3's q/k/v_proj stack into ``c_attn`` and gate/up_proj into ``c_fc``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.errors import UsageError
from llm_trainer.hub import PREFIX
from llm_trainer.model.families import BY_MODEL_TYPE, FAMILIES, StateDictAdapter
from llm_trainer.model.shape import ARCH_KEYS, ModelShape

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
IMPORTS = ("GPT2LMHeadModel, LlamaForCausalLM and Qwen3ForCausalLM folders (model_type "
           + ", ".join(BY_MODEL_TYPE) + ")")
OWN = "llm-trainer"  # the family of a checkpoint of this trainer used as a source


@dataclass(frozen=True)
class HFSource:
    """A checked folder: where its parts are and the architecture it implies."""

    path: Path
    weights: Path
    tokenizer: Path
    vocab_size: int  # rows of the embedding (may exceed the tokenizer's size: padding)
    n_positions: int
    arch: dict[str, Any]  # our model.* keys: n_layer, n_head, n_embd, block_size, bias, ...
    family: str = "GPT-2"  # a key of families.FAMILIES, or OWN
    label: str | None = None  # how an OWN source is recorded: "MODEL (step N)"
    hub: str | None = None  # a snapshot from the Hub: "OWNER/NAME@COMMIT" (``hub``)

    @property
    def spec(self) -> str:
        """What the new model records as its origin (finetune.init_from)."""
        if self.label:
            return self.label
        if self.hub:
            return f"{PREFIX}{self.hub}"
        return str(self.path) if self.family == OWN else f"{PREFIX}{self.path}"

    @property
    def name(self) -> str:
        """A short name for messages and the new model's default name."""
        if self.hub:
            return self.hub.partition("@")[0].rsplit("/", 1)[-1]
        return self.path.parent.name if self.family == OWN else self.path.name

    @property
    def shape(self) -> ModelShape:
        return ModelShape(vocab_size=self.vocab_size, **self.arch)

    def adapter(self) -> StateDictAdapter | None:
        """The state-dict adapter of a Hugging Face folder (None for a checkpoint of ours)."""
        return FAMILIES[self.family](self.shape) if self.family in FAMILIES else None


def parse_init_from(spec: str) -> Path:
    if not spec.startswith(PREFIX) or not spec[len(PREFIX):].strip():
        raise UsageError(f"--init-from {spec!r}: expected a model name, a checkpoint folder, "
                         "or hf:OWNER/NAME (the Hugging Face Hub) or hf:PATH (a local "
                         "Hugging Face folder)",
                         hint="e.g. --init-from my-model, --init-from hf:openai-community/gpt2"
                              " or --init-from hf:~/models/distilgpt2 (config.json, "
                              "model.safetensors, tokenizer.json)")
    return Path(spec[len(PREFIX):].strip()).expanduser().resolve()


def inspect_hf_folder(spec: str, *, hub: str | None = None) -> HFSource:
    """Check a ``hf:PATH`` folder; a UsageError names the first thing that is wrong.
    ``hub``: the folder is a Hub snapshot, ``OWNER/NAME@COMMIT`` (what the model records)."""
    return _inspect(parse_init_from(spec), hub)


def check_before_weights(path: Path) -> None:
    """What can be checked of a folder without its weights (config.json, tokenizer.json):
    a Hub model this GPT cannot represent is refused before its weights are downloaded."""
    _inspect(path, None, need_weights=False)


def _inspect(path: Path, hub: str | None, *, need_weights: bool = True) -> HFSource:
    hint = "a transformers folder, as `save_pretrained` writes it"
    if not path.is_dir():
        raise UsageError(f"--init-from: {path} is not a folder", hint=hint)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"--init-from: {path} has no config.json", hint=hint)
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--init-from: {cfg_path} is not readable JSON ({exc})") from None
    if not isinstance(hf, dict):
        raise UsageError(f"--init-from: {cfg_path} is not a transformers config", hint=hint)
    kind = hf.get("model_type")
    family = BY_MODEL_TYPE.get(kind) if isinstance(kind, str) else None
    if family is None:
        raise UsageError(f"--init-from: {path} holds a {kind or 'unknown'!s} model, which this "
                         "trainer cannot import", hint=f"it imports {IMPORTS}")
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
    if weights is None and need_weights:
        raise UsageError(f"--init-from: {path} has no weights",
                         hint=f"expected one of {', '.join(WEIGHT_FILES)}")
    tok_path = path / "tokenizer.json"
    if not tok_path.is_file():
        raise UsageError(f"--init-from: {path} has no tokenizer.json",
                         hint="save the fast tokenizer too: tokenizer.save_pretrained(FOLDER)")
    vocab, n_pos, arch, problems = family.read_config(hf, cfg_path)
    if problems:
        (what, need), rest = problems[0], problems[1:]
        also = f" (also {', '.join(w for w, _ in rest)})" if rest else ""
        raise UsageError(f"--init-from: {path} uses {what}: this trainer's GPT needs {need}"
                         f"{also}", hint=f"{family.architecture} folders import when every "
                                         "part maps onto this GPT, as `llm-trainer models "
                                         "export --format hf` writes them")
    n_tokens = _tokenizer_size(tok_path)
    if n_tokens > vocab:
        raise UsageError(f"--init-from: {tok_path} has {n_tokens:,} tokens but the model only "
                         f"{vocab:,} embeddings: the tokenizer does not belong to this model",
                         hint="put the tokenizer.json saved with these weights in the folder")
    return HFSource(path, weights or path / WEIGHT_FILES[0], tok_path, vocab, n_pos, arch,
                    family.name, hub=hub)


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
        where = "the folder's model" if src.family != OWN else src.name
        shown = f"unset in {where}" if src.arch[key] is None else f"{where} has {src.arch[key]}"
        out.append(f"model.{key}={value} ({shown})")
    return out


def load_hf_weights(src: HFSource, block_size: int) -> dict[str, Any]:
    """The folder's weights as our float32 state dict (a tied ``lm_head.weight`` is ``wte``),
    the position table cut to ``block_size``. Tensors it lacks are absent (check_complete
    names them), tensors we do not know stay under their own names."""
    import torch

    raw = {name: t.to(torch.float32) for name, t in _read_tensors(src.weights).items()}
    sd = src.adapter().from_hf(raw)
    wte = sd.get("transformer.wte.weight")
    if src.arch["tie_embeddings"]:
        head = sd.pop("lm_head.weight", None)
        if wte is not None and head is not None and not torch.equal(head, wte):
            raise UsageError(f"--init-from: {src.weights.name} has an lm_head that differs "
                             "from the token embedding, but config.json says "
                             "tie_word_embeddings true",
                             hint="set tie_word_embeddings false in config.json if the head "
                                  "is meant to be its own")
        if wte is not None:
            sd["lm_head.weight"] = wte
    if "transformer.wpe.weight" in sd:
        sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:block_size].contiguous()
    return sd


def check_complete(sd: dict[str, Any], expected: dict[str, Any], src: HFSource) -> None:
    """Every parameter of ``expected`` (a fresh model's state dict) present with its shape."""
    adapter = src.adapter()
    theirs = adapter.hf_names() if adapter else {}
    for name, ref in expected.items():
        got = sd.get(name)
        shown = " + ".join(theirs.get(name, (name,)))
        if got is None:
            raise UsageError(f"--init-from: {src.weights.name} lacks {shown}: not a complete "
                             f"{src.family} model of the size its config.json describes")
        if tuple(got.shape) != tuple(ref.shape):
            raise UsageError(f"--init-from: {shown} has shape {tuple(got.shape)}, config.json "
                             f"implies {tuple(ref.shape)}")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise UsageError(f"--init-from: {src.weights.name} has tensors this {src.family} "
                         f"does not know: {', '.join(extra[:3])}")


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
