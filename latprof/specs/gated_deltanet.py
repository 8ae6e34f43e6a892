"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025) block: DeltaNet with a scalar decay gate per
head (Mamba2-style A_log, dt_bias), an output gate and a gated RMSNorm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import OpSpec, StateBytes, dtype_bytes, positive, resolve_heads


@dataclass(frozen=True)
class GatedDeltaNetSpec(OpSpec):
    heads: int = 0
    head_dim: int = 128
    expand_v: int = 1
    d_conv: int = 4

    op: ClassVar[str] = "gated_deltanet"

    @classmethod
    def resolve(cls, width, heads=None, head_dim=None, expand_v=1, d_conv=4):
        heads, head_dim = resolve_heads(cls.op, width, heads, head_dim)
        positive(cls.op, expand_v=expand_v, d_conv=d_conv)
        return cls(width, heads, head_dim, expand_v, d_conv)

    @property
    def key_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def head_v_dim(self) -> int:
        return self.head_dim * self.expand_v

    @property
    def value_dim(self) -> int:
        return self.heads * self.head_v_dim

    @property
    def conv_channels(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def param_count(self) -> int:
        # q, k, v, alpha (decay), beta, output gate
        proj = self.width * (2 * self.key_dim + 2 * self.value_dim + 2 * self.heads)
        conv = self.conv_channels * self.d_conv
        per_head = 2 * self.heads  # A_log, dt_bias
        out = self.head_v_dim + self.value_dim * self.width  # gated norm, out_proj
        return proj + conv + per_head + out + self.width

    def state_bytes(self, batch, max_context, dtype):
        nbytes = dtype_bytes(dtype)
        return StateBytes(
            recurrent=batch * self.heads * self.head_dim * self.head_v_dim * nbytes,
            conv=batch * self.conv_channels * self.d_conv * nbytes,
        )

    def flops_per_step(self, batch, context):
        recurrence = 9 * batch * self.heads * self.head_dim * self.head_v_dim
        return 2 * batch * self.param_count() + recurrence
