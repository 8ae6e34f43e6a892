"""PyTorch references for the Mamba and Mamba2 mixers: causal depthwise conv, selective state
update (one decode step), and full-sequence scans for prefill.

The decode-step functions have exactly the signatures of our Triton kernels in
`latprof.kernels.mamba_step` / `latprof.kernels.mamba2_step` / `latprof.kernels.gated_rms_norm`,
so a block swaps one for the other and a kernel test compares against these.

References:
- Mamba's selective SSM (Gu & Dao 2023, arXiv 2312.00752, Algorithm 2 and Section 3.5):
  A discretised by zero-order hold (dA = exp(dt A)), B by Euler (dB = dt B), dt = softplus(dt +
  dt_bias), y = C h + D x, gated by silu(z).
- Mamba2's SSD (Dao & Gu 2024, arXiv 2405.21060): A a scalar per head, B and C shared by the heads
  of a group; the chunked algorithm of its Section 6 (diagonal blocks quadratic, off-diagonal
  blocks through chunk states passed along a recurrence) for prefill.

All recurrence math runs in float32, whatever the dtype of the inputs and of the stored states;
states are written back in their own dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---- causal depthwise convolution ------------------------------------------------------------


def causal_conv1d_update_ref(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """One decode step of a causal depthwise conv followed by silu; shifts `conv_state` in place.

    x: (batch, dim), the new input column
    conv_state: (batch, dim, d_conv), the last d_conv inputs, oldest first; updated in place so
        that `x` becomes the last column
    weight: (dim, d_conv), weight[:, -1] multiplies the newest input
    bias: (dim,) or None
    returns silu(conv): (batch, dim) in x's dtype (sum in float32)
    """
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    y = (conv_state.float() * weight.float()).sum(-1)  # (batch, dim)
    if bias is not None:
        y = y + bias.float()
    return F.silu(y).to(x.dtype)


def causal_conv1d_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise conv + silu over a whole sequence, starting from zero history.

    x: (batch, seq, dim)
    weight: (dim, d_conv)
    bias: (dim,) or None
    returns (y, conv_state):
        y: (batch, seq, dim) in x's dtype (conv in float32);
        conv_state: (batch, dim, d_conv) in x's dtype, the last d_conv inputs (zeros where the
        sequence is shorter), exactly what `seq` calls of `causal_conv1d_update_ref` leave
    """
    batch, seq, dim = x.shape
    d_conv = weight.shape[1]
    history = F.pad(x.transpose(1, 2), (d_conv - 1, 0))  # (batch, dim, d_conv - 1 + seq)
    y = F.conv1d(
        history.float(),
        weight.float().unsqueeze(1),  # (dim, 1, d_conv)
        None if bias is None else bias.float(),
        groups=dim,
    )  # (batch, dim, seq)
    conv_state = history[:, :, -d_conv:].contiguous()  # (batch, dim, d_conv)
    return F.silu(y).transpose(1, 2).to(x.dtype), conv_state


# ---- Mamba (selective SSM, one state matrix per channel) ---------------------------------------


def selective_state_update_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor,
) -> torch.Tensor:
    """One step of Mamba's selective SSM; updates `state` in place.

    state: (batch, dim, d_state), stored in its own dtype, updated in float32
    x: (batch, dim)
    dt: (batch, dim), before bias and softplus
    A: (dim, d_state), already -exp(A_log)
    B, C: (batch, d_state)
    D: (dim,)
    z: (batch, dim) or None (then no gate)
    dt_bias: (dim,)
    returns y = (C h + D x) * silu(z): (batch, dim) in x's dtype

    h <- exp(dt A) h + dt B x, with dt = softplus(dt + dt_bias).
    """
    x32 = x.float()
    dt = F.softplus(dt.float() + dt_bias.float())  # (batch, dim)
    decay = torch.exp(dt.unsqueeze(-1) * A.float())  # (batch, dim, d_state)
    inject = (dt * x32).unsqueeze(-1) * B.float().unsqueeze(1)  # (batch, dim, d_state)
    h = state.float() * decay + inject  # (batch, dim, d_state)
    state.copy_(h)
    y = (h * C.float().unsqueeze(1)).sum(-1) + D.float() * x32  # (batch, dim)
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(x.dtype)


