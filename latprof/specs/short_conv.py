"""Gated short-convolution block (LFM2's `conv` layers): pre-RMSNorm, in_proj to three streams
B, C and x of the width, a depthwise causal conv of `d_conv` taps over B * x (no activation), the
output gated by C, out_proj, residual add.

Its decode state is the conv's last `d_conv` inputs per channel, (batch, width, d_conv), fla's
causal_conv1d_update cache layout (the same convention as latprof's Mamba conv state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import OpSpec, StateBytes, dtype_bytes, positive


@dataclass(frozen=True)
class ShortConvSpec(OpSpec):
    d_conv: int = 3

    op: ClassVar[str] = "short_conv"

    @classmethod
    def resolve(cls, width, d_conv=3):
        positive(cls.op, width=width, d_conv=d_conv)
        return cls(width, d_conv)

    def param_count(self) -> int:
        in_proj = 3 * self.width * self.width
        conv = self.width * self.d_conv
        out_proj = self.width * self.width
        return in_proj + conv + out_proj + self.width

    def state_bytes(self, batch, max_context, dtype):
        return StateBytes(conv=batch * self.width * self.d_conv * dtype_bytes(dtype))

    def flops_per_step(self, batch, context):
        gates = 2 * batch * self.width  # B * x and C * conv
        return 2 * batch * self.param_count() + gates
