"""The model's architecture, one object from config to checkpoint: ``ModelShape``.

Torch-free (the launch planner, the CLI and the TUI read it): ``ModelConfig.shape()`` builds
one from a run's config, ``model.gpt.GPT`` is built from one, a checkpoint stores
``to_json()`` in its config.json (and a run its ``architecture`` in meta.json) and reads it
back with ``from_stored()``. The one comparison of two architectures is ``changes()`` /
``diff()``; ``describe()`` words one for people.

A stored shape that lacks a key was written before the option existed: it means GPT-2's block,
which the defaults here are (``activation`` gelu_tanh, HF's gelu_new). A new model's defaults
are ``config.ModelConfig``'s (``activation`` gelu).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ACTIVATIONS = ("gelu", "gelu_tanh", "relu2", "swiglu")
POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
# model.* keys that define the architecture: a checkpoint's weights fit no other values
ARCH_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "activation", "pos",
             "rope_theta", "norm", "qk_norm", "tie_embeddings", "n_kv_head", "head_size",
             "mlp_width", "norm_eps")
# every LayerNorm and RMSNorm of the model: nn.LayerNorm's default, GPT-2's layer_norm_epsilon;
# the HF and GGUF exports write it and the HF import requires it
NORM_EPS = 1e-5


def mlp_hidden(n_embd: int, activation: str, width: int | None = None) -> int:
    """The MLP's inner width (c_proj's input): ``width`` when given (model.mlp_width), else
    4 x n_embd; for swiglu 8/3 n_embd (the same parameters as a 4 x n_embd MLP) rounded up to
    a multiple of 32, i.e. 32 * ceil(n_embd / 12)."""
    if width:
        return width
    return 32 * -(-n_embd // 12) if activation == "swiglu" else 4 * n_embd


def attention_problem(*, n_embd: int, n_head: int, n_kv_head: int | None,
                      head_size: int | None, pos: str) -> tuple[str, str] | None:
    """What is wrong with these attention sizes (a message and a hint), or None: the one
    rule behind ModelConfig.check and ModelShape."""
    if head_size is None and n_embd % n_head:
        return (f"model.n_embd ({n_embd}) must be divisible by model.n_head ({n_head})",
                "pick n_head among the divisors of n_embd, e.g. 4 for 128, or set "
                "model.head_size")
    if n_kv_head is not None and (n_kv_head > n_head or n_head % n_kv_head):
        return (f"model.n_kv_head ({n_kv_head}) must divide model.n_head ({n_head})",
                "each key/value head serves n_head / n_kv_head query heads, e.g. 2 for 4")
    head = head_size or n_embd // n_head
    if pos == "rope" and head % 2:
        return (f"model.pos rope needs an even head size, not {head}",
                "pick an even model.head_size (or n_head so that n_embd / n_head is even), "
                "or use model.pos learned")
    return None


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """The architecture, resolved: everything needed to build the module. The defaults of
    the fields after ``dropout`` are GPT-2's (an old checkpoint's stored shape lacks them).
    The field order is the order of the stored JSON."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    activation: str = "gelu_tanh"  # gelu_tanh (HF gelu_new) | gelu (exact) | relu2 | swiglu
    pos: str = "learned"  # learned (a wpe table) | rope
    rope_theta: float = 10000.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    qk_norm: bool = False
    tie_embeddings: bool = True
    n_kv_head: int | None = None  # None: one key/value head per query head
    head_size: int | None = None  # None: n_embd // n_head
    mlp_width: int | None = None  # None: mlp_hidden's default
    norm_eps: float = NORM_EPS

    def __post_init__(self) -> None:
        problem = attention_problem(n_embd=self.n_embd, n_head=self.n_head,
                                    n_kv_head=self.n_kv_head, head_size=self.head_size,
                                    pos=self.pos)
        if problem:
            raise ValueError(problem[0])
        for key, value, allowed in (("activation", self.activation, ACTIVATIONS),
                                    ("pos", self.pos, POSITIONS), ("norm", self.norm, NORMS)):
            if value not in allowed:
                raise ValueError(f"{key} {value!r} is not one of {', '.join(allowed)}")

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> ModelShape:
        """The shape a checkpoint's config.json (or a run's meta.json) stored as
        ``architecture``; a key it lacks (written before the option existed) has its
        default, GPT-2's."""
        return cls(**stored)

    def to_json(self) -> dict[str, Any]:
        """What a checkpoint stores as ``architecture`` (every field, in field order)."""
        return asdict(self)

    @property
    def head_dim(self) -> int:
        return self.head_size or self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def q_dim(self) -> int:
        """The queries' width: c_attn's first rows, c_proj's input."""
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        """The keys' width, and the values' (grouped-query attention: less than q_dim)."""
        return self.kv_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        """The MLP's inner width (``mlp_hidden``)."""
        return mlp_hidden(self.n_embd, self.activation, self.mlp_width)

    def changes(self, other: ModelShape, *, every_key: bool = False) -> list[str]:
        """The keys (vocab_size, then ARCH_KEYS) whose values differ: weights of one shape do
        not fit the other. rope_theta counts only where rope is used, unless ``every_key``
        (comparing configs, where a changed value would be recorded)."""
        rope = every_key or "rope" in (self.pos, other.pos)
        keys = ["vocab_size", *(k for k in ARCH_KEYS if k != "rope_theta" or rope)]
        return [k for k in keys if getattr(self, k) != getattr(other, k)]

    def diff(self, other: ModelShape) -> list[str]:
        """What differs, as "key self-value vs other-value" (e.g. "pos learned vs rope")."""
        return [f"{k} {getattr(self, k)} vs {getattr(other, k)}" for k in self.changes(other)]

    def describe(self) -> str:
        """'4 layers x 128 dims, 4 heads, context 64, vocab 66; rope, layernorm, ...'."""
        heads = f"{self.n_head} heads"
        if self.n_kv_head not in (None, self.n_head):
            heads += f" sharing {self.n_kv_head} key/value heads"
        if self.head_size is not None:
            heads += f" of {self.head_size}"
        block = [f"{self.pos} positions" if self.pos == "learned" else "rope", self.norm,
                 *(["QK-norm"] if self.qk_norm else []), self.activation,
                 *([f"MLP width {self.mlp_width}"] if self.mlp_width else []),
                 *([f"norm eps {self.norm_eps:g}"] if self.norm_eps != NORM_EPS else []),
                 "tied head" if self.tie_embeddings else "untied head",
                 "biases" if self.bias else "no biases"]
        return (f"{self.n_layer} layers x {self.n_embd} dims, {heads}, "
                f"context {self.block_size}, vocab {self.vocab_size}; {', '.join(block)}")

