"""Mamba (selective SSM, Gu & Dao 2023) block: pre-RMSNorm, Mamba mixer, residual add."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import InputError, OpSpec, StateBytes, dtype_bytes, positive


@dataclass(frozen=True)
class MambaSpec(OpSpec):
    expand: int = 2
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0
    #: RMSNorms on dt, B and C after x_proj (Jamba)
    dt_norms: bool = False

    op: ClassVar[str] = "mamba"
    extra_fields: ClassVar[tuple[str, ...]] = ("dt_norms",)

    @classmethod
    def resolve(cls, width, expand=2, d_state=16, d_conv=4, dt_rank=None, dt_norms=False):
        positive(cls.op, width=width, expand=expand, d_state=d_state, d_conv=d_conv)
        if dt_rank is None:
            dt_rank = math.ceil(width / 16)
        positive(cls.op, dt_rank=dt_rank)
        if not isinstance(dt_norms, bool):
            raise InputError(f"mamba: dt_norms must be true or false, got {dt_norms!r}")
        return cls(width, expand, d_state, d_conv, dt_rank, dt_norms)

    @property
    def d_inner(self) -> int:
        return self.expand * self.width

    def param_count(self) -> int:
        d_in = self.d_inner
        in_proj = self.width * 2 * d_in
        conv = d_in * self.d_conv + d_in
        x_proj = d_in * (self.dt_rank + 2 * self.d_state)
        dt_proj = self.dt_rank * d_in + d_in
        ssm = d_in * self.d_state + d_in  # A_log, D
        out_proj = d_in * self.width
        norms = self.dt_rank + 2 * self.d_state if self.dt_norms else 0
        return in_proj + conv + x_proj + dt_proj + ssm + out_proj + norms + self.width

    def state_bytes(self, batch, max_context, dtype):
        nbytes = dtype_bytes(dtype)
        return StateBytes(
            recurrent=batch * self.d_inner * self.d_state * nbytes,
            conv=batch * self.d_inner * self.d_conv * nbytes,
        )

    def flops_per_step(self, batch, context):
        ssm = 6 * batch * self.d_inner * self.d_state
        return 2 * batch * self.param_count() + ssm
