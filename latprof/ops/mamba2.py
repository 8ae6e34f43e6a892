"""Mamba2 block: pre-RMSNorm, Mamba2 mixer (SSD) with gated RMSNorm, residual add.

Mixer (Dao & Gu 2024, arXiv 2405.21060, Section 7; mamba-ssm's `Mamba2` module, no MLP branch):
in_proj -> (z (d_inner), xBC (conv_dim), dt (heads)); xBC <- silu(causal depthwise conv(xBC));
split xBC into x (heads, head_dim), B and C (n_groups, d_state); dt = softplus(dt + dt_bias);
A = -exp(A_log) a scalar per head; h <- exp(dt A) h + dt x B^T; y = h C + D x;
y = rms_norm(y * silu(z)) * weight over groups of d_inner / n_groups channels; out_proj.

Backends of the decode step (`prefill` always runs the PyTorch reference, chunked SSD):
- "torch": `latprof.ops.ssm_reference` (conv, SSM step and gated norm in float32);
- "mamba_ssm": mamba-ssm's Triton `selective_state_update` and `RMSNormGated` kernels (CUDA
  only), the conv step in PyTorch, as `Mamba2.step` runs without causal-conv1d;
- "triton": our kernels `latprof.kernels.mamba2_step.mamba2_state_update` (conv + SSM fused) and
  `latprof.kernels.gated_rms_norm.gated_rms_norm`.

State: "conv" (batch, conv_dim, d_conv) and "ssm" (batch, heads, head_dim, d_state), both stored
in the block's dtype; the recurrence itself is computed in float32.
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
    gated_rms_norm_ref,
    mamba2_state_update_ref,
    split_xbc,
    ssd_chunked_ref,
)
from latprof.specs.mamba2 import Mamba2Spec

GATED_NORM_EPS = 1e-5  # Mamba2's RMSNormGated
CHUNK_SIZE = 64  # chunk length of the chunked SSD in prefill


class Mamba2Block(Block):
    def __init__(
        self,
        spec: Mamba2Spec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        width, d_inner, heads = spec.width, spec.d_inner, spec.heads
        self.norm_weight = self.new_norm(width) if spec.pre_norm else None
        self.in_proj_weight = self.new_param(d_inner + spec.conv_dim + heads, width)
        self.conv_weight = self.new_param(spec.conv_dim, spec.d_conv)
        self.conv_bias = self.new_param(spec.conv_dim, fan_in=spec.d_conv)
        self.dt_bias = self.param_from(init_dt_bias(heads, self.generator))
        self.A_log = self.param_from(init_a_log(heads, generator=self.generator))
        self.D = self.param_from(1.0 + 0.1 * torch.randn(heads, generator=self.generator))
        self.gated_norm_weight = self.new_norm(d_inner) if spec.gated_norm else None
        self.out_proj_weight = self.new_param(width, d_inner)
        self._step_fns: tuple[Callable, Callable] | None = None

    def allocate_state(self, batch: int, max_context: int) -> State:
        """Conv and SSM state in the block's dtype; `max_context` does not matter."""
        spec = self.spec
        return {
            "conv": self.zeros(batch, spec.conv_dim, spec.d_conv),  # (batch, conv_dim, d_conv)
            # (batch, heads, head_dim, d_state)
            "ssm": self.zeros(batch, spec.heads, spec.head_dim, spec.d_state),
        }

    def step_fns(self) -> tuple[Callable, Callable]:
        """(conv + SSM update, gated norm) of this block's backend, with the reference
        signatures."""
        if self._step_fns is None:
            if self.backend == "torch":
                self._step_fns = (mamba2_state_update_ref, gated_rms_norm_ref)
            elif self.backend == "mamba_ssm":
                self._step_fns = (
                    mamba_ssm_compat.mamba2_state_update,
                    mamba_ssm_compat.gated_rms_norm,
                )
            else:
                from latprof.kernels.gated_rms_norm import gated_rms_norm
                from latprof.kernels.mamba2_step import mamba2_state_update

                self._step_fns = (mamba2_state_update, gated_rms_norm)
        return self._step_fns

    def split_in_proj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-norm and in_proj: x (..., width) -> z (..., d_inner), xBC (..., conv_dim),
        dt (..., heads)."""
        spec = self.spec
        h = rms_norm(x, self.norm_weight) if self.norm_weight is not None else x
        zxbcdt = F.linear(h, self.in_proj_weight)
        return zxbcdt.split([spec.d_inner, spec.conv_dim, spec.heads], dim=-1)

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """One decode step.  x: (batch, width) -> (batch, width); state updated in place."""
        spec = self.spec
        state_update, gated_norm = self.step_fns()
        z, xbc, dt = self.split_in_proj(x)
        A = -torch.exp(self.A_log.float())  # (heads,)
        y = state_update(
            xbc,
            dt,
            state["conv"],
            self.conv_weight,
            self.conv_bias,
            state["ssm"],
            A,
            self.D,
            self.dt_bias,
            n_groups=spec.n_groups,
            head_dim=spec.head_dim,
            d_state=spec.d_state,
        )  # (batch, d_inner)
        if self.gated_norm_weight is None:  # no norm: the gate alone (Falcon-H1)
            y = (y.float() * F.silu(z.float())).to(y.dtype)
        else:
            y = gated_norm(
                y,
                z,
                self.gated_norm_weight,
                group_size=spec.d_inner // spec.n_groups,
                eps=GATED_NORM_EPS,
            )
        return x + F.linear(y, self.out_proj_weight)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """Full-sequence forward from an empty state.  x: (batch, seq, width) -> same shape;
        `state` is overwritten with what `seq` decode steps from zeros would leave."""
        spec = self.spec
        z, xbc, dt = self.split_in_proj(x)
        xbc, conv_state = causal_conv1d_ref(xbc, self.conv_weight, self.conv_bias)
        xs, B, C = split_xbc(
            xbc, n_groups=spec.n_groups, head_dim=spec.head_dim, d_state=spec.d_state
        )
        A = -torch.exp(self.A_log.float())  # (heads,)
        y, ssm_state = ssd_chunked_ref(xs, dt, A, B, C, self.D, self.dt_bias, CHUNK_SIZE)
        if self.gated_norm_weight is None:
            y = (y.flatten(2).float() * F.silu(z.float())).to(z.dtype)
        else:
            y = gated_rms_norm_ref(
                y.flatten(2),
                z,
                self.gated_norm_weight,
                group_size=spec.d_inner // spec.n_groups,
                eps=GATED_NORM_EPS,
            )  # (batch, seq, d_inner)
        state["conv"].copy_(conv_state)
        state["ssm"].copy_(ssm_state)
        return x + F.linear(y, self.out_proj_weight)
