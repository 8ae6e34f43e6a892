"""Gated short-convolution block (LFM2): x + out_proj(C * conv(B * x')), where B, C, x' =
in_proj(rms_norm(x)) split in three, and conv is a depthwise causal conv of d_conv taps with no
bias and no activation (latprof.specs.short_conv).

Backends of the decode step: "torch" (the conv state shifted and summed in float32, the
reference) and "fla" (fla-core's Triton `causal_conv1d_update` with no activation, in place on
the same (batch, width, d_conv) state).  `prefill` is the PyTorch conv over the whole sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.base import Block, State, rms_norm
from latprof.specs.short_conv import ShortConvSpec


def short_conv_step(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """One step of a depthwise causal conv, no bias, no activation.

    x: (batch, channels); conv_state: (batch, channels, d_conv), the last d_conv inputs oldest
    first, shifted left and appended to in place; weight: (channels, d_conv)
    returns (batch, channels) in x's dtype (the sum in float32)
    """
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    return (conv_state.float() * weight.float()).sum(-1).to(x.dtype)


def short_conv(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same conv over a sequence, continuing from `conv_state` (zeros for a fresh one), which
    is left holding the last d_conv inputs.

    x: (batch, seq, channels) -> (batch, seq, channels)
    """
    d_conv = weight.shape[-1]
    history = torch.cat((conv_state.to(x.dtype), x.transpose(1, 2)), dim=-1)  # (b, ch, d+seq)
    y = F.conv1d(history[:, :, 1:].float(), weight.float().unsqueeze(1), groups=weight.shape[0])
    conv_state.copy_(history[:, :, -d_conv:])
    return y.transpose(1, 2).to(x.dtype)


class ShortConvBlock(Block):
    spec: ShortConvSpec

    def __init__(
        self,
        spec: ShortConvSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        w = spec.width
        self.norm = self.new_norm(w)
        self.in_proj = self.new_param(3 * w, w)  # (3 width, width): B, C, x
        self.conv_weight = self.new_param(w, spec.d_conv)  # (width, d_conv)
        self.out_proj = self.new_param(w, w)
        self._fla = None
        if backend == "fla":
            from latprof.ops.fla_compat import fla_kernels

            self._fla = fla_kernels()

    def allocate_state(self, batch: int, max_context: int) -> State:
        return {"conv": self.zeros(batch, self.spec.width, self.spec.d_conv)}

    def _streams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B * x', C) of in_proj(rms_norm(x)); x: (..., width)."""
        b, c, xs = F.linear(rms_norm(x, self.norm), self.in_proj).chunk(3, dim=-1)
        return b * xs, c

    def step(self, x: torch.Tensor, state: State, pos: int | torch.Tensor) -> torch.Tensor:
        """x: (batch, width) -> (batch, width); state["conv"] updated in place; pos unused."""
        bx, c = self._streams(x)
        if self._fla is None:
            y = short_conv_step(bx, state["conv"], self.conv_weight)
        else:
            y, _ = self._fla.conv_update(bx, state["conv"], weight=self.conv_weight)
        return x + F.linear(c * y, self.out_proj)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width) -> (batch, seq, width), from a zero conv state."""
        bx, c = self._streams(x)
        y = short_conv(bx, state["conv"], self.conv_weight)
        return x + F.linear(c * y, self.out_proj)
