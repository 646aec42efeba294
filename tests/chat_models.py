"""Tiny chat models whose greedy replies are known, saved as real models of a home (no
training): the next token depends only on the current one (attention and MLP write nothing,
positions are zero, each token's embedding is one-hot), and the untied head maps chosen tokens
to chosen next tokens. After the ChatML generation prompt (it ends with "\\n") such a model
writes ``reply`` then ``<|im_end|>``; were that not a stop, it would go on with "\\n" and the
reply again, until the token limit."""

from __future__ import annotations

import itertools
import json
import string
import time
from pathlib import Path

import torch

from llm_trainer.checkpoint_io import save_base, save_checkpoint
from llm_trainer.config import RunConfig
from llm_trainer.data.chat import IM_END, ChatTemplate, with_chat_tokens
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from llm_trainer.store.models import ModelStore

ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"


def chat_tokenizer(chat: bool = True) -> TextTokenizer:
    tok = TextTokenizer.build_char(ALPHABET)
    return with_chat_tokens(tok, ChatTemplate.chatml()) if chat else tok


def chain_model(tok: TextTokenizer, reply: str, *, block_size: int = 256) -> GPT:
    """A GPT whose greedy continuation of "\\n" is ``reply`` + <|im_end|> + "\\n" + ..."""
    vocab = tok.vocab_size
    shape = ModelShape(vocab_size=vocab, block_size=block_size, n_layer=1, n_head=2,
                       n_embd=vocab + vocab % 2, tie_embeddings=False)
    model = GPT(shape)
    ids = [tok.tok.token_to_id(c) for c in ["\n", *reply]]
    end = tok.tok.token_to_id(IM_END)
    chain = [*ids, end if end is not None else tok.eot_id, ids[0]]
    with torch.no_grad():
        block = model.transformer.h[0]
        for p in (block.attn.c_proj.weight, block.attn.c_proj.bias, block.mlp.c_proj.weight,
                  block.mlp.c_proj.bias, model.transformer.wpe.weight, model.lm_head.weight):
            p.zero_()
        model.transformer.wte.weight.copy_(torch.eye(vocab, shape.n_embd))
        for src, dst in itertools.pairwise(chain):
            model.lm_head.weight[dst, src] = 20.0
    return model.eval()


def save_chat_model(home: Path, name: str, reply: str, *, chat: bool = True,
                    block_size: int = 256, config: RunConfig | None = None,
                    lineage: list | None = None, step: int = 1) -> Path:
    """A model ``name`` of ``home`` with one checkpoint that answers ``reply`` (a ChatML
    template unless not ``chat``); returns the checkpoint folder."""
    store = ModelStore(home)
    rec = store.get(name) if store.exists(name) else store.create(name, default_base=name)
    tok = chat_tokenizer(chat)
    model = chain_model(tok, reply, block_size=block_size)
    config = config or RunConfig()
    path = save_checkpoint(rec.path, model=model, optimizer=_NoOptimizer(),
                           trainer_state={"step": step, "schedule": {}}, config=config,
                           shape=model.shape, tokenizer=tok, step=step, epoch=0.1,
                           val_loss=None, chat=ChatTemplate.chatml() if chat else None)
    rec.last_trained_at, rec.steps_completed = time.time(), step
    rec.config = json.loads(json.dumps(config.to_dict()))
    rec.lineage = lineage or []
    store.save(rec)
    return path


def save_lora_chat_model(home: Path, name: str, base_reply: str, source: str) -> Path:
    """A LoRA model (zero adapters on its base: it answers as its base does) whose base
    folder holds a model that answers ``base_reply``."""
    from llm_trainer.model.lora import apply_lora

    store = ModelStore(home)
    rec = store.create(name, default_base=name)
    tok = chat_tokenizer()
    base = chain_model(tok, base_reply)
    config = RunConfig().replace(**{"finetune.init_from": source, "finetune.lora_r": 2})
    save_base(rec.path, model=base, config=config, shape=base.shape, tokenizer=tok,
              source=source)
    model = apply_lora(base, {"r": 2, "alpha": 4.0, "dropout": 0.0,
                              "targets": ["c_attn"]})
    path = save_checkpoint(rec.path, model=model, optimizer=_NoOptimizer(),
                           trainer_state={"step": 1, "schedule": {}}, config=config,
                           shape=base.shape, tokenizer=tok, step=1, epoch=0.1,
                           val_loss=None, chat=ChatTemplate.chatml())
    rec.last_trained_at, rec.steps_completed = time.time(), 1
    rec.config = json.loads(json.dumps(config.to_dict()))
    store.save(rec)
    return path


def fine_tuned_from(home: Path, base_name: str, base_checkpoint: Path, name: str,
                    reply: str) -> Path:
    """A model ``name`` started with ``--init-from base_name`` (recorded as a run records it:
    the config's finetune.init_from and the first run's lineage entry)."""
    config = RunConfig().replace(**{
        "finetune.init_from": f"{base_name} ({base_checkpoint.name})"})
    lineage = [{"run_id": "r-import", "kind": "train", "dataset": "x.jsonl",
                "from_checkpoint": str(base_checkpoint), "data_from": None, "start_step": 0,
                "started_at": time.time()}]
    return save_chat_model(home, name, reply, config=config, lineage=lineage)


def base_and_fine_tuned(home: Path) -> None:
    """``base-m`` (replies "yo") and ``ft-m`` fine-tuned from it (replies "hi"): a model
    and its base, as `--compare-base` sees them."""
    base = save_chat_model(home, "base-m", "yo")
    fine_tuned_from(home, "base-m", base, "ft-m", "hi")


class _NoOptimizer:
    """A checkpoint needs an optimizer state; these models were never trained."""

    @staticmethod
    def state_dict() -> dict:
        return {}
