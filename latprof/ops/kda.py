"""Kimi Delta Attention block: pre-RMSNorm, fused projection of q, k, v, beta and the two
low-rank gates' down-projections, a short causal conv (no bias) with SiLU on q, k and v,
L2-normalised q and k, a decay per key channel g = -exp(A_log[head]) * softplus(f + dt_bias)
with f = f_b(f_a(x)), sigmoid beta, the gated delta rule with that channel-wise decay, RMSNorm
per head times sigmoid(g_b(g_a(x))), out-projection, residual.

Reference: Kimi Team, "Kimi Linear: An Expressive, Efficient Attention Architecture", 2025
(arXiv 2510.26692), in the layout of transformers' `KimiLinearDeltaAttention` (its
`KimiLinearForgetGate` and `KimiLinearRMSNormGated`, whose gate activation is a sigmoid, not
the swish of Gated DeltaNet); per head, with the state S of (head_dim_k, head_dim_v), keys first:
    S <- diag(exp(g)) S,  S <- S + k^T (beta (v - k S)),  o = scale * q S.
Gated DeltaNet's `gated_delta_rule_step` decays S by one scalar per head; GLA's `gla_step` by
one per key channel, as here, but without the delta rule.

Backends of the decode step (see `LinearAttentionBlock` for what the linear-attention blocks
share, state dtype included):
- "torch": `causal_conv_step` from `linear_attention` and `kda_step` below;
- "fla": fla's `causal_conv1d_update` and `fused_recurrent_kda` with the q/k L2 norm, the decay
  gate (A_log, dt_bias) and the beta sigmoid fused into the kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.base import State, rms_norm
from latprof.ops.linear_attention import (
    LinearAttentionBlock,
    causal_conv,
    gated_delta_rule_step,
    l2_normalize,
)
from latprof.ops.ssm_init import init_a_log, init_dt_bias
from latprof.specs.kda import KDASpec


def kda_log_decay(f: torch.Tensor, a_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """g = -exp(A_log[head]) * softplus(f + dt_bias), per key channel, float32.

    f: (..., heads * head_dim) the forget gate's projection f_b(f_a(x))
    a_log: (heads,)
    dt_bias: (heads * head_dim,)
    returns (..., heads, head_dim) float32, <= 0
    """
    heads = a_log.shape[0]
    g = (f.float() + dt_bias.float()).unflatten(-1, (heads, -1))  # (..., heads, head_dim)
    return -a_log.float().exp()[:, None] * F.softplus(g)


def kda_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of Kimi Delta Attention, float32: the state decayed per key channel,
    S <- diag(exp(g)) S, then the delta rule (`gated_delta_rule_step` without its own decay).

    q, k: (batch, heads, head_k_dim), already L2-normalised by the caller
    v: (batch, heads, head_v_dim)
    beta: (batch, heads) writing strength in (0, 1)
    g: (batch, heads, head_k_dim) log decay of each key channel (<= 0)
    state: (batch, heads, head_k_dim, head_v_dim) any dtype, read as float32, not modified
    returns o: (batch, heads, head_v_dim) and the new state, both float32.
    """
    decayed = state.float() * g.float().exp()[..., :, None]
    return gated_delta_rule_step(q, k, v, beta, None, decayed, scale)


