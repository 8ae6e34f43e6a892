"""Mamba2 (SSD, Dao & Gu 2024) block: pre-RMSNorm, Mamba2 mixer with gated RMSNorm, residual add.

The inner size is `expand * width`, or `inner` where a published model sets it directly and it
is no multiple of the width (Falcon-H1: 1.5 x width; Nemotron-H: heads x head_dim); such a spec
has expand 0.  An `inner` that is `expand * width` for an integer expand is stored as that
expand, so one shape has one key.  `gated_norm` false: y * silu(z) without the RMSNorm
(Falcon-H1's mamba_rms_norm false).
`pre_norm` false: the block has no norm of its own, because it shares the one of a mixer running
beside it (Falcon-H1's attention and Mamba2 read one normalised input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import InputError, OpSpec, StateBytes, divides, dtype_bytes, positive


@dataclass(frozen=True)
class Mamba2Spec(OpSpec):
    expand: int = 2
    head_dim: int = 64
    d_state: int = 128
    n_groups: int = 1
    d_conv: int = 4
    inner: int = 0  # 0: expand * width
    gated_norm: bool = True
    pre_norm: bool = True

    op: ClassVar[str] = "mamba2"
    extra_fields: ClassVar[tuple[str, ...]] = ("inner", "gated_norm", "pre_norm")

    @classmethod
    def resolve(
        cls,
        width,
        expand=2,
        head_dim=64,
        d_state=128,
        n_groups=1,
        d_conv=4,
        inner=0,
        gated_norm=True,
        pre_norm=True,
    ):
        positive(cls.op, width=width, head_dim=head_dim, d_state=d_state)
        positive(cls.op, n_groups=n_groups, d_conv=d_conv)
        if inner:  # given directly: kept only where no integer expand gives it
            positive(cls.op, inner=inner)
            expand, inner = (inner // width, 0) if inner % width == 0 else (0, inner)
        else:
            positive(cls.op, expand=expand)
        size = inner or expand * width
        divides(cls.op, "head_dim", head_dim, "d_inner", size)
        divides(cls.op, "n_groups", n_groups, "heads", size // head_dim)
        for name, value in (("gated_norm", gated_norm), ("pre_norm", pre_norm)):
            if not isinstance(value, bool):
                raise InputError(f"{cls.op}: {name} must be true or false, got {value!r}")
        return cls(width, expand, head_dim, d_state, n_groups, d_conv, inner, gated_norm, pre_norm)

    @property
    def d_inner(self) -> int:
        return self.inner or self.expand * self.width

    def pre_norm_params(self) -> int:
        return self.width if self.pre_norm else 0

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
        gated_norm = self.d_inner if self.gated_norm else 0
        out = gated_norm + self.d_inner * self.width  # gated norm, out_proj
        return in_proj + conv + per_head + out + self.pre_norm_params()

    def state_bytes(self, batch, max_context, dtype):
        nbytes = dtype_bytes(dtype)
        return StateBytes(
            recurrent=batch * self.heads * self.head_dim * self.d_state * nbytes,
            conv=batch * self.conv_dim * self.d_conv * nbytes,
        )

    def flops_per_step(self, batch, context):
        ssm = 6 * batch * self.heads * self.head_dim * self.d_state
        return 2 * batch * self.param_count() + ssm
