"""A GPT-2 style decoder whose parameter names map one-to-one onto Hugging Face's
``GPT2LMHeadModel`` (``transformer.wte``, ``transformer.h.0.attn.c_attn`` ...).

HF's GPT-2 uses ``Conv1D`` layers whose weights are stored transposed (in, out); ours are
``nn.Linear`` (out, in). The export transposes them; names are the same.

It is built from a ``model.shape.ModelShape``, whose defaults are GPT-2's block exactly (a
checkpoint written before the options existed loads with them). The options, each keeping
the GPT-2 names so LoRA targets stay valid:

- ``pos="rope"``: no ``transformer.wpe`` table; rotary embeddings on queries and keys in HF
  Llama's convention (``rotate_half``, the two halves of a head not interleaved,
  ``inv_freq = 1 / theta^(2i/d)``), cos/sin precomputed for ``block_size`` positions.
- ``norm="rmsnorm"``: ``nn.RMSNorm`` (no bias) for ln_1, ln_2, ln_f; every norm's eps is
  ``norm_eps`` (1e-5, GPT-2's).
- ``n_kv_head``: grouped-query attention (fewer key/value heads, each serving
  n_head / n_kv_head query heads); ``head_size``: heads of another width than
  n_embd / n_head. ``c_attn`` then holds q, k and v of widths ``q_dim``, ``kv_dim``,
  ``kv_dim`` (rows in that order), and ``c_proj`` reads ``q_dim``.
- ``mlp_width``: the MLP's inner width instead of 4 x n_embd (swiglu: 8/3 n_embd).
- ``qk_norm``: the model's norm per head (weights of ``head_dim``, ``attn.q_norm`` /
  ``attn.k_norm``) on queries and keys, before the rotary embedding: RMSNorm as Qwen3 does
  with ``norm="rmsnorm"``, LayerNorm (OLMo-style) with ``norm="layernorm"``.
- ``activation``: ``gelu`` (exact), ``gelu_tanh`` (HF gelu_new), ``relu2`` (relu(x)^2) or
  ``swiglu``: ``mlp.c_fc`` outputs gate and up fused, gate rows first
  (``c_fc.weight[:hidden]`` is Llama's gate_proj, ``[hidden:]`` its up_proj), and
  ``silu(gate) * up`` goes into ``c_proj``; ``hidden`` is 8/3 n_embd rounded up to a
  multiple of 32 (``shape.mlp_hidden``), e.g. 2048 for 768.
- ``tie_embeddings=False``: ``lm_head`` has its own weight, initialised like every other
  linear layer (normal, std 0.02; HF's ``initializer_range``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from llm_trainer.model.shape import ModelShape


def rope_tables(shape: ModelShape) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (block_size, 1, head_dim) in float32, HF Llama's layout: the frequencies
    repeated for both halves of a head."""
    d = shape.head_dim
    inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = torch.outer(torch.arange(shape.block_size, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
    return emb.cos()[:, None, :], emb.sin()[:, None, :]  # (T, 1, hd)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, nh, hd) rotated by cos/sin (T, 1, hd): ``x cos + rotate_half(x) sin``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def make_norm(shape: ModelShape, dim: int) -> nn.Module:
    if shape.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=shape.norm_eps)
    return nn.LayerNorm(dim, eps=shape.norm_eps, bias=shape.bias)


class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to the context size.
    Keys are stored after the rotary embedding (rope), at their absolute positions."""

    def __init__(self, shape: ModelShape, batch: int, device, dtype) -> None:
        buf = (shape.n_layer, batch, shape.kv_heads, shape.block_size, shape.head_dim)
        self.k = torch.empty(buf, device=device, dtype=dtype)
        self.v = torch.empty(buf, device=device, dtype=dtype)
        self.length = 0  # positions filled (shared by all layers)

    def reset(self) -> None:
        self.length = 0


Rope = tuple[torch.Tensor, torch.Tensor] | None  # cos, sin (T, 1, hd) for this call's positions


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` for q (B, nh, T, hd) and k, v (B, n_kv, S, hd):
    with fewer key/value heads (grouped-query attention) each serves nh / n_kv consecutive
    query heads, as in HF Llama's ``repeat_kv``."""
    if k.shape[1] != q.shape[1]:
        if _SDPA_GQA:
            kwargs["enable_gqa"] = True
        else:  # torch < 2.5
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)  # enable_gqa


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = shape.n_head, shape.kv_heads, shape.head_dim
        self.dropout = shape.dropout
        self.c_attn = nn.Linear(shape.n_embd, shape.q_dim + 2 * shape.kv_dim, bias=shape.bias)
        self.c_proj = nn.Linear(shape.q_dim, shape.n_embd, bias=shape.bias)
        self.resid_dropout = nn.Dropout(shape.dropout)
        self.qk_norm = shape.qk_norm
        if shape.qk_norm:  # the model's norm, per head (LayerNorm's fused kernels are ~4x
            self.q_norm = make_norm(shape, shape.head_dim)  # faster than RMSNorm's on a CPU)
            self.k_norm = make_norm(shape, shape.head_dim)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, rope: Rope = None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        nh, hd = self.n_head, self.head_dim
        qkv = self.c_attn(x)
        # bf16 autocast on a CPU: the attention kernels are far slower in bf16 than in fp32
        # (backward 13 ms vs 4 ms per step for shakespeare-char), so everything between the
        # two projections runs in fp32 (one upcast; the fused fp32 norm kernels); the
        # matmuls around it keep the bf16 speed-up
        fp32 = cache is None and qkv.dtype == torch.bfloat16 and qkv.device.type == "cpu"
        with torch.autocast("cpu", enabled=False) if fp32 else contextlib.nullcontext():
            if fp32:
                qkv = qkv.float()
            q, k, v = self.heads(qkv, B, T, rope)  # (B, nh | nkv | nkv, T, hd)
            if cache is None:
                y = attend(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                           is_causal=True)
            else:
                start = cache.length
                end = start + T
                cache.k[layer, :B, :, start:end] = k
                cache.v[layer, :B, :, start:end] = v
                keys = cache.k[layer, :B, :, :end]  # (B, nkv, end, hd)
                values = cache.v[layer, :B, :, :end]
                if T == 1:
                    y = attend(q, keys, values)
                else:
                    # queries at absolute positions start..end-1 see keys 0..their own position
                    mask = torch.ones(T, end, dtype=torch.bool,
                                      device=x.device).tril(diagonal=start)
                    y = attend(q, keys, values, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, nh * hd)  # (B, T, q_dim)
        return self.resid_dropout(self.c_proj(y))

    def heads(self, qkv: torch.Tensor, B: int, T: int, rope: Rope):
        """c_attn's output (B, T, q_dim + 2 kv_dim) -> queries, keys and values per head,
        (B, heads, T, hd), with QK-norm and the rotary embedding applied."""
        nh, nkv, hd = self.n_head, self.n_kv_head, self.head_dim
        if nkv == nh:
            qkv = qkv.view(B, T, 3, nh, hd)  # (B, T, 3, nh, hd)
            if rope is None and not self.qk_norm:  # GPT-2: one permute
                return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hd)
            if not self.qk_norm:  # rope on queries and keys together; cos (T, 1, 1, hd)
                cos, sin = rope[0].to(qkv.dtype)[:, None], rope[1].to(qkv.dtype)[:, None]
                q, k = apply_rope(qkv[:, :, :2], cos, sin).unbind(2)
                return q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
            q, k, v = qkv.unbind(2)  # 3 x (B, T, nh, hd)
        else:  # grouped-query attention: nh query heads, nkv key/value heads
            q, k, v = qkv.split((nh * hd, nkv * hd, nkv * hd), dim=-1)
            q, k, v = q.view(B, T, nh, hd), k.view(B, T, nkv, hd), v.view(B, T, nkv, hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope[0].to(q.dtype), rope[1].to(q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class MLP(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        hidden = shape.mlp_hidden
        fc_out = 2 * hidden if shape.activation == "swiglu" else hidden  # swiglu: gate, up
        self.c_fc = nn.Linear(shape.n_embd, fc_out, bias=shape.bias)
        self.c_proj = nn.Linear(hidden, shape.n_embd, bias=shape.bias)
        self.dropout = nn.Dropout(shape.dropout)
        self.activation = shape.activation
        self.approximate = "tanh" if shape.activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = activate(self.c_fc(x), self.activation, self.approximate)
        return self.dropout(self.c_proj(x))


def activate(h: torch.Tensor, activation: str, approximate: str = "none") -> torch.Tensor:
    """c_fc's output -> c_proj's input for ``activation`` (swiglu halves the width)."""
    if activation == "swiglu":
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    if activation == "relu2":
        return F.relu(h).square()
    return F.gelu(h, approximate=approximate)


class Block(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.ln_1 = make_norm(shape, shape.n_embd)
        self.attn = CausalSelfAttention(shape)
        self.ln_2 = make_norm(shape, shape.n_embd)
        self.mlp = MLP(shape)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                rope: Rope = None):
        x = x + self.attn(self.ln_1(x), cache, layer, rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.shape = shape
        modules = dict(wte=nn.Embedding(shape.vocab_size, shape.n_embd))
        if shape.pos == "learned":
            modules["wpe"] = nn.Embedding(shape.block_size, shape.n_embd)
        modules.update(drop=nn.Dropout(shape.dropout),
                       h=nn.ModuleList(Block(shape) for _ in range(shape.n_layer)),
                       ln_f=make_norm(shape, shape.n_embd))
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.learned_pos = shape.pos == "learned"
        if shape.pos == "rope":
            cos, sin = rope_tables(shape)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, 1, hd)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layer))

    @torch.no_grad()
    def grow_vocab(self, vocab_size: int) -> None:
        """Add rows to the token embedding (and an untied head) up to ``vocab_size``, each
        the mean of the existing rows: a new token (a chat marker) starts where the trained
        embeddings are on average, not at random noise the rest of the model never saw."""
        old = self.shape.vocab_size
        if vocab_size <= old:
            return
        wte = self.transformer.wte.weight
        rows = wte.mean(dim=0, keepdim=True).expand(vocab_size - old, -1)
        grown = nn.Embedding(vocab_size, self.shape.n_embd, device=wte.device, dtype=wte.dtype)
        grown.weight.copy_(torch.cat([wte, rows]))
        grown.weight.requires_grad_(wte.requires_grad)
        self.transformer.wte = grown
        if self.shape.tie_embeddings:
            head = nn.Linear(self.shape.n_embd, vocab_size, bias=False, device=wte.device,
                             dtype=wte.dtype)
            head.weight = grown.weight
        else:
            w = self.lm_head.weight
            head = nn.Linear(self.shape.n_embd, vocab_size, bias=False, device=w.device,
                             dtype=w.dtype)
            head.weight.copy_(torch.cat([w, w.mean(dim=0, keepdim=True).expand(
                vocab_size - old, -1)]))
            head.weight.requires_grad_(w.requires_grad)
        self.lm_head = head
        self.shape = dataclasses.replace(self.shape, vocab_size=vocab_size)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """All parameters, or (``non_embedding``) those that take part in matmuls: without
        the position table and, when the head is untied, without the token embedding (a
        tied one is counted: it is the output layer's weight)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.learned_pos:
                n -= self.transformer.wpe.weight.numel()
            if not self.shape.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B style."""
        s = self.shape
        return 6 * self.num_params() + 12 * s.n_layer * s.q_dim * s.block_size

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V) [or (B, 1, V) with last_only] and the
        mean cross-entropy against ``targets`` (B, T) when given.

        With ``cache``, ``idx`` continues the cached sequence at position ``cache.length``.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.shape.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds the context of {self.shape.block_size}"
            )
        rope = None
        if self.learned_pos:
            pos = torch.arange(start, start + T, device=idx.device)  # (T,)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        else:
            x = self.transformer.drop(self.transformer.wte(idx))
            rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T])  # (T, 1, hd)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i, rope)
        if cache is not None:
            cache.length += T
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # (B, T, V)
            # targets of -1 (a prompt or padding of chat data) are not trained
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T),
                                   ignore_index=-1)
            return logits, loss
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        return self.lm_head(x), None
