"""Mamba2 (SSD, Dao & Gu 2024) block: pre-RMSNorm, Mamba2 mixer with gated RMSNorm, residual add."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import OpSpec, StateBytes, divides, dtype_bytes, positive


@dataclass(frozen=True)
class Mamba2Spec(OpSpec):
    expand: int = 2
    head_dim: int = 64
    d_state: int = 128
    n_groups: int = 1
    d_conv: int = 4

    op: ClassVar[str] = "mamba2"

    @classmethod
    def resolve(cls, width, expand=2, head_dim=64, d_state=128, n_groups=1, d_conv=4):
        positive(cls.op, width=width, expand=expand, head_dim=head_dim, d_state=d_state)
        positive(cls.op, n_groups=n_groups, d_conv=d_conv)
        divides(cls.op, "head_dim", head_dim, "expand*width", expand * width)
        divides(cls.op, "n_groups", n_groups, "heads", expand * width // head_dim)
        return cls(width, expand, head_dim, d_state, n_groups, d_conv)

    @property
    def d_inner(self) -> int:
        return self.expand * self.width

    @property
    def heads(self) -> int:
        return self.d_inner // self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    def param_count(self) -> int:
        in_proj = self.width * (2 * self.d_inner + 2 * self.n_groups * self.d_state + self.heads)
        conv = self.conv_dim * self.d_conv + self.conv_dim
        per_head = 3 * self.heads  # dt_bias, A_log, D
        out = self.d_inner + self.d_inner * self.width  # gated norm, out_proj
        return in_proj + conv + per_head + out + self.width

    def state_bytes(self, batch, max_context, dtype):
        nbytes = dtype_bytes(dtype)
        return StateBytes(
            recurrent=batch * self.heads * self.head_dim * self.d_state * nbytes,
            conv=batch * self.conv_dim * self.d_conv * nbytes,
        )

    def flops_per_step(self, batch, context):
        ssm = 6 * batch * self.heads * self.head_dim * self.d_state
        return 2 * batch * self.param_count() + ssm
