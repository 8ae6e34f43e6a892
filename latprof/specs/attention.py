"""Softmax attention block: pre-RMSNorm, q/k/v projections, RoPE, GQA over a KV cache, out-proj."""

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


@dataclass(frozen=True)
class AttentionSpec(OpSpec):
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    qk_norm: bool = False

    op: ClassVar[str] = "attention"
    context_dependent: ClassVar[bool] = True

    @classmethod
    def resolve(cls, width, heads=None, kv_heads=None, head_dim=None, qk_norm=False):
        heads, head_dim = resolve_heads(cls.op, width, heads, head_dim)
        if kv_heads is None:
            kv_heads = max(1, heads // 4)
            while heads % kv_heads:
                kv_heads -= 1
        positive(cls.op, kv_heads=kv_heads)
        divides(cls.op, "kv_heads", kv_heads, "heads", heads)
        if not isinstance(qk_norm, bool):
            raise InputError(f"attention: qk_norm must be true or false, got {qk_norm!r}")
        return cls(width, heads, kv_heads, head_dim, qk_norm)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def param_count(self) -> int:
        proj = self.width * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.width
        norms = self.width + (2 * self.head_dim if self.qk_norm else 0)
        return proj + norms

    def state_bytes(self, batch, max_context, dtype):
        return StateBytes(kv_cache=2 * batch * max_context * self.kv_dim * dtype_bytes(dtype))

    def cache_traffic_bytes(self, batch, context, dtype):
        # read K and V for context + 1 positions, write the new position's K and V
        return 2 * batch * (context + 2) * self.kv_dim * dtype_bytes(dtype)

    def flops_per_step(self, batch, context):
        scores_and_values = 4 * batch * self.heads * self.head_dim * (context + 1)
        return 2 * batch * self.param_count() + scores_and_values
