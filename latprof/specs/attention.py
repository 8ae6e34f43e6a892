"""Softmax attention block: pre-RMSNorm, q/k/v projections, RoPE, GQA over a KV cache, out-proj.

Variants of published models, each a field that stays out of the key at its default:
`qkv_bias` (Qwen2: biases on the q, k and v projections), `out_gate` (Qwen3-Next: the query
projection is twice as wide, its second half a per-channel sigmoid gate on the attention output
before o_proj), `qk_norm_full` (OLMo2: the q / k RMSNorm spans all heads, weights of q_dim and
kv_dim, instead of one head_dim weight shared by the heads), `post_norm` (Gemma 3: an RMSNorm of
the width on the block's output before the residual add).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import (
    InputError,
    OpSpec,
    StateBytes,
    divides,
    dtype_bytes,
    positive,
    resolve_heads,
)


class KVCacheCosts:
    """The cost model of a softmax-attention step over a full K / V cache, for specs with
    `heads`, `head_dim` and `kv_dim` (AttentionSpec, SharedAttentionSpec): the cache holds K and
    V of every position; a step reads them for context + 1 positions and writes the new one."""

    def state_bytes(self, batch, max_context, dtype):
        return StateBytes(kv_cache=2 * batch * max_context * self.kv_dim * dtype_bytes(dtype))

    def cache_traffic_bytes(self, batch, context, dtype):
        # read K and V for context + 1 positions, write the new position's K and V
        return 2 * batch * (context + 2) * self.kv_dim * dtype_bytes(dtype)

    def flops_per_step(self, batch, context):
        scores_and_values = 4 * batch * self.heads * self.head_dim * (context + 1)
        return 2 * batch * self.param_count() + scores_and_values


@dataclass(frozen=True)
class AttentionSpec(KVCacheCosts, OpSpec):
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    qk_norm: bool = False
    qkv_bias: bool = False
    out_gate: bool = False
    qk_norm_full: bool = False
    post_norm: bool = False

    op: ClassVar[str] = "attention"
    context_dependent: ClassVar[bool] = True
    extra_fields: ClassVar[tuple[str, ...]] = ("qkv_bias", "out_gate", "qk_norm_full", "post_norm")

    @classmethod
    def resolve(
        cls,
        width,
        heads=None,
        kv_heads=None,
        head_dim=None,
        qk_norm=False,
        qkv_bias=False,
        out_gate=False,
        qk_norm_full=False,
        post_norm=False,
        **more,
    ):
        heads, head_dim = resolve_heads(cls.op, width, heads, head_dim)
        if kv_heads is None:
            kv_heads = max(1, heads // 4)
            while heads % kv_heads:
                kv_heads -= 1
        positive(cls.op, kv_heads=kv_heads)
        divides(cls.op, "kv_heads", kv_heads, "heads", heads)
        flags = dict(
            qk_norm=qk_norm,
            qkv_bias=qkv_bias,
            out_gate=out_gate,
            qk_norm_full=qk_norm_full,
            post_norm=post_norm,
        )
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise InputError(f"{cls.op}: {name} must be true or false, got {value!r}")
        if qk_norm_full and not qk_norm:
            raise InputError(f"{cls.op}: qk_norm_full needs qk_norm")
        return cls(width, heads, kv_heads, head_dim, **flags, **more)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def q_proj_dim(self) -> int:
        """Rows of the query projection: the queries, and as many gate channels with out_gate."""
        return 2 * self.q_dim if self.out_gate else self.q_dim

    @property
    def qk_norm_params(self) -> int:
        if not self.qk_norm:
            return 0
        return self.q_dim + self.kv_dim if self.qk_norm_full else 2 * self.head_dim

    def param_count(self) -> int:
        qkv = self.q_proj_dim + 2 * self.kv_dim
        proj = self.width * qkv + self.q_dim * self.width
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        norms = self.width * (2 if self.post_norm else 1) + self.qk_norm_params
        return proj + bias + norms
