"""The model card an ``hf`` export (and so ``models push``) writes as README.md: the Hub's
metadata block (``huggingface_hub.ModelCardData``: base_model, datasets, library_name, tags,
license when the base model's card names one, pipeline_tag) and a body that says what the
model is, how it was trained, how well it did and how to load it.

The Hub reads ``base_model`` and ``datasets`` as Hub ids, so only those go in the block: a
model imported from ``hf:OWNER/NAME@COMMIT`` (or from a snapshot folder in the Hub cache)
has a base model; ``hf:NAME`` datasets and WikiText-2 are datasets. Local files and folders
are named in the body only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_trainer.data.spec import WIKITEXT, DatasetKind, DatasetSpec
from llm_trainer.hub import PREFIX, HubModel, hub_id_of, parse_model_spec

LIBRARY = "llm-trainer"


@dataclass(frozen=True)
class CardFacts:
    """What the card says, gathered from the model's record and the exported checkpoint."""

    name: str
    checkpoint: str  # the exported checkpoint's folder name (step-N)
    step: int
    epoch: float
    shape: str  # ModelShape.describe()
    family: str  # GPT-2, Llama, Qwen3 (the transformers architecture it exports to)
    config: dict[str, Any]  # the checkpoint's RunConfig as JSON
    tokens_per_step: int | None = None
    datasets: tuple[str, ...] = ()  # as the model records them (every dataset it trained on)
    best_val_loss: float | None = None
    checkpoint_val_loss: float | None = None
    base_folder: Path | None = None  # where the imported base is on this machine, if known
    chat: bool = False
    gguf: str | None = None  # a .gguf file that goes with the folder (push --gguf)
    extra_tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def init_from(self) -> str | None:
        ft = self.config.get("finetune") or {}
        value = ft.get("init_from")
        return value if isinstance(value, str) and value else None

    def _base(self) -> Path | HubModel | None:
        spec = self.init_from
        return parse_model_spec(spec) if spec and spec.startswith(PREFIX) else None

    @property
    def base_model(self) -> str | None:
        """The base model's Hub id, or None (trained from scratch, or from a local folder
        that is not a snapshot of the Hub cache, or from a model of ours)."""
        where = self._base()
        if isinstance(where, HubModel):
            return where.repo_id
        return hub_id_of(where) if where is not None else None

    @property
    def base_commit(self) -> str | None:
        where = self._base()
        if isinstance(where, HubModel):
            return where.revision
        return where.name if where is not None and hub_id_of(where) else None

    @property
    def hub_datasets(self) -> list[str]:
        out = []
        for spec in self.datasets:
            try:
                ds = DatasetSpec.parse(spec)
            except Exception:  # a local file gone since: it is named in the body
                continue
            if ds.kind is DatasetKind.WIKITEXT:
                out.append(WIKITEXT[0])
            elif ds.kind is DatasetKind.HF and ds.path is None:
                out.append(ds.name)
        return list(dict.fromkeys(out))

    @property
    def tokens(self) -> int | None:
        return self.step * self.tokens_per_step if self.tokens_per_step else None


def base_license(folder: Path | None) -> str | None:
    """The license the base model's own card declares (its README.md metadata), if any."""
    if folder is None or not (Path(folder) / "README.md").is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        value = (metadata_load(Path(folder) / "README.md") or {}).get("license")
    except Exception:  # a card we cannot parse: no license claimed
        return None
    return value if isinstance(value, str) and value else None


