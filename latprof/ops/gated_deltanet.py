"""Gated DeltaNet block: pre-RMSNorm, fused q/k/v/gate/alpha/beta projection, short causal convs
(no bias) with SiLU on q, k and v, L2-normalised q and k, per-head decay
g = -exp(A_log) * softplus(alpha + dt_bias) (Mamba2's parameterisation), sigmoid beta, the gated
delta rule, gated RMSNorm per head (rms_norm(o) * weight * silu(gate)), out-projection, residual.

Reference: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
ICLR 2025 (arXiv 2412.06464), in the layout of fla's `GatedDeltaNet` layer: value heads are
`expand_v` times wider than key heads, q scaled by head_dim^-0.5.

Backends of the decode step (see `LinearAttentionBlock` for what the three linear-attention
blocks share, state dtype included):
- "torch": `causal_conv_step` and `gated_delta_rule_step` from `linear_attention`;
- "fla": fla's `causal_conv1d_update` and `fused_recurrent_gated_delta_rule` with the q/k L2 norm,
  the decay gate and the beta sigmoid fused into the kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latprof.ops.base import State, rms_norm
from latprof.ops.linear_attention import (
    LinearAttentionBlock,
    causal_conv,
    gated_delta_rule_recurrence,
    gated_delta_rule_step,
    l2_normalize,
)
from latprof.specs.gated_deltanet import GatedDeltaNetSpec

#: range of exp(A_log) and of the initial softplus(dt_bias), as in fla / Mamba2
A_RANGE = (1.0, 16.0)
DT_RANGE = (1e-3, 0.1)


def log_decay(alpha: torch.Tensor, a_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """g = -exp(A_log) * softplus(alpha + dt_bias), float32.

    alpha: (..., heads) projected input
    a_log, dt_bias: (heads,)
    returns (..., heads) float32, <= 0
    """
    return -a_log.float().exp() * F.softplus(alpha.float() + dt_bias.float())


class GatedDeltaNetBlock(LinearAttentionBlock):
    """x + w_out(gated_norm(gated_delta_rule(conv(q, k, v), g, beta), gate)); see the module
    docstring."""

    spec: GatedDeltaNetSpec

    def __init__(
        self,
        spec: GatedDeltaNetSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        hv = spec.value_heads  # the decay / beta gates and the state are per value head
        # rows: q, k (key_dim each), v, gate (value_dim each), alpha, beta (value heads each)
        n_in = spec.conv_channels + spec.value_dim + 2 * hv
        self.w_in = self.new_param(n_in, spec.width)  # (n_in, width)
        self.conv_weight = self.new_param(spec.conv_channels, spec.d_conv)  # (channels, d_conv)
        a = torch.empty(hv).uniform_(*A_RANGE, generator=self.generator)  # (value heads,)
        self.a_log = self.param_from(a.log())
        self.dt_bias = self.param_from(_inverse_softplus(self._initial_dt(hv)))
        self.o_norm = self.new_norm(spec.head_v_dim)
        self.w_out = self.new_param(spec.width, spec.value_dim)  # (width, value_dim)

    def allocate_state(self, batch: int, max_context: int) -> State:
        """Constant-size state whatever `max_context`:
        recurrent: (batch, heads, head_dim, head_v_dim), conv: (batch, conv_channels, d_conv)."""
        s = self.spec
        return {
            "recurrent": self.zeros(batch, s.value_heads, s.head_dim, s.head_v_dim),
            "conv": self.zeros(batch, s.conv_channels, s.d_conv),
        }

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch, width) -> (batch, width); updates `state` in place; `pos` unused."""
        s = self.spec
        batch = x.shape[0]
        proj = F.linear(rms_norm(x, self.norm), self.w_in)  # (batch, n_in)
        hv = s.value_heads
        qkv, gate, alpha, b = proj.split([s.conv_channels, s.value_dim, hv, hv], dim=-1)
        q, k, v = self._split_heads(self._conv_step(qkv, state))  # v: (batch, hv, head_v_dim)
        if self._fla is None:
            q, k = l2_normalize(q), l2_normalize(k)
            g = log_decay(alpha, self.a_log, self.dt_bias)  # (batch, heads)
            beta = b.float().sigmoid()  # (batch, heads)
            o, new_state = gated_delta_rule_step(q, k, v, beta, g, state["recurrent"], self.scale)
        else:
            o, new_state = self._fla.gated_delta_rule(
                q.unsqueeze(1),  # (batch, 1, heads, head_dim)
                k.unsqueeze(1),
                v.unsqueeze(1),  # (batch, 1, heads, head_v_dim)
                g=alpha.unsqueeze(1),  # (batch, 1, heads): raw, the kernel applies the gate
                beta=b.unsqueeze(1),  # (batch, 1, heads): raw, the kernel applies the sigmoid
                scale=self.scale,
                initial_state=state["recurrent"],
                output_final_state=True,
                use_qk_l2norm_in_kernel=True,
                use_gate_in_kernel=True,
                A_log=self.a_log,
                dt_bias=self.dt_bias,
                use_beta_sigmoid_in_kernel=True,
            )
        state["recurrent"].copy_(new_state)
        o = o.reshape(batch, hv, s.head_v_dim).to(x.dtype)
        return x + self._output(o, gate)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width) -> (batch, seq, width); continues from `state` (zeros for a
        fresh one) and leaves it as `seq` decode steps would."""
        s = self.spec
        proj = F.linear(rms_norm(x, self.norm), self.w_in)  # (batch, seq, n_in)
        hv = s.value_heads
        qkv, gate, alpha, b = proj.split([s.conv_channels, s.value_dim, hv, hv], dim=-1)
        qkv = causal_conv(qkv, state["conv"], self.conv_weight)
        q, k, v = self._split_heads(qkv)  # v: (batch, seq, hv, head_v_dim)
        q, k = l2_normalize(q), l2_normalize(k)
        g = log_decay(alpha, self.a_log, self.dt_bias)  # (batch, seq, heads)
        beta = b.float().sigmoid()  # (batch, seq, heads)
        o, final = gated_delta_rule_recurrence(q, k, v, beta, g, state["recurrent"], self.scale)
        state["recurrent"].copy_(final)
        return x + self._output(o.to(x.dtype), gate)

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k: (..., value heads, head_dim), each key head repeated for the v_heads / heads
        value heads that share it (grouped value heads; a no-op without them); v: (..., value
        heads, head_v_dim)."""
        s = self.spec
        q, k, v = (
            t.unflatten(-1, (h, -1))
            for t, h in zip(
                qkv.split([s.key_dim, s.key_dim, s.value_dim], dim=-1),
                (s.heads, s.heads, s.value_heads),
                strict=True,
            )
        )
        if s.v_heads:
            group = s.v_heads // s.heads
            q, k = q.repeat_interleave(group, dim=-2), k.repeat_interleave(group, dim=-2)
        return q, k, v

    def _initial_dt(self, heads: int) -> torch.Tensor:
        """(heads,) time steps log-uniform in DT_RANGE, float32."""
        lo, hi = (math.log(t) for t in DT_RANGE)
        return torch.empty(heads).uniform_(lo, hi, generator=self.generator).exp()


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x such that softplus(x) = y, for y > 0."""
    return y + torch.log(-torch.expm1(-y))
