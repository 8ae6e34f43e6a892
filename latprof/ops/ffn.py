"""Feed-forward block: pre-RMSNorm, MLP, residual add.

Activations: "swiglu" is the gated MLP of Shazeer, "GLU Variants Improve Transformer" (arXiv
2002.05202), down(silu(gate(h)) * up(h)) as in Llama; "relu2" is the non-gated squared ReLU of
Primer (So et al., arXiv 2109.08668) used by Nemotron; "gelu" is the non-gated GELU MLP (tanh
approximation, Hendrycks & Gimpel arXiv 1606.08415).  The gated variant keeps gate and up in one
weight, so a decode step is two matmuls whatever the activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.base import Block, State, rms_norm
from latprof.specs.ffn import FFNSpec


class FFNBlock(Block):
    """x + down(act(in(rms_norm(x)))); stateless, so prefill is the same forward over a sequence."""

    spec: FFNSpec

    def __init__(
        self,
        spec: FFNSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        n_in = 2 * spec.ffn_dim if spec.gated else spec.ffn_dim
        self.norm = self.new_norm(spec.width)
        self.w_in = self.new_param(n_in, spec.width)  # (2 ffn_dim if gated else ffn_dim, width)
        self.w_out = self.new_param(spec.width, spec.ffn_dim)  # (width, ffn_dim)
        self.post_norm = self.new_norm(spec.width) if spec.post_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., width) -> (..., width)"""
        hidden = F.linear(rms_norm(x, self.norm), self.w_in)  # (..., n_in)
        activation = self.spec.activation
        if activation == "swiglu":
            gate, up = hidden.chunk(2, dim=-1)  # (..., ffn_dim) each
            hidden = F.silu(gate) * up
        elif activation == "relu2":
            hidden = F.relu(hidden).square()
        elif activation == "gelu":
            hidden = F.gelu(hidden, approximate="tanh")
        else:  # the spec validates activations; this guards a family added there but not here
            raise NotImplementedError(f"ffn: activation {activation!r} has no implementation")
        out = F.linear(hidden, self.w_out)
        if self.post_norm is not None:
            out = rms_norm(out, self.post_norm)
        return x + out

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch, width) -> (batch, width); `state` is empty, `pos` unused."""
        return self.forward(x)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width) -> (batch, seq, width)"""
        return self.forward(x)