def model_card(facts: CardFacts, load_as: str, *, on_hub: bool = False) -> str:
    """README.md's text. ``load_as``: what ``from_pretrained`` is given in the examples (the
    export folder, or with ``on_hub`` the Hub repository it is pushed to)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        model_name=facts.name, base_model=facts.base_model,
        datasets=facts.hub_datasets or None, library_name="transformers",
        license=base_license(facts.base_folder), pipeline_tag="text-generation",
        tags=list(dict.fromkeys([LIBRARY, facts.family.lower().replace("-", ""),
                                 *(("chat",) if facts.chat else ()),
                                 *(("gguf",) if facts.gguf else ()), *facts.extra_tags])))
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(facts, load_as, on_hub)}")
    return str(card)


def _shown(spec: str) -> str:
    """A dataset as the card names it: a local file or folder by its name only (the card is
    meant to be published; where it lay on this machine is nobody's business)."""
    return Path(spec).name if Path(spec).is_absolute() else spec


def _loss_row(label: str, loss: float | None) -> str | None:
    if loss is None or not math.isfinite(loss):
        return None
    ppl = math.exp(loss) if loss < 50 else math.inf
    return f"| {label} | {loss:.4f} | {ppl:,.2f} |"


def _body(f: CardFacts, load_as: str, on_hub: bool) -> str:
    cfg = f.config
    train, model, ft = (cfg.get(k) or {} for k in ("train", "model", "finetune"))
    origin = "Trained from scratch"
    if f.init_from:
        base = f.base_model
        named = f"[{base}](https://huggingface.co/{base})" if base else \
            f"`{_shown(f.init_from.removeprefix(PREFIX))}`"
        commit = f" at commit `{f.base_commit}`" if f.base_commit else ""
        how = (f"LoRA r={ft.get('lora_r')} on {', '.join(ft.get('lora_targets') or [])}, "
               "merged into the weights" if ft.get("lora_r") else "a full fine-tune")
        origin = f"Fine-tuned from {named}{commit} ({how})"
    lines = [f"# {f.name}", "",
             f"A {f.family} language model ({f.shape}). {origin} with {LIBRARY}.", "",
             "## Training", "", "| | |", "|---|---|",
             f"| data | {', '.join(f'`{_shown(d)}`' for d in f.datasets) or '-'} |",
             f"| steps | {f.step:,} (epoch {f.epoch:.2f}), checkpoint `{f.checkpoint}` |"]
    if f.tokens:
        lines.append(f"| tokens trained | about {f.tokens:,} |")
    batch = train.get("batch_size")
    if batch:
        lines.append(f"| batch | {batch} sequences x {train.get('grad_accum', 1)} "
                     f"accumulation steps, {model.get('block_size')} tokens each |")
    if train.get("lr") is not None:
        lines.append(f"| optimizer | {train.get('optimizer', 'adamw')}, peak learning rate "
                     f"{train['lr']:g}, {train.get('lr_schedule', 'cosine')} schedule |")
    rows = [r for r in (_loss_row("best", f.best_val_loss),
                        _loss_row(f"this checkpoint ({f.checkpoint})",
                                  f.checkpoint_val_loss)) if r]
    lines += ["", "## Evaluation", ""]
    if rows:
        lines += ["Loss on the held-out validation split of the training data (nats per "
                  "token).", "", "| | val loss | perplexity |", "|---|---|---|", *rows]
    else:
        lines.append("No validation loss was recorded.")
    lines += ["", "## Use it", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(load_as)})",
              f"model = AutoModelForCausalLM.from_pretrained({json.dumps(load_as)})"]
    if f.chat:
        lines += ["messages = [{\"role\": \"user\", \"content\": \"Hello!\"}]",
                  "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
                  "return_tensors=\"pt\")"]
    else:
        lines.append("ids = tokenizer(\"Once upon a time\", return_tensors=\"pt\").input_ids")
    lines += ["out = model.generate(ids, max_new_tokens=64, do_sample=True)",
              "print(tokenizer.decode(out[0][ids.shape[1]:]))", "```"]
    if f.gguf:
        ctx = model.get("block_size")
        where = f"--hf-repo {load_as} --hf-file {f.gguf}" if on_hub else \
            f"-m {Path(load_as) / f.gguf}"
        lines += ["", "With llama.cpp (the GGUF file in this repository; pass the model's "
                  f"context, {ctx} tokens):", "", "```sh",
                  f"llama-cli {where} -c {ctx} -n {max(1, int(ctx or 2) // 2)} "
                  + ("-cnv" if f.chat else "-p \"Once upon a time\""), "```"]
    return "\n".join(lines) + "\n"
