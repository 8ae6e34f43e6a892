"""Gated Linear Attention block: pre-RMSNorm, fused q/k/v/output-gate/low-rank-decay projection,
per-key-channel decay gk = logsigmoid(W2 (W1 x) + b) / 16, the GLA recurrence
S = diag(exp(gk)) S + k^T v, o = q S (q scaled by head_dim^-0.5), gated RMSNorm per head
(rms_norm(o) * weight * silu(gate)), out-projection, residual add.  No short convolution.

Reference: Yang, Wang, Shen, Panda & Kim, "Gated Linear Attention Transformers with
Hardware-Efficient Training", ICML 2024 (arXiv 2312.06635), section 4.4 (the low-rank gate and
its normaliser 16, and the swish output gate), in the layout of fla's `GatedLinearAttention`
layer.

Backends of the decode step (see `LinearAttentionBlock` for what the three linear-attention
blocks share, state dtype included):
- "torch": `gla_step` from `linear_attention`;
- "fla": fla's `fused_recurrent_gla`.
The decay gk is computed and passed to the kernel in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.base import State, rms_norm
from latprof.ops.linear_attention import LinearAttentionBlock, gla_recurrence, gla_step
from latprof.specs.gla import GLASpec

#: the decay's log-sigmoid is divided by this (GLA paper section 4.4; fla `gate_logit_normalizer`)
GATE_LOGIT_NORMALIZER = 16


class GLABlock(LinearAttentionBlock):
    """x + w_out(gated_norm(gla(q, k, v, gk), gate)); see the module docstring."""

    spec: GLASpec

    def __init__(
        self,
        spec: GLASpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        # rows: q, k, v, gate (inner_dim each), decay down-projection W1 (gate_rank)
        self.w_in = self.new_param(4 * spec.inner_dim + spec.gate_rank, spec.width)
        self.w_gk = self.new_param(spec.inner_dim, spec.gate_rank)  # W2: (inner_dim, gate_rank)
        self.b_gk = self.new_param(spec.inner_dim, fan_in=spec.gate_rank)  # (inner_dim,)
        self.o_norm = self.new_norm(spec.head_dim)
        self.w_out = self.new_param(spec.width, spec.inner_dim)  # (width, inner_dim)

    def allocate_state(self, batch: int, max_context: int) -> State:
        """Constant-size state whatever `max_context`: recurrent: (batch, heads, head_dim,
        head_dim).  GLA has no conv state."""
        s = self.spec
        return {"recurrent": self.zeros(batch, s.heads, s.head_dim, s.head_dim)}

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch, width) -> (batch, width); updates `state` in place; `pos` unused."""
        s = self.spec
        batch = x.shape[0]
        q, k, v, gate, gk = self._project(x)  # (batch, heads, head_dim) each, gate (batch, inner)
        if self._fla is None:
            o, new_state = gla_step(q, k, v, gk, state["recurrent"], self.scale)
        else:
            o, new_state = self._fla.gla(
                q.unsqueeze(1),  # (batch, 1, heads, head_dim)
                k.unsqueeze(1),
                v.unsqueeze(1),
                gk=gk.unsqueeze(1),  # (batch, 1, heads, head_dim) float32
                scale=self.scale,
                initial_state=state["recurrent"],
                output_final_state=True,
            )
        state["recurrent"].copy_(new_state)
        return x + self._output(o.reshape(batch, s.heads, s.head_dim).to(x.dtype), gate)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width) -> (batch, seq, width); continues from `state` (zeros for a
        fresh one) and leaves it as `seq` decode steps would."""
        q, k, v, gate, gk = self._project(x)  # (batch, seq, heads, head_dim) each
        o, final = gla_recurrence(q, k, v, gk, state["recurrent"], self.scale)
        state["recurrent"].copy_(final)
        return x + self._output(o.to(x.dtype), gate)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (..., width) -> q, k, v: (..., heads, head_dim) in x's dtype, gate: (..., inner_dim),
        gk: (..., heads, head_dim) float32 log decay."""
        s = self.spec
        proj = F.linear(rms_norm(x, self.norm), self.w_in)  # (..., 4 inner_dim + gate_rank)
        q, k, v, gate, low = proj.split([s.inner_dim] * 4 + [s.gate_rank], dim=-1)
        gk = F.logsigmoid(F.linear(low, self.w_gk, self.b_gk).float()) / GATE_LOGIT_NORMALIZER
        q, k, v, gk = (t.unflatten(-1, (s.heads, s.head_dim)) for t in (q, k, v, gk))
        return q, k, v, gate, gk
