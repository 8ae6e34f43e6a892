"""Gated Linear Attention (Yang et al. 2024) block: q/k/v, a low-rank data-dependent decay per key
channel, an output gate with swish-gated RMSNorm, out-proj."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import OpSpec, StateBytes, dtype_bytes, positive, resolve_heads


@dataclass(frozen=True)
class GLASpec(OpSpec):
    heads: int = 0
    head_dim: int = 128
    gate_rank: int = 16

    op: ClassVar[str] = "gla"

    @classmethod
    def resolve(cls, width, heads=None, head_dim=None, gate_rank=16):
        heads, head_dim = resolve_heads(cls.op, width, heads, head_dim)
        positive(cls.op, gate_rank=gate_rank)
        return cls(width, heads, head_dim, gate_rank)

    @property
    def inner_dim(self) -> int:
        return self.heads * self.head_dim

    def param_count(self) -> int:
        qkv_gate = 4 * self.width * self.inner_dim  # q, k, v, output gate
        decay = self.width * self.gate_rank + self.gate_rank * self.inner_dim + self.inner_dim
        out = self.head_dim + self.inner_dim * self.width
        return qkv_gate + decay + out + self.width

    def state_bytes(self, batch, max_context, dtype):
        return StateBytes(
            recurrent=batch * self.heads * self.head_dim * self.head_dim * dtype_bytes(dtype)
        )

    def flops_per_step(self, batch, context):
        recurrence = 5 * batch * self.heads * self.head_dim * self.head_dim
        return 2 * batch * self.param_count() + recurrence
