"""DeltaNet block: pre-RMSNorm, fused q/k/v/beta projection, short causal convs (no bias) with
SiLU on q, k and v, L2-normalised q and k, sigmoid beta, the delta rule, per-head RMSNorm of the
output, out-projection, residual add.

Reference: Yang, Wang, Zhang, Shen & Kim, "Parallelizing Linear Transformers with the Delta Rule
over Sequence Length", NeurIPS 2024 (arXiv 2406.06484), in the layout of fla's `DeltaNet` layer
(q scaled by head_dim^-0.5, as fla's kernels do by default).

Backends of the decode step (see `LinearAttentionBlock` for what the three linear-attention
blocks share, state dtype included):
- "torch": `causal_conv_step` and `gated_delta_rule_step` (no gate) from `linear_attention`;
- "fla": fla's `causal_conv1d_update` and `fused_recurrent_delta_rule` (with the q/k L2 norm
  fused).
"""

from __future__ import annotations

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
from latprof.specs.deltanet import DeltaNetSpec


class DeltaNetBlock(LinearAttentionBlock):
    """x + w_out(head_rms_norm(delta_rule(conv(q, k, v), beta))); see the module docstring."""

    spec: DeltaNetSpec

    def __init__(
        self,
        spec: DeltaNetSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        # rows: q (key_dim), k (key_dim), v (value_dim), beta (heads)
        self.w_in = self.new_param(spec.conv_channels + spec.heads, spec.width)
        self.conv_weight = self.new_param(spec.conv_channels, spec.d_conv)  # (channels, d_conv)
        self.o_norm = self.new_norm(spec.head_dim)
        self.w_out = self.new_param(spec.width, spec.value_dim)  # (width, value_dim)

    def allocate_state(self, batch: int, max_context: int) -> State:
        """Constant-size state whatever `max_context`:
        recurrent: (batch, heads, head_dim, head_dim), conv: (batch, conv_channels, d_conv)."""
        s = self.spec
        return {
            "recurrent": self.zeros(batch, s.heads, s.head_dim, s.head_dim),
            "conv": self.zeros(batch, s.conv_channels, s.d_conv),
        }

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch, width) -> (batch, width); updates `state` in place; `pos` unused."""
        s = self.spec
        batch = x.shape[0]
        proj = F.linear(rms_norm(x, self.norm), self.w_in)  # (batch, conv_channels + heads)
        qkv, b = proj.split([s.conv_channels, s.heads], dim=-1)
        q, k, v = self._split_heads(self._conv_step(qkv, state))  # (batch, heads, head_dim) each
        beta = b.float().sigmoid()  # (batch, heads)
        if self._fla is None:
            o, new_state = gated_delta_rule_step(
                l2_normalize(q), l2_normalize(k), v, beta, None, state["recurrent"], self.scale
            )
        else:
            o, new_state = self._fla.delta_rule(
                q.unsqueeze(1),  # (batch, 1, heads, head_dim)
                k.unsqueeze(1),
                v.unsqueeze(1),
                beta.unsqueeze(1),  # (batch, 1, heads)
                scale=self.scale,
                initial_state=state["recurrent"],
                output_final_state=True,
                use_qk_l2norm_in_kernel=True,
            )
        state["recurrent"].copy_(new_state)
        return x + self._output(o.reshape(batch, s.heads, s.head_dim).to(x.dtype))

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width) -> (batch, seq, width); continues from `state` (zeros for a
        fresh one) and leaves it as `seq` decode steps would."""
        s = self.spec
        proj = F.linear(rms_norm(x, self.norm), self.w_in)  # (batch, seq, conv_channels + heads)
        qkv, b = proj.split([s.conv_channels, s.heads], dim=-1)
        qkv = causal_conv(qkv, state["conv"], self.conv_weight)
        q, k, v = self._split_heads(qkv)  # (batch, seq, heads, head_dim) each
        beta = b.float().sigmoid()  # (batch, seq, heads)
        q, k = l2_normalize(q), l2_normalize(k)
        o, final = gated_delta_rule_recurrence(q, k, v, beta, None, state["recurrent"], self.scale)
        state["recurrent"].copy_(final)
        return x + self._output(o.to(x.dtype))
