"""DeltaNet (delta rule, Yang et al. 2024) block: q/k/v with short convs, L2-normed q/k, beta,
delta-rule recurrence, per-head RMSNorm on the output, out-proj."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import OpSpec, StateBytes, dtype_bytes, positive, resolve_heads


@dataclass(frozen=True)
class DeltaNetSpec(OpSpec):
    heads: int = 0
    head_dim: int = 128
    d_conv: int = 4

    op: ClassVar[str] = "deltanet"

    @classmethod
    def resolve(cls, width, heads=None, head_dim=None, d_conv=4):
        heads, head_dim = resolve_heads(cls.op, width, heads, head_dim)
        positive(cls.op, d_conv=d_conv)
        return cls(width, heads, head_dim, d_conv)

    @property
    def key_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def value_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def conv_channels(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def param_count(self) -> int:
        proj = self.width * (2 * self.key_dim + self.value_dim + self.heads)  # q, k, v, beta
        conv = self.conv_channels * self.d_conv
        out = self.head_dim + self.value_dim * self.width  # output norm, out_proj
        return proj + conv + out + self.width

    def state_bytes(self, batch, max_context, dtype):
        nbytes = dtype_bytes(dtype)
        return StateBytes(
            recurrent=batch * self.heads * self.head_dim * (self.value_dim // self.heads) * nbytes,
            conv=batch * self.conv_channels * self.d_conv * nbytes,
        )

    def flops_per_step(self, batch, context):
        recurrence = 8 * batch * self.heads * self.head_dim * (self.value_dim // self.heads)
        return 2 * batch * self.param_count() + recurrence
