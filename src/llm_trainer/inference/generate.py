"""Text generation with a KV cache, streamed token by token.

Positions (a learned table, or rotary embeddings already applied to the cached keys) tie each
cached key/value to its position, so the cache cannot simply slide by one token. When the
window is full it is re-filled in one chunk with the last ``keep`` tokens (3/4 of the
context), and then grows one token at a time again: one chunked forward per
``block_size // 4`` new tokens instead of a full forward per token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.inference.sampling import apply_repetition_penalty, sample_next
from llm_trainer.inference.settings import GenerationSettings
from llm_trainer.model.gpt import GPT, KVCache, activate, apply_rope, attend
from llm_trainer.training.device import one_cpu_thread

SINGLE_THREAD_MAX_PARAMS = 30_000_000


def _norm(x, dims, weight, bias, rms: bool, eps: float):
    """The model's norm as a function (model.gpt.make_norm's modules)."""
    if rms:
        return F.rms_norm(x, dims, weight, eps)
    return F.layer_norm(x, dims, weight, bias, eps)


DOCUMENT_BREAK = "\n\n"  # what a generated document separator is shown as

class OneTokenStep:
    """The model's forward pass for one new token with a KV cache, written with functional
    calls on weights gathered once: decoding is dominated by per-op dispatch, and skipping
    nn.Module calls and attribute lookups (~50 per token) is ~30% of a small model's time.
    Covers every architecture option (rope at the cache's position, rmsnorm, qk_norm,
    relu2, swiglu, an untied head). Tested to match ``GPT.forward`` with a cache."""

    def __init__(self, model: GPT) -> None:
        s = model.shape
        self.n_embd, self.n_head, self.n_kv_head, self.head_dim = \
            s.n_embd, s.n_head, s.kv_heads, s.head_dim
        self.eps = s.norm_eps
        # grouped-query attention needs attend(); else SDPA itself (one call less per layer)
        self.sdpa = F.scaled_dot_product_attention if s.kv_heads == s.n_head else attend
        self.activation = s.activation
        self.approximate = "tanh" if s.activation == "gelu_tanh" else "none"
        self.rms = s.norm == "rmsnorm"
        t = model.transformer
        self.wte = t.wte.weight
        self.wpe = t.wpe.weight if s.pos == "learned" else None
        self.rope = (model.rope_cos, model.rope_sin) if s.pos == "rope" else None  # (T, 1, hd)
        self.qk_norm = [(b.attn.q_norm.weight, getattr(b.attn.q_norm, "bias", None),
                         b.attn.k_norm.weight, getattr(b.attn.k_norm, "bias", None))
                        for b in t.h] if s.qk_norm else None
        self.layers = [
            (b.ln_1.weight, getattr(b.ln_1, "bias", None), b.attn.c_attn.weight,
             b.attn.c_attn.bias, b.attn.c_proj.weight, b.attn.c_proj.bias, b.ln_2.weight,
             getattr(b.ln_2, "bias", None), b.mlp.c_fc.weight, b.mlp.c_fc.bias,
             b.mlp.c_proj.weight, b.mlp.c_proj.bias)
            for b in t.h]
        self.ln_f = (t.ln_f.weight, getattr(t.ln_f, "bias", None))
        self.head = model.lm_head.weight

    def __call__(self, token: int, cache: KVCache) -> torch.Tensor:
        """Logits (V,) for ``token`` at position ``cache.length``; appends its keys/values."""
        C, nh, nkv, hd, eps = self.n_embd, self.n_head, self.n_kv_head, self.head_dim, self.eps
        rms, qk_norm, rope, act, sdpa = \
            self.rms, self.qk_norm, self.rope, self.activation, self.sdpa
        gelu = act in ("gelu", "gelu_tanh")
        pos = cache.length
        x = self.wte[token] if self.wpe is None else self.wte[token] + self.wpe[pos]
        x = x.view(1, 1, C)  # (1, 1, C)
        if rope is not None:
            cos, sin = rope[0][pos], rope[1][pos]  # (1, hd)
        for i, (g1, b1, wa, ba, wp, bp, g2, b2, wf, bf, wo, bo) in enumerate(self.layers):
            h = _norm(x, (C,), g1, b1, rms, eps)
            if nkv == nh:
                q, k, v = F.linear(h, wa, ba).view(3, nh, hd).unbind(0)  # 3 x (nh, hd)
            else:  # grouped-query attention: (nh | nkv | nkv) x hd
                q, k, v = F.linear(h, wa, ba).view(nh + 2 * nkv, hd).split((nh, nkv, nkv))
            if qk_norm is not None:
                gq, bq, gk, bk = qk_norm[i]
                q = _norm(q, (hd,), gq, bq, rms, eps)
                k = _norm(k, (hd,), gk, bk, rms, eps)
            if rope is not None:
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            cache.k[i, 0, :, pos] = k
            cache.v[i, 0, :, pos] = v
            y = sdpa(
                q.view(1, nh, 1, hd), cache.k[i, :1, :, :pos + 1], cache.v[i, :1, :, :pos + 1])
            x = x + F.linear(y.view(1, 1, nh * hd), wp, bp)  # (1, nh, 1, hd) -> (1, 1, C)
            h = _norm(x, (C,), g2, b2, rms, eps)
            h = F.linear(h, wf, bf)
            h = F.gelu(h, approximate=self.approximate) if gelu else activate(h, act)
            x = x + F.linear(h, wo, bo)
        cache.length = pos + 1
        g, b = self.ln_f
        x = _norm(x, (C,), g, b, rms, eps)
        return F.linear(x.view(C), self.head)


class TextGenerator:
    def __init__(self, model: GPT, tokenizer: TextTokenizer, device: str = "cpu") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.block_size = model.shape.block_size
        self.keep = self.block_size - max(1, self.block_size // 4)
        self.one_token = OneTokenStep(self.model)

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "cpu") -> TextGenerator:
        from llm_trainer.checkpoint_io import load_model, read_checkpoint

        ckpt = read_checkpoint(path)
        return cls(load_model(ckpt, device), ckpt.tokenizer, device)

    # ------------------------------------------------------------------ prompt
    def prompt_ids(self, prompt: str) -> tuple[list[int], str | None]:
        """Token ids to condition on, and a note for the user when the prompt was cut."""
        if prompt == "":
            ids = self.tokenizer.encode("\n")
            return (ids[-1:] if ids else [0]), None
        ids = self.tokenizer.encode(prompt)
        if not ids:
            ids = [0]
        if len(ids) > self.block_size:
            note = (f"note: the prompt is {len(ids)} tokens; the model's context is "
                    f"{self.block_size}, so only its last {self.block_size} tokens are used")
            return ids[-self.block_size:], note
        return ids, None

    # ------------------------------------------------------------------ decoding
    def generate_ids(self, ids: list[int], settings: GenerationSettings, *,
                     use_cache: bool = True) -> Iterator[int]:
        """Yield new token ids. ``use_cache=False`` recomputes the same windows from scratch
        every token (the reference the cache is tested against)."""
        settings.check()
        small = self.model.num_params() <= SINGLE_THREAD_MAX_PARAMS
        with one_cpu_thread(self.device, small), torch.inference_mode():
            yield from self._decode(ids, settings, use_cache)

    def _decode(self, ids: list[int], settings: GenerationSettings,
                use_cache: bool) -> Iterator[int]:
        gen = None
        if settings.seed is not None:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(settings.seed)
        model, dev = self.model, self.device
        vocab = model.shape.vocab_size
        ctx = list(ids[-self.block_size:])
        cache = KVCache(model.shape, 1, dev, next(model.parameters()).dtype) if use_cache \
            else None
        seen = torch.zeros(vocab, dtype=torch.bool)
        if settings.repetition_penalty != 1.0:
            seen[torch.tensor([i for i in ids if 0 <= i < vocab], dtype=torch.long)] = True

        def full(tokens: list[int]) -> torch.Tensor:
            if cache is not None:
                cache.reset()
            x = torch.tensor([tokens], dtype=torch.long, device=dev)
            return model(x, cache=cache, last_only=True)[0][0, -1]

        logits = full(ctx)
        for _ in range(settings.max_new_tokens):
            row = logits.float().cpu()
            row = apply_repetition_penalty(row, seen, settings.repetition_penalty)
            token = sample_next(row, temperature=settings.temperature, top_k=settings.top_k,
                                top_p=settings.top_p, generator=gen)
            yield token
            seen[token] = True
            if len(ctx) >= self.block_size:  # window full: re-fill with the last `keep` tokens
                ctx = [*ctx[-(self.keep - 1):], token]
                logits = full(ctx)
            else:
                ctx.append(token)
                logits = full(ctx) if cache is None else self.one_token(token, cache)

    def stream(self, prompt: str, settings: GenerationSettings,
               on_note=None) -> Iterator[str]:
        """Yield text pieces as soon as they decode to complete characters. The document
        separator the model learned (``<|endoftext|>``) comes out as a blank line."""
        ids, note = self.prompt_ids(prompt)
        if note and on_note is not None:
            on_note(note)
        decoder = self.tokenizer.decode_stream()
        eot = self.tokenizer.eot_id
        for token in self.generate_ids(ids, settings):
            if token == eot:  # the end of a document: shown as the blank line between two
                yield DOCUMENT_BREAK
                continue
            piece = decoder.step(token)
            if piece:
                yield piece

    def generate(self, prompt: str, settings: GenerationSettings) -> str:
        return "".join(self.stream(prompt, settings))
