"""PyTorch pieces shared by the linear-attention blocks (DeltaNet, Gated DeltaNet, GLA, KDA):
the short causal convolution (one decode step and a whole sequence), L2 normalisation, the gated
RMSNorm of the output, the recurrences themselves, one token at a time, and
`LinearAttentionBlock`, the base of the blocks (backends, pre-norm, conv step, output).

These are the references the fla kernels are tested against.  Every recurrence keeps its state
and arithmetic in float32 whatever the dtype of its inputs; a block stores the state in its own
dtype between steps and casts on the way in and out.

State layout follows fla: the recurrent state of one head is `(head_k_dim, head_v_dim)` (keys
first), so that `o = q @ S`; a conv state holds the last `d_conv` inputs of every channel,
oldest first, `(batch, channels, d_conv)` (fla's `causal_conv1d_update` cache layout).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from latprof.ops.base import Block, State
from latprof.ops.fla_compat import fla_kernels
from latprof.ops.ssm_reference import causal_conv1d_update_ref
from latprof.specs import OpSpec

#: added under the square root of every L2 norm, as fla does (`l2norm_fwd`, in-kernel L2 norm)
L2_EPS = 1e-6
#: activations of the output gate, by the names fla's `FusedRMSNormGated` uses: swish for
#: DeltaNet-style blocks, sigmoid for KDA (transformers' `KimiLinearRMSNormGated`)
GATE_ACTIVATIONS = {"silu": F.silu, "sigmoid": torch.sigmoid}


# ---- short causal convolution --------------------------------------------------------------
def causal_conv_step(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """One decode step of a depthwise causal conv (no bias) followed by SiLU.

    x: (batch, channels) the new input
    conv_state: (batch, channels, d_conv) the last d_conv inputs, oldest first; shifted left by
        one and `x` appended, in place
    weight: (channels, d_conv)
    returns (batch, channels) in x's dtype; the products are summed in float32.
    """
    return causal_conv1d_update_ref(x, conv_state, weight, None)


def causal_conv(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same conv over a whole sequence, continuing from `conv_state`.

    x: (batch, seq, channels)
    conv_state: (batch, channels, d_conv) inputs before this sequence (zeros for a fresh one);
        left holding the last d_conv inputs, exactly as `seq` calls of `causal_conv_step` would
    weight: (channels, d_conv)
    returns (batch, seq, channels) in x's dtype, computed in float32.
    """
    d_conv = weight.shape[-1]
    history = torch.cat((conv_state.to(x.dtype), x.transpose(1, 2)), dim=-1)  # (b, ch, d_conv+seq)
    y = F.conv1d(history[:, :, 1:].float(), weight.float().unsqueeze(1), groups=weight.shape[0])
    conv_state.copy_(history[:, :, -d_conv:])
    return F.silu(y).transpose(1, 2).to(x.dtype)  # (batch, seq, channels)


