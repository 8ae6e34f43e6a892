"""Mamba block: pre-RMSNorm, Mamba mixer (selective SSM), residual add.

Mixer (Gu & Dao 2023, arXiv 2312.00752, Figure 3 and Algorithm 2; mamba-ssm's `Mamba` module):
in_proj -> (x, z); x <- silu(causal depthwise conv(x)); x_proj(x) -> (dt_low, B, C);
dt = softplus(dt_proj(dt_low)) (dt_proj's bias is the dt bias); A = -exp(A_log);
h <- exp(dt A) h + dt B x; y = (C h + D x) * silu(z); out_proj.

Backends of the decode step (`prefill` always runs the PyTorch reference):
- "torch": `latprof.ops.ssm_reference` (conv and SSM step in float32);
- "mamba_ssm": mamba-ssm's Triton `selective_state_update` (CUDA only), the conv step in PyTorch;
- "triton": our kernels `latprof.kernels.mamba_step.{causal_conv1d_update, selective_state_update}`.

State: "conv" (batch, d_inner, d_conv) and "ssm" (batch, d_inner, d_state), both stored in the
block's dtype; the recurrence itself is computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from latprof.ops import mamba_ssm_compat
from latprof.ops.base import Block, State, rms_norm
from latprof.ops.ssm_init import init_a_log, init_dt_bias
from latprof.ops.ssm_reference import (
    causal_conv1d_ref,
    causal_conv1d_update_ref,
    selective_scan_ref,
    selective_state_update_ref,
)
from latprof.specs.mamba import MambaSpec


class MambaBlock(Block):
    def __init__(
        self,
        spec: MambaSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        width, d_inner, d_state = spec.width, spec.d_inner, spec.d_state
        self.norm_weight = self.new_norm(width)
        self.in_proj_weight = self.new_param(2 * d_inner, width)
        self.conv_weight = self.new_param(d_inner, spec.d_conv)
        self.conv_bias = self.new_param(d_inner, fan_in=spec.d_conv)
        self.x_proj_weight = self.new_param(spec.dt_rank + 2 * d_state, d_inner)
        self.dt_proj_weight = self.new_param(d_inner, spec.dt_rank)
        if spec.dt_norms:  # Jamba: RMSNorm on dt, B and C
            self.dt_norm = self.new_norm(spec.dt_rank)
            self.b_norm = self.new_norm(d_state)
            self.c_norm = self.new_norm(d_state)
        self.dt_proj_bias = self.param_from(init_dt_bias(d_inner, self.generator))
        self.A_log = self.param_from(init_a_log(d_inner, d_state, generator=self.generator))
        self.D = self.param_from(1.0 + 0.1 * torch.randn(d_inner, generator=self.generator))
        self.out_proj_weight = self.new_param(width, d_inner)
        self._step_fns: tuple[Callable, Callable] | None = None

    def allocate_state(self, batch: int, max_context: int) -> State:
        """Conv and SSM state in the block's dtype; `max_context` does not matter."""
        spec = self.spec
        return {
            "conv": self.zeros(batch, spec.d_inner, spec.d_conv),  # (batch, d_inner, d_conv)
            "ssm": self.zeros(batch, spec.d_inner, spec.d_state),  # (batch, d_inner, d_state)
        }

    def step_fns(self) -> tuple[Callable, Callable]:
        """(conv update, SSM update) of this block's backend, with the reference signatures."""
        if self._step_fns is None:
            if self.backend == "torch":
                self._step_fns = (causal_conv1d_update_ref, selective_state_update_ref)
            elif self.backend == "mamba_ssm":
                self._step_fns = (causal_conv1d_update_ref, mamba_ssm_compat.selective_state_update)
            else:
                from latprof.kernels import mamba_step

                self._step_fns = (
                    mamba_step.causal_conv1d_update,
                    mamba_step.selective_state_update,
                )
        return self._step_fns

    def split_dt_b_c(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_proj then dt_proj (without its bias): x (..., d_inner) -> dt (..., d_inner) before
        bias and softplus, B and C (..., d_state)."""
        spec = self.spec
        dt_low, B, C = F.linear(x, self.x_proj_weight).split(
            [spec.dt_rank, spec.d_state, spec.d_state], dim=-1
        )
        if spec.dt_norms:
            dt_low = rms_norm(dt_low, self.dt_norm)
            B, C = rms_norm(B, self.b_norm), rms_norm(C, self.c_norm)
        return F.linear(dt_low, self.dt_proj_weight), B, C

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """One decode step.  x: (batch, width) -> (batch, width); state updated in place."""
        conv_update, ssm_update = self.step_fns()
        xs, z = F.linear(rms_norm(x, self.norm_weight), self.in_proj_weight).chunk(2, dim=-1)
        xs = conv_update(xs, state["conv"], self.conv_weight, self.conv_bias)  # (batch, d_inner)
        dt, B, C = self.split_dt_b_c(xs)
        A = -torch.exp(self.A_log.float())  # (d_inner, d_state)
        y = ssm_update(state["ssm"], xs, dt, A, B, C, self.D, z, self.dt_proj_bias)
        return x + F.linear(y, self.out_proj_weight)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """Full-sequence forward from an empty state.  x: (batch, seq, width) -> same shape;
        `state` is overwritten with what `seq` decode steps from zeros would leave."""
        xs, z = F.linear(rms_norm(x, self.norm_weight), self.in_proj_weight).chunk(2, dim=-1)
        xs, conv_state = causal_conv1d_ref(xs, self.conv_weight, self.conv_bias)
        dt, B, C = self.split_dt_b_c(xs)
        A = -torch.exp(self.A_log.float())  # (d_inner, d_state)
        y, ssm_state = selective_scan_ref(xs, dt, A, B, C, self.D, z, self.dt_proj_bias)
        state["conv"].copy_(conv_state)
        state["ssm"].copy_(ssm_state)
        return x + F.linear(y, self.out_proj_weight)
