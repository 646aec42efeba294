"""A GPT-2 style decoder whose parameter names map one-to-one onto Hugging Face's
``GPT2LMHeadModel`` (``transformer.wte``, ``transformer.h.0.attn.c_attn`` ...).

HF's GPT-2 uses ``Conv1D`` layers whose weights are stored transposed (in, out); ours are
``nn.Linear`` (out, in). The export transposes them; names are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True, kw_only=True)
class GPTShape:
    """The architecture, resolved: everything needed to build the module."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    activation: str = "gelu_tanh"  # "gelu_tanh" (HF gelu_new) or "gelu" (exact erf)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to the context size."""

    def __init__(self, shape: GPTShape, batch: int, device, dtype) -> None:
        head_dim = shape.n_embd // shape.n_head
        buf = (shape.n_layer, batch, shape.n_head, shape.block_size, head_dim)
        self.k = torch.empty(buf, device=device, dtype=dtype)
        self.v = torch.empty(buf, device=device, dtype=dtype)
        self.length = 0  # positions filled (shared by all layers)
        self.capacity = shape.block_size

    def reset(self) -> None:
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.n_head = shape.n_head
        self.n_embd = shape.n_embd
        self.dropout = shape.dropout
        self.c_attn = nn.Linear(shape.n_embd, 3 * shape.n_embd, bias=shape.bias)
        self.c_proj = nn.Linear(shape.n_embd, shape.n_embd, bias=shape.bias)
        self.resid_dropout = nn.Dropout(shape.dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, hd)  # (B, T, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hd)
        if cache is None:
            if q.dtype == torch.bfloat16 and q.device.type == "cpu":
                # bf16 autocast on a CPU: the attention kernels are far slower in bf16 than in
                # fp32 (backward 13 ms vs 4 ms per step for shakespeare-char); the matmuls
                # around them keep the bf16 speed-up
                with torch.autocast("cpu", enabled=False):
                    y = F.scaled_dot_product_attention(
                        q.float(), k.float(), v.float(),
                        dropout_p=self.dropout if self.training else 0.0, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(
                    q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
                )
        else:
            start = cache.length
            end = start + T
            cache.k[layer, :B, :, start:end] = k
            cache.v[layer, :B, :, start:end] = v
            keys = cache.k[layer, :B, :, :end]  # (B, nh, end, hd)
            values = cache.v[layer, :B, :, :end]
            if T == 1:
                y = F.scaled_dot_product_attention(q, keys, values)
            else:
                # queries at absolute positions start..end-1 see keys 0..their own position
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.c_fc = nn.Linear(shape.n_embd, 4 * shape.n_embd, bias=shape.bias)
        self.c_proj = nn.Linear(4 * shape.n_embd, shape.n_embd, bias=shape.bias)
        self.dropout = nn.Dropout(shape.dropout)
        self.approximate = "tanh" if shape.activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.c_fc(x), approximate=self.approximate)
        return self.dropout(self.c_proj(x))


class Block(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(shape.n_embd, bias=shape.bias)
        self.attn = CausalSelfAttention(shape)
        self.ln_2 = nn.LayerNorm(shape.n_embd, bias=shape.bias)
        self.mlp = MLP(shape)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.shape = shape
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(shape.vocab_size, shape.n_embd),
                wpe=nn.Embedding(shape.block_size, shape.n_embd),
                drop=nn.Dropout(shape.dropout),
                h=nn.ModuleList(Block(shape) for _ in range(shape.n_layer)),
                ln_f=nn.LayerNorm(shape.n_embd, bias=shape.bias),
            )
        )
        self.lm_head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B style."""
        s = self.shape
        return 6 * self.num_params() + 12 * s.n_layer * s.n_embd * s.block_size

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
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += T
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # (B, T, V)
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
            return logits, loss
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        return self.lm_head(x), None