def kda_recurrence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`kda_step` over a sequence, token by token.

    q, k, g: (batch, seq, heads, head_k_dim), q and k already L2-normalised
    v: (batch, seq, heads, head_v_dim)
    beta: (batch, seq, heads)
    state: (batch, heads, head_k_dim, head_v_dim) initial state (any dtype), not modified
    returns o: (batch, seq, heads, head_v_dim) and the final state, both float32.
    """
    state = state.float()
    outputs = []
    for t in range(q.shape[1]):
        o_t, state = kda_step(q[:, t], k[:, t], v[:, t], beta[:, t], g[:, t], state, scale)
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), state


class KDABlock(LinearAttentionBlock):
    """x + w_out(sigmoid-gated norm(kda(conv(q, k, v), g, beta), gate)); see the module
    docstring."""

    spec: KDASpec
    gate_activation = "sigmoid"  # KimiLinearRMSNormGated

    def __init__(
        self,
        spec: KDASpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        d, r = spec.key_dim, spec.gate_rank
        # rows: q, k, v (d each), f_a and g_a (the gates' down-projections, r each), beta (heads)
        self.w_in = self.new_param(3 * d + 2 * r + spec.heads, spec.width)  # (n_in, width)
        self.conv_weight = self.new_param(spec.conv_channels, spec.d_conv)  # (3 d, d_conv)
        self.w_f = self.new_param(d, r)  # f_b: (d, gate_rank)
        self.w_g = self.new_param(d, r)  # g_b: (d, gate_rank)
        self.a_log = self.param_from(init_a_log(spec.heads, generator=self.generator))  # (heads,)
        self.dt_bias = self.param_from(init_dt_bias(d, self.generator))  # (d,) one per channel
        self.o_norm = self.new_norm(spec.head_dim)
        self.w_out = self.new_param(spec.width, d)  # (width, d)

    def allocate_state(self, batch: int, max_context: int) -> State:
        """Constant-size state whatever `max_context`:
        recurrent: (batch, heads, head_dim, head_dim), conv: (batch, 3 heads head_dim, d_conv)."""
        s = self.spec
        return {
            "recurrent": self.zeros(batch, s.heads, s.head_dim, s.head_dim),
            "conv": self.zeros(batch, s.conv_channels, s.d_conv),
        }

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch, width) -> (batch, width); updates `state` in place; `pos` unused."""
        s = self.spec
        batch = x.shape[0]
        qkv, f, gate, b = self._project(x)  # (batch, 3 d), (batch, d), (batch, d), (batch, heads)
        q, k, v = self._split_heads(self._conv_step(qkv, state))  # (batch, heads, head_dim) each
        if self._fla is None:
            q, k = l2_normalize(q), l2_normalize(k)
            g = kda_log_decay(f, self.a_log, self.dt_bias)  # (batch, heads, head_dim)
            beta = b.float().sigmoid()  # (batch, heads)
            o, new_state = kda_step(q, k, v, beta, g, state["recurrent"], self.scale)
        else:
            o, new_state = self._fla.kda(
                q.unsqueeze(1),  # (batch, 1, heads, head_dim)
                k.unsqueeze(1),
                v.unsqueeze(1),
                g=f.unflatten(-1, (s.heads, s.head_dim)).unsqueeze(1),  # raw: the kernel gates
                beta=b.unsqueeze(1),  # (batch, 1, heads): raw, the kernel applies the sigmoid
                A_log=self.a_log,
                dt_bias=self.dt_bias,
                scale=self.scale,
                initial_state=state["recurrent"],
                output_final_state=True,
                use_qk_l2norm_in_kernel=True,
                use_gate_in_kernel=True,
                use_beta_sigmoid_in_kernel=True,
            )
        state["recurrent"].copy_(new_state)
        o = o.reshape(batch, s.heads, s.head_dim).to(x.dtype)
        return x + self._output(o, gate)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width) -> (batch, seq, width); continues from `state` (zeros for a
        fresh one) and leaves it as `seq` decode steps would."""
        qkv, f, gate, b = self._project(x)  # (batch, seq, ...)
        qkv = causal_conv(qkv, state["conv"], self.conv_weight)
        q, k, v = self._split_heads(qkv)  # (batch, seq, heads, head_dim) each
        q, k = l2_normalize(q), l2_normalize(k)
        g = kda_log_decay(f, self.a_log, self.dt_bias)  # (batch, seq, heads, head_dim)
        beta = b.float().sigmoid()  # (batch, seq, heads)
        o, final = kda_recurrence(q, k, v, beta, g, state["recurrent"], self.scale)
        state["recurrent"].copy_(final)
        return x + self._output(o.to(x.dtype), gate)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (..., width) -> qkv: (..., 3 d) before the conv, f: (..., d) the forget gate before
        its activation, gate: (..., d) the output gate before its sigmoid, b: (..., heads) beta
        before its sigmoid; all in x's dtype (d = heads x head_dim)."""
        s = self.spec
        proj = F.linear(rms_norm(x, self.norm), self.w_in)  # (..., 3 d + 2 gate_rank + heads)
        qkv, f_low, g_low, b = proj.split(
            [s.conv_channels, s.gate_rank, s.gate_rank, s.heads], dim=-1
        )
        return qkv, F.linear(f_low, self.w_f), F.linear(g_low, self.w_g), b