def selective_scan_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective scan over a sequence from a zero state, one step at a time.

    x, dt: (batch, seq, dim), dt before bias and softplus
    A: (dim, d_state)
    B, C: (batch, seq, d_state)
    D, dt_bias: (dim,)
    z: (batch, seq, dim) or None
    returns (y, state): y (batch, seq, dim) in x's dtype, the final state (batch, dim, d_state)
    in float32
    """
    batch, seq, dim = x.shape
    state = torch.zeros(batch, dim, A.shape[1], device=x.device, dtype=torch.float32)
    ys = []
    for t in range(seq):
        zt = None if z is None else z[:, t]
        ys.append(
            selective_state_update_ref(
                state, x[:, t].float(), dt[:, t], A, B[:, t], C[:, t], D, zt, dt_bias
            )
        )
    return torch.stack(ys, dim=1).to(x.dtype), state


# ---- Mamba2 (SSD: scalar decay per head, B and C per group) -----------------------------------


def ssd_state_update_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
) -> torch.Tensor:
    """One step of Mamba2's SSM; updates `state` in place.

    state: (batch, heads, head_dim, d_state), stored in its own dtype, updated in float32
    x: (batch, heads, head_dim)
    dt: (batch, heads), before bias and softplus
    A: (heads,), already -exp(A_log)
    B, C: (batch, n_groups, d_state); head h reads group h // (heads / n_groups)
    D, dt_bias: (heads,)
    returns y = C h + D x: (batch, heads, head_dim) in x's dtype
    """
    heads = x.shape[1]
    per_group = heads // B.shape[1]
    B = B.float().repeat_interleave(per_group, dim=1)  # (batch, heads, d_state)
    C = C.float().repeat_interleave(per_group, dim=1)  # (batch, heads, d_state)
    x32 = x.float()
    dt = F.softplus(dt.float() + dt_bias.float())  # (batch, heads)
    decay = torch.exp(dt * A.float())[:, :, None, None]  # (batch, heads, 1, 1)
    inject = (dt.unsqueeze(-1) * x32).unsqueeze(-1) * B.unsqueeze(2)  # (b, heads, hd, d_state)
    h = state.float() * decay + inject  # (batch, heads, head_dim, d_state)
    state.copy_(h)
    y = (h * C.unsqueeze(2)).sum(-1) + D.float()[:, None] * x32  # (batch, heads, head_dim)
    return y.to(x.dtype)


def split_xbc(
    xbc: torch.Tensor, *, n_groups: int, head_dim: int, d_state: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split Mamba2's conv output into x, B, C.

    xbc: (..., d_inner + 2 * n_groups * d_state)
    returns x (..., heads, head_dim), B and C (..., n_groups, d_state), views of `xbc`
    """
    group_dim = n_groups * d_state
    d_inner = xbc.shape[-1] - 2 * group_dim
    x, B, C = xbc.split([d_inner, group_dim, group_dim], dim=-1)
    lead = xbc.shape[:-1]
    return (
        x.unflatten(-1, (d_inner // head_dim, head_dim)),
        B.reshape(*lead, n_groups, d_state),
        C.reshape(*lead, n_groups, d_state),
    )


def mamba2_state_update_ref(
    xBC: torch.Tensor,
    dt: torch.Tensor,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    ssm_state: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    *,
    n_groups: int,
    head_dim: int,
    d_state: int,
) -> torch.Tensor:
    """Mamba2's decode step from the in-projection's xBC and dt up to the gated norm.

    xBC: (batch, conv_dim), before the conv; conv_dim = heads * head_dim + 2 * n_groups * d_state
    dt: (batch, heads), before bias and softplus
    conv_state: (batch, conv_dim, d_conv), shifted in place
    conv_weight: (conv_dim, d_conv)
    conv_bias: (conv_dim,) or None
    ssm_state: (batch, heads, head_dim, d_state), updated in place
    A, D, dt_bias: (heads,), A already -exp(A_log)
    returns y = C h + D x: (batch, heads * head_dim) in xBC's dtype
    """
    # the conv output stays in float32 into the SSM update, as in a fused kernel
    xbc = causal_conv1d_update_ref(xBC.float(), conv_state, conv_weight, conv_bias)
    x, B, C = split_xbc(xbc, n_groups=n_groups, head_dim=head_dim, d_state=d_state)
    y = ssd_state_update_ref(ssm_state, x, dt, A, B, C, D, dt_bias)  # (batch, heads, head_dim)
    return y.flatten(1).to(xBC.dtype)


def ssd_scan_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba2's SSM over a sequence from a zero state, one step at a time (the slow, plain form).

    x: (batch, seq, heads, head_dim)
    dt: (batch, seq, heads), before bias and softplus
    A, D, dt_bias: (heads,)
    B, C: (batch, seq, n_groups, d_state)
    returns (y, state): y (batch, seq, heads, head_dim) in x's dtype, the final state
    (batch, heads, head_dim, d_state) in float32
    """
    batch, seq, heads, head_dim = x.shape
    state = torch.zeros(batch, heads, head_dim, B.shape[-1], device=x.device, dtype=torch.float32)
    ys = [
        ssd_state_update_ref(state, x[:, t].float(), dt[:, t], A, B[:, t], C[:, t], D, dt_bias)
        for t in range(seq)
    ]
    return torch.stack(ys, dim=1).to(x.dtype), state


def ssd_chunked_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba2's SSM over a sequence from a zero state by the chunked SSD algorithm.

    Same arguments and results as `ssd_scan_ref`.  The sequence is cut into chunks of
    `chunk_size` (the last one zero-padded: dt = 0 there, so padding neither decays nor feeds
    the state).  Within a chunk, outputs come from the masked quadratic form
    y_i = sum_{j <= i} (C_i . B_j) exp(a_j+1 + ... + a_i) dt_j x_j with a = dt A; across chunks,
    each chunk's final state is passed on by a recurrence over chunks and read by the next chunk's
    outputs through C_i exp(a_1 + ... + a_i).
    """
    batch, seq, heads, head_dim = x.shape
    n_groups, d_state = B.shape[-2:]
    per_group = heads // n_groups
    pad = (-seq) % chunk_size
    n_chunks = (seq + pad) // chunk_size

    def chunked(t: torch.Tensor) -> torch.Tensor:  # (batch, seq, *rest) -> (b, chunks, L, *rest)
        t = F.pad(t.float(), (0, 0) * (t.dim() - 2) + (0, pad))
        return t.unflatten(1, (n_chunks, chunk_size))

    dt = F.softplus(dt.float() + dt_bias.float())  # (batch, seq, heads)
    xc = chunked(x)  # (batch, chunks, L, heads, head_dim)
    dtc = chunked(dt)  # (batch, chunks, L, heads); zero in the padding
    Bc = chunked(B).repeat_interleave(per_group, dim=3)  # (batch, chunks, L, heads, d_state)
    Cc = chunked(C).repeat_interleave(per_group, dim=3)  # (batch, chunks, L, heads, d_state)
    log_decay = (dtc * A.float()).cumsum(dim=2)  # (batch, chunks, L, heads), a_1 + ... + a_i
    dtx = dtc.unsqueeze(-1) * xc  # (batch, chunks, L, heads, head_dim)

    # diagonal blocks: decay from j to i is exp(cum_i - cum_j) for j <= i, zero above
    seg = log_decay.unsqueeze(3) - log_decay.unsqueeze(2)  # (batch, chunks, L_i, L_j, heads)
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    seg = torch.where(causal[:, :, None], seg, float("-inf"))
    scores = torch.einsum("bcihn,bcjhn->bcijh", Cc, Bc) * seg.exp()  # (b, chunks, L, L, heads)
    y = torch.einsum("bcijh,bcjhp->bcihp", scores, dtx)  # (batch, chunks, L, heads, head_dim)

    # each chunk's own contribution to the state at its end
    to_end = (log_decay[:, :, -1:] - log_decay).exp()  # (batch, chunks, L, heads)
    chunk_states = torch.einsum("bclh,bclhn,bclhp->bchpn", to_end, Bc, dtx)  # (b, c, h, p, n)

    # pass states from chunk to chunk; chunk c reads the state left by chunks < c
    chunk_decay = log_decay[:, :, -1].exp()  # (batch, chunks, heads)
    state = torch.zeros(batch, heads, head_dim, d_state, device=x.device, dtype=torch.float32)
    entering = []
    for c in range(n_chunks):
        entering.append(state)
        state = state * chunk_decay[:, c, :, None, None] + chunk_states[:, c]
    entering = torch.stack(entering, dim=1)  # (batch, chunks, heads, head_dim, d_state)
    y = y + torch.einsum("bclhn,bchpn,bclh->bclhp", Cc, entering, log_decay.exp())

    y = y.flatten(1, 2)[:, :seq] + D.float()[:, None] * x.float()  # (batch, seq, heads, head_dim)
    return y.to(x.dtype), state


# ---- gated RMSNorm (Mamba2's RMSNormGated, norm after the gate) --------------------------------


def gated_rms_norm_ref(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, *, group_size: int, eps: float = 1e-6
) -> torch.Tensor:
    """RMSNorm of x * silu(z) over groups of `group_size` channels, times `weight`.

    x, z: (..., dim), dim a multiple of group_size
    weight: (dim,)
    returns (..., dim) in x's dtype, computed in float32
    """
    g = x.float() * F.silu(z.float())  # (..., dim)
    groups = g.unflatten(-1, (-1, group_size))  # (..., dim // group_size, group_size)
    normed = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + eps)
    return (normed.flatten(-2) * weight.float()).to(x.dtype)