# ---- normalisations ------------------------------------------------------------------------
def l2_normalize(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, in float32 (fla's form of the L2 norm).

    x: (..., dim) -> float32 (..., dim)
    """
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + eps)


def head_rms_norm(
    o: torch.Tensor,
    weight: torch.Tensor,
    gate: torch.Tensor | None = None,
    eps: float = 1e-6,
    activation: str = "silu",
) -> torch.Tensor:
    """RMSNorm of every head's output (one weight shared by all heads), optionally times
    activation(gate): fla's `RMSNorm` / `FusedRMSNormGated` (swish or sigmoid activation).

    o: (..., heads, head_v_dim)
    weight: (head_v_dim,)
    gate: (..., heads, head_v_dim) or None
    activation: a key of GATE_ACTIVATIONS
    returns o's shape and dtype; computed in float32.
    """
    o32 = o.float()
    y = o32 * torch.rsqrt(o32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    if gate is not None:
        y = y * GATE_ACTIVATIONS[activation](gate.float())
    return y.to(o.dtype)


# ---- recurrences ---------------------------------------------------------------------------
def gated_delta_rule_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    state: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the (gated) delta rule, float32.

    DeltaNet (Yang et al., "Parallelizing Linear Transformers with the Delta Rule over Sequence
    Length", NeurIPS 2024, arXiv 2406.06484, eq. 2 with S stored transposed):
        S <- S + k^T (beta * (v - k S)),  o = scale * q S.
    Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025, arXiv 2412.06464, eq. 10) first decays
    the whole state: S <- exp(g) S.

    q, k: (batch, heads, head_k_dim), already L2-normalised by the caller
    v: (batch, heads, head_v_dim)
    beta: (batch, heads) writing strength in (0, 1)
    g: (batch, heads) log decay (<= 0), or None for plain DeltaNet
    state: (batch, heads, head_k_dim, head_v_dim) any dtype, read as float32, not modified
    returns o: (batch, heads, head_v_dim) and the new state, both float32.
    """
    q, k, v, beta, state = q.float(), k.float(), v.float(), beta.float(), state.float()
    if g is not None:
        state = state * g.float().exp()[..., None, None]
    recalled = torch.einsum("bhk,bhkv->bhv", k, state)  # (batch, heads, head_v_dim)
    delta = beta[..., None] * (v - recalled)
    state = state + k[..., :, None] * delta[..., None, :]
    o = torch.einsum("bhk,bhkv->bhv", q * scale, state)
    return o, state


def gated_delta_rule_recurrence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    state: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`gated_delta_rule_step` over a sequence, token by token.

    q, k: (batch, seq, heads, head_k_dim), already L2-normalised
    v: (batch, seq, heads, head_v_dim)
    beta: (batch, seq, heads)
    g: (batch, seq, heads) log decay, or None
    state: (batch, heads, head_k_dim, head_v_dim) initial state (any dtype), not modified
    returns o: (batch, seq, heads, head_v_dim) and the final state, both float32.
    """
    state = state.float()
    outputs = []
    for t in range(q.shape[1]):
        g_t = None if g is None else g[:, t]
        o_t, state = gated_delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], g_t, state, scale)
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), state


def gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    state: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of Gated Linear Attention, float32.

    Yang, Wang, Shen, Panda & Kim, "Gated Linear Attention Transformers with Hardware-Efficient
    Training", ICML 2024, arXiv 2312.06635, section 4.1:
        S <- diag(exp(gk)) S + k^T v,  o = scale * q S.

    q, k: (batch, heads, head_k_dim)
    v: (batch, heads, head_v_dim)
    gk: (batch, heads, head_k_dim) log decay of each key channel (<= 0)
    state: (batch, heads, head_k_dim, head_v_dim) any dtype, read as float32, not modified
    returns o: (batch, heads, head_v_dim) and the new state, both float32.
    """
    q, k, v, state = q.float(), k.float(), v.float(), state.float()
    state = state * gk.float().exp()[..., :, None] + k[..., :, None] * v[..., None, :]
    o = torch.einsum("bhk,bhkv->bhv", q * scale, state)
    return o, state


def gla_recurrence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    state: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`gla_step` over a sequence, token by token.

    q, k, gk: (batch, seq, heads, head_k_dim)
    v: (batch, seq, heads, head_v_dim)
    state: (batch, heads, head_k_dim, head_v_dim) initial state (any dtype), not modified
    returns o: (batch, seq, heads, head_v_dim) and the final state, both float32.
    """
    state = state.float()
    outputs = []
    for t in range(q.shape[1]):
        o_t, state = gla_step(q[:, t], k[:, t], v[:, t], gk[:, t], state, scale)
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), state


# ---- the blocks' common part ---------------------------------------------------------------
class LinearAttentionBlock(Block):
    """Base of the DeltaNet, Gated DeltaNet, GLA and KDA blocks: the "torch" and "fla" backends,
    the pre-RMSNorm weight `norm`, the query scale head_dim^-0.5 (as fla's kernels apply by
    default), the short-conv decode step on either backend, and the output (RMSNorm per head,
    optionally times `gate_activation`(gate), then the out-projection `w_out`).  A subclass sets
    `o_norm` and `w_out`.

    Backends of the decode step: "torch" runs the references of this module; "fla" runs fla's
    `causal_conv1d_update` and fused recurrent kernels (`latprof.ops.fla_compat`), the final state
    copied back into the static state tensor.  `prefill` always runs the PyTorch path.

    The recurrent state is stored in the block's dtype; the recurrence reads it into float32, runs
    in float32 and writes it back rounded to the block's dtype after every decode step (after the
    whole sequence in `prefill`).
    """

    #: the output gate's activation (a key of GATE_ACTIVATIONS)
    gate_activation: ClassVar[str] = "silu"

    def __init__(self, spec: OpSpec, **block_args: Any) -> None:
        """`block_args`: those of `Block` (backend, device, dtype, seed)."""
        super().__init__(spec, **block_args)
        self.scale = spec.head_dim**-0.5
        self.norm = self.new_norm(spec.width)
        self._fla = fla_kernels() if self.backend == "fla" else None

    def _conv_step(self, qkv: torch.Tensor, state: State) -> torch.Tensor:
        """One step of the short conv + SiLU on this block's backend (DeltaNet, Gated DeltaNet,
        KDA).

        qkv: (batch, conv_channels) the projected q, k and v
        state: the block's state; its "conv" (batch, conv_channels, d_conv) is updated in place
        returns (batch, conv_channels) in qkv's dtype
        """
        if self._fla is None:
            return causal_conv_step(qkv, state["conv"], self.conv_weight)
        out, _ = self._fla.conv_update(
            qkv, state["conv"], weight=self.conv_weight, activation="silu"
        )
        return out

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The conv output of DeltaNet, Gated DeltaNet and KDA, by head.

        qkv: (..., 2 key_dim + value_dim) -> q, k: (..., heads, head_dim), v: (..., heads,
        value_dim / heads), views of `qkv`."""
        s = self.spec
        q, k, v = (
            t.unflatten(-1, (s.heads, -1))
            for t in qkv.split([s.key_dim, s.key_dim, s.value_dim], dim=-1)
        )
        return q, k, v

    def _output(self, o: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """o: (..., heads, head_v_dim), gate: (..., heads * head_v_dim) or None -> (..., width):
        per-head RMSNorm (times gate_activation(gate) where given), out-projection."""
        if gate is not None:
            gate = gate.unflatten(-1, (o.shape[-2], -1))  # (..., heads, head_v_dim)
        o = head_rms_norm(o, self.o_norm, gate, activation=self.gate_activation)
        return F.linear(o.flatten(-2), self.w_out)
