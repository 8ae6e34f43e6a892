"""Kimi Delta Attention (KDA, Kimi Team 2025, the linear-attention mixer of Kimi Linear) block:
Gated DeltaNet with a decay per key channel instead of per head, produced by a low-rank forget
gate, and a sigmoid-gated RMSNorm on the output.

Layout of transformers' `KimiLinearDeltaAttention` (model_type `kimi_linear`): q, k, v of
heads x head_dim each (no separate value size), a short conv over all three, low-rank forget and
output gates (width -> gate_rank -> heads x head_dim; transformers fixes gate_rank = head_dim),
one beta per head.  The recurrent state is heads x head_dim x head_dim."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import OpSpec, StateBytes, dtype_bytes, positive, resolve_heads


@dataclass(frozen=True)
class KDASpec(OpSpec):
    heads: int = 0
    head_dim: int = 128
    d_conv: int = 4
    gate_rank: int = 0  # resolved to head_dim when not given

    op: ClassVar[str] = "kda"

    @classmethod
    def resolve(cls, width, heads=None, head_dim=None, d_conv=4, gate_rank=None):
        heads, head_dim = resolve_heads(cls.op, width, heads, head_dim)
        if gate_rank is None:
            gate_rank = head_dim
        positive(cls.op, d_conv=d_conv, gate_rank=gate_rank)
        return cls(width, heads, head_dim, d_conv, gate_rank)

    @property
    def key_dim(self) -> int:
        """heads x head_dim: the size of q, of k and of v (KDA's value heads are as wide)."""
        return self.heads * self.head_dim

    @property
    def value_dim(self) -> int:
        return self.key_dim

    @property
    def conv_channels(self) -> int:
        return 3 * self.key_dim

    def param_count(self) -> int:
        d = self.key_dim
        # from the width: q, k, v, beta, the forget and output gates' down-projections
        proj = self.width * (3 * d + self.heads + 2 * self.gate_rank)
        up = 2 * self.gate_rank * d  # the two gates' up-projections
        conv = self.conv_channels * self.d_conv
        decay = d + self.heads  # dt_bias per channel, A_log per head
        out = self.head_dim + d * self.width  # gated norm (shared by heads), o_proj
        return proj + up + conv + decay + out + self.width

    def state_bytes(self, batch, max_context, dtype):
        nbytes = dtype_bytes(dtype)
        return StateBytes(
            recurrent=batch * self.heads * self.head_dim * self.head_dim * nbytes,
            conv=batch * self.conv_channels * self.d_conv * nbytes,
        )

    def flops_per_step(self, batch, context):
        # per head and token, on the (head_dim x head_dim) state S: the decay diag(exp(g)) S is
        # one multiply per element, the recall k S, the rank-one update S + k^T delta and the
        # read-out q S one multiply-add (two FLOPs) per element each: 7 per element; per value
        # channel v - kS and the beta scaling (2), per key channel the exp of the decay (1).
        # The projections, conv, norms and gates are the 2 x params term.
        dk = dv = self.head_dim
        recurrence = batch * self.heads * (7 * dk * dv + 2 * dv + dk)
        return 2 * batch * self.param_count() + recurrence
