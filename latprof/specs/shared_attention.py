"""Shared attention block (Zamba2's hybrid layers, Glorioso et al., arXiv 2411.15242): one
transformer block whose weights are reused at several depths, reading the hidden state x and the
model's embedding output e.

One use of the block, at one layer:

    h = rms_norm(concat(x, e))                                   (2 width)
    a = o_proj(attention(q(h), k(h), v(h)))                      (width; RoPE when `rope`)
    m = down(act(gate(g)) * up(g)),  g = rms_norm(a)             (width)
    out = x + linear(m)                                          (width)

q, k and v project from 2 width; head_dim defaults to 2 width / heads, and the scores are scaled
by (head_dim / 2) ** -0.5, as Zamba2 does.  The weights a tied use reuses from its owner (the
*shared* part, `shared_param_count`): q, k, v, o, both norms, gate / up and down.  Every use has
its own low-rank adapters (`adapter_rank` r; 0: none): on gate / up always (width -> r -> 2
ffn_dim), and on q, k and v when `attention_adapters` (2 width -> r -> q_dim / kv_dim each),
each added to the projection it sits beside; its own `linear` (width -> width); and its own KV
cache.  Which uses share weights is the model's business (`ModelSpec.weight_ties`); a spec is
one use, and a LUT row measures one use, whose step reads all of that use's weights.

A structural approximation of the dataflow, not of the cost: Zamba2 adds linear(m) to the
input of the Mamba2 block that follows (x + mamba2(norm(x + linear(m)))), while latprof's layers
are residual blocks, so here linear(m) joins the residual stream and the Mamba2 block runs as
usual on it.  A decode step does the same work either way (one add of a width vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.attention import KVCacheCosts
from latprof.specs.base import (
    InputError,
    OpSpec,
    divides,
    dtype_bytes,
    positive,
    resolve_heads,
)

#: gated MLPs: GELU (exact, erf) gate as Zamba2's default hidden_act "gelu", or SiLU (SwiGLU)
ACTIVATIONS = ("geglu", "swiglu")


@dataclass(frozen=True)
class SharedAttentionSpec(KVCacheCosts, OpSpec):
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    ffn_dim: int = 0
    adapter_rank: int = 128
    attention_adapters: bool = False
    rope: bool = False
    activation: str = "geglu"

    op: ClassVar[str] = "shared_attention"
    context_dependent: ClassVar[bool] = True
    reads_embedding: ClassVar[bool] = True

    @classmethod
    def resolve(
        cls,
        width,
        heads=None,
        kv_heads=None,
        head_dim=None,
        ffn_dim=None,
        adapter_rank=128,
        attention_adapters=False,
        rope=False,
        activation="geglu",
    ):
        """Defaults are Zamba2Config's: head_dim 2 width / heads (heads = 2 width / 128 when
        neither is given), kv_heads = heads, ffn_dim 4 width, adapter rank 128, no attention
        adapters, no RoPE, GELU gate."""
        positive(cls.op, width=width)
        heads, head_dim = resolve_heads(cls.op, 2 * width, heads, head_dim)
        kv_heads = heads if kv_heads is None else kv_heads
        positive(cls.op, kv_heads=kv_heads)
        divides(cls.op, "kv_heads", kv_heads, "heads", heads)
        ffn_dim = 4 * width if ffn_dim is None else ffn_dim
        positive(cls.op, ffn_dim=ffn_dim)
        if isinstance(adapter_rank, bool) or not isinstance(adapter_rank, int) or adapter_rank < 0:
            raise InputError(
                f"{cls.op}: adapter_rank must be an integer >= 0 (0: no adapters), "
                f"got {adapter_rank!r}"
            )
        if adapter_rank:
            positive(cls.op, adapter_rank=adapter_rank)  # bounded like every size
        for name, value in (("attention_adapters", attention_adapters), ("rope", rope)):
            if not isinstance(value, bool):
                raise InputError(f"{cls.op}: {name} must be true or false, got {value!r}")
        if attention_adapters and not adapter_rank:
            raise InputError(
                f"{cls.op}: attention_adapters needs adapter_rank > 0 (the rank of the q, k and "
                "v adapters); give adapter_rank, or attention_adapters false"
            )
        if rope and head_dim % 2:
            raise InputError(f"{cls.op}: RoPE needs an even head_dim, got head_dim={head_dim}")
        if activation not in ACTIVATIONS:
            raise InputError(
                f"{cls.op}: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        return cls(
            width,
            heads,
            kv_heads,
            head_dim,
            ffn_dim,
            adapter_rank,
            attention_adapters,
            rope,
            activation,
        )

    @property
    def in_dim(self) -> int:
        """Width of the attention's input: concat(x, e)."""
        return 2 * self.width

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def shared_param_count(self) -> int:
        """Weights every use of one shared block reads from the same tensors: the norms (2 width
        and width), q, k, v (from 2 width), o_proj, the MLP's gate / up and down."""
        norms = self.in_dim + self.width
        attention = self.in_dim * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.width
        mlp = 3 * self.width * self.ffn_dim
        return norms + attention + mlp

    def use_param_count(self) -> int:
        """Weights of this use alone: its adapters and its linear (width x width)."""
        r = self.adapter_rank
        adapters = r * (self.width + 2 * self.ffn_dim)  # gate / up adapter; 0 when r is 0
        if self.attention_adapters:
            adapters += r * (3 * self.in_dim + self.q_dim + 2 * self.kv_dim)
        return adapters + self.width * self.width

    def param_count(self) -> int:
        return self.shared_param_count() + self.use_param_count()

    def pre_norm_params(self) -> int:
        """Both norms' weights (concat input and pre-MLP): a model without norm weights drops
        them (they are part of the shared weights too)."""
        return self.in_dim + self.width

    def bytes_per_step(self, batch, context, dtype):
        """The base count (every weight of this use, x in and out, the cache) plus the embedding
        output e read as the second input."""
        embedding_in = batch * self.width * dtype_bytes(dtype)
        return super().bytes_per_step(batch, context, dtype) + embedding_in
