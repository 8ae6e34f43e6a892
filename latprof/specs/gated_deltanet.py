"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025) block: DeltaNet with a scalar decay gate per
head (Mamba2-style A_log, dt_bias), an output gate and a gated RMSNorm.

`v_heads` (0: as many as the key heads): Qwen3-Next's grouped value heads, more value heads
than key heads, each key head shared by v_heads / heads of them; the value size stays
heads x head_dim x expand_v, split into v_heads heads, and the decay and beta gates, A_log and
dt_bias are per value head.  The recurrent state is v_heads x head_dim x head_v_dim."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import (
    OpSpec,
    StateBytes,
    divides,
    dtype_bytes,
    positive,
    resolve_heads,
)


@dataclass(frozen=True)
class GatedDeltaNetSpec(OpSpec):
    heads: int = 0
    head_dim: int = 128
    expand_v: int = 1
    d_conv: int = 4
    v_heads: int = 0

    op: ClassVar[str] = "gated_deltanet"
    extra_fields: ClassVar[tuple[str, ...]] = ("v_heads",)

    @classmethod
    def resolve(cls, width, heads=None, head_dim=None, expand_v=1, d_conv=4, v_heads=0):
        heads, head_dim = resolve_heads(cls.op, width, heads, head_dim)
        positive(cls.op, expand_v=expand_v, d_conv=d_conv)
        if v_heads == heads:
            v_heads = 0
        if v_heads:
            positive(cls.op, v_heads=v_heads)
            divides(cls.op, "heads", heads, "v_heads", v_heads)
            divides(cls.op, "v_heads", v_heads, "value size", heads * head_dim * expand_v)
        return cls(width, heads, head_dim, expand_v, d_conv, v_heads)

    @property
    def value_heads(self) -> int:
        return self.v_heads or self.heads

    @property
    def key_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def value_dim(self) -> int:
        return self.heads * self.head_dim * self.expand_v

    @property
    def head_v_dim(self) -> int:
        return self.value_dim // self.value_heads

    @property
    def conv_channels(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def param_count(self) -> int:
        # q, k, v, alpha (decay), beta, output gate
        proj = self.width * (2 * self.key_dim + 2 * self.value_dim + 2 * self.value_heads)
        conv = self.conv_channels * self.d_conv
        per_head = 2 * self.value_heads  # A_log, dt_bias
        out = self.head_v_dim + self.value_dim * self.width  # gated norm, out_proj
        return proj + conv + per_head + out + self.width

    def state_bytes(self, batch, max_context, dtype):
        nbytes = dtype_bytes(dtype)
        return StateBytes(
            recurrent=batch * self.value_heads * self.head_dim * self.head_v_dim * nbytes,
            conv=batch * self.conv_channels * self.d_conv * nbytes,
        )

    def flops_per_step(self, batch, context):
        recurrence = 9 * batch * self.value_heads * self.head_dim * self.head_v_dim
        return 2 * batch * self.param_count() + recurrence
