"""Mamba2 decode step in ONE Triton kernel: conv shift + depthwise conv + silu + SSD state update.

Unlike Mamba-1 (see `mamba_step.py`), Mamba2 takes B, C and dt straight from in_proj, so the conv
over [x | B | C] and the state update fuse into a single launch per step.

Program grid and why it is race-free
------------------------------------
One program per (batch row b, head h, block of BLOCK_P head channels).  A program
- owns its BLOCK_P x channels: it reads their conv state, shifts it, writes it back;
- owns its (BLOCK_P, d_state) slice of ssm_state: read, update, write;
- *reads* the conv state of its group's B and C channels (2 * d_state of them), which every
  program of the group (heads_per_group * head_dim / BLOCK_P "readers") needs too.
Shifting the B/C conv state must happen exactly once, and only after every reader has read the old
state.  Programs of one launch cannot wait on each other safely, so the last reader does it: after
its loads (and a barrier, so every thread of the program is done reading), each program takes a
ticket with an atomic add (acq_rel, gpu scope) on a per-(batch, group) counter; the program that
draws the last ticket knows all readers have read, writes the shifted B/C window, and resets the
counter to zero.  Nobody waits, so no assumption is made about which programs are co-resident.
The counters live in a per-device int32 buffer allocated once (zeroed) and kept for the life of the
process; each launch leaves it zeroed, so launches on one stream (and CUDA-graph replays) reuse it.
Two streams must not run this kernel concurrently on one device (they would share counters).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latprof.kernels.checks import check_same_device, require
from latprof.kernels.conv_window import shifted_conv_window

# The PyTorch reference with the same signature: the one the blocks' torch backend runs.
from latprof.ops.ssm_reference import mamba2_state_update_ref  # noqa: E402, F401

# ----------------------------------------------------------------------------------------------
# kernel


@triton.jit
def _mamba2_state_update_kernel(
    xBC,
    dt,
    conv_state,
    conv_weight,
    conv_bias,
    ssm_state,
    A,
    D,
    dt_bias,
    y,
    tickets,
    stride_xb,
    stride_dtb,
    stride_cb,
    stride_cc,
    stride_wc,
    stride_sb,
    stride_sh,
    stride_sp,
    stride_yb,
    HEADS,
    N_GROUPS,
    HEADS_PER_GROUP,
    N_READERS,
    HEAD_DIM: tl.constexpr,
    D_STATE: tl.constexpr,
    W: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    i_b, i_h, i_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_g = i_h // HEADS_PER_GROUP
    o_p = i_p * BLOCK_P + tl.arange(0, BLOCK_P)
    o_n = tl.arange(0, BLOCK_N)
    o_w = tl.arange(0, BLOCK_W)
    m_p, m_n = o_p < HEAD_DIM, o_n < D_STATE

    # channels of xBC = [x (HEADS * HEAD_DIM) | B (N_GROUPS * D_STATE) | C (N_GROUPS * D_STATE)]
    c_x = i_h * HEAD_DIM + o_p
    c_B = HEADS * HEAD_DIM + i_g * D_STATE + o_n
    c_C = c_B + N_GROUPS * D_STATE

    p_xbc = xBC + i_b * stride_xb
    p_cs = conv_state + i_b.to(tl.int64) * stride_cb
    win_x, b_x = shifted_conv_window(
        p_xbc, p_cs, conv_weight, conv_bias, c_x, m_p, stride_cc, stride_wc, W, BLOCK_W, HAS_BIAS
    )
    win_B, b_B = shifted_conv_window(
        p_xbc, p_cs, conv_weight, conv_bias, c_B, m_n, stride_cc, stride_wc, W, BLOCK_W, HAS_BIAS
    )
    win_C, b_C = shifted_conv_window(
        p_xbc, p_cs, conv_weight, conv_bias, c_C, m_n, stride_cc, stride_wc, W, BLOCK_W, HAS_BIAS
    )

    b_dt = tl.load(dt + i_b * stride_dtb + i_h).to(tl.float32)
    b_dt += tl.load(dt_bias + i_h).to(tl.float32)
    b_dt = tl.where(b_dt <= 20.0, tl.log(1.0 + tl.exp(b_dt)), b_dt)  # softplus, torch's threshold
    b_dA = tl.exp(b_dt * tl.load(A + i_h).to(tl.float32))
    b_D = tl.load(D + i_h).to(tl.float32)

    m_pn = m_p[:, None] & m_n[None, :]
    p_h = ssm_state + i_b.to(tl.int64) * stride_sb + i_h * stride_sh
    p_h += o_p[:, None] * stride_sp + o_n[None, :]
    b_h = tl.load(p_h, mask=m_pn, other=0.0).to(tl.float32)
    b_h = b_h * b_dA + (b_dt * b_x)[:, None] * b_B[None, :]
    tl.store(p_h, b_h.to(ssm_state.dtype.element_ty), mask=m_pn)
    b_y = tl.sum(b_h * b_C[None, :], 1) + b_D * b_x
    tl.store(y + i_b * stride_yb + c_x, b_y.to(y.dtype.element_ty), mask=m_p)

    # every thread of this program has read the old conv state before anyone writes it
    tl.debug_barrier()
    cs_dtype = conv_state.dtype.element_ty
    m_w = o_w[None, :] < W
    tl.store(
        p_cs + c_x[:, None] * stride_cc + o_w[None, :], win_x.to(cs_dtype), mask=m_p[:, None] & m_w
    )
    # the last of the group's readers shifts the shared B/C conv state, then resets the counter
    p_ticket = tickets + i_b * N_GROUPS + i_g
    is_last = tl.atomic_add(p_ticket, 1, sem="acq_rel", scope="gpu") == N_READERS - 1
    m_bc = m_n[:, None] & m_w & is_last
    tl.store(p_cs + c_B[:, None] * stride_cc + o_w[None, :], win_B.to(cs_dtype), mask=m_bc)
    tl.store(p_cs + c_C[:, None] * stride_cc + o_w[None, :], win_C.to(cs_dtype), mask=m_bc)
    tl.store(p_ticket, 0, mask=is_last)


# ----------------------------------------------------------------------------------------------
# launcher

#: device -> int32 counters, one per (batch row, group); zero between launches, never freed (a
#: captured CUDA graph keeps using the address it was captured with)
_TICKETS: dict[torch.device, torch.Tensor] = {}
MAX_TICKETS = 1 << 16


def _tickets(device: torch.device) -> torch.Tensor:
    tickets = _TICKETS.get(device)
    if tickets is None:
        tickets = torch.zeros(MAX_TICKETS, dtype=torch.int32, device=device)  # (MAX_TICKETS,)
        _TICKETS[device] = tickets
    return tickets


def _launch_mamba2_state_update(
    xBC, dt, conv_state, conv_weight, conv_bias, ssm_state, A, D, dt_bias, n_groups
):
    batch, heads, head_dim, d_state = ssm_state.shape
    d_conv = conv_state.shape[2]
    y = torch.empty(batch, heads * head_dim, dtype=xBC.dtype, device=xBC.device)  # (batch, d_inner)
    block_n = triton.next_power_of_2(d_state)
    block_p = min(triton.next_power_of_2(head_dim), max(16, 4096 // block_n))
    p_blocks = triton.cdiv(head_dim, block_p)
    heads_per_group = heads // n_groups
    device = xBC.device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    grid = (batch, heads, p_blocks)
    _mamba2_state_update_kernel[grid](
        xBC,
        dt,
        conv_state,
        conv_weight,
        conv_bias if conv_bias is not None else conv_weight,  # never read without HAS_BIAS
        ssm_state,
        A,
        D,
        dt_bias,
        y,
        _tickets(device),
        stride_xb=xBC.stride(0),
        stride_dtb=dt.stride(0),
        stride_cb=conv_state.stride(0),
        stride_cc=conv_state.stride(1),
        stride_wc=conv_weight.stride(0),
        stride_sb=ssm_state.stride(0),
        stride_sh=ssm_state.stride(1),
        stride_sp=ssm_state.stride(2),
        stride_yb=y.stride(0),
        HEADS=heads,
        N_GROUPS=n_groups,
        HEADS_PER_GROUP=heads_per_group,
        N_READERS=heads_per_group * p_blocks,
        HEAD_DIM=head_dim,
        D_STATE=d_state,
        W=d_conv,
        BLOCK_P=block_p,
        BLOCK_N=block_n,
        BLOCK_W=triton.next_power_of_2(d_conv),
        HAS_BIAS=conv_bias is not None,
        num_warps=4,
    )
    return y


# ----------------------------------------------------------------------------------------------
# public functions


def _check(name: str, t: object, shape: tuple[int, ...], contiguous: bool = False) -> None:
    require(isinstance(t, torch.Tensor), f"{name} must be a tensor, got {type(t).__name__}")
    require(tuple(t.shape) == shape, f"{name} must have shape {shape}, got {tuple(t.shape)}")
    require(t.is_floating_point(), f"{name} must be a floating-point tensor, got {t.dtype}")
    if contiguous:
        require(t.is_contiguous(), f"{name} must be contiguous (it is updated in place)")
    else:
        require(t.stride(-1) == 1, f"{name} needs a contiguous last dimension")


def _check_args(tensors: dict[str, torch.Tensor | None], n_groups, head_dim, d_state) -> None:
    """ValueError unless the arguments of `mamba2_state_update` fit together."""
    for name, v in (("n_groups", n_groups), ("head_dim", head_dim), ("d_state", d_state)):
        require(isinstance(v, int) and v >= 1, f"{name} must be a positive int, got {v!r}")
    dt, conv_state = tensors["dt"], tensors["conv_state"]
    require(isinstance(dt, torch.Tensor) and dt.dim() == 2, "dt must be a (batch, heads) tensor")
    batch, heads = dt.shape
    require(heads % n_groups == 0, f"heads ({heads}) must be a multiple of n_groups ({n_groups})")
    conv_dim = heads * head_dim + 2 * n_groups * d_state
    require(
        isinstance(conv_state, torch.Tensor) and conv_state.dim() == 3 and conv_state.shape[2] >= 1,
        "conv_state must be a (batch, conv_dim, d_conv) tensor",
    )
    d_conv = conv_state.shape[2]
    _check("dt", dt, (batch, heads))
    _check("xBC", tensors["xBC"], (batch, conv_dim))
    _check("conv_state", conv_state, (batch, conv_dim, d_conv), contiguous=True)
    _check("conv_weight", tensors["conv_weight"], (conv_dim, d_conv))
    if tensors["conv_bias"] is not None:
        _check("conv_bias", tensors["conv_bias"], (conv_dim,))
    ssm_shape = (batch, heads, head_dim, d_state)
    _check("ssm_state", tensors["ssm_state"], ssm_shape, contiguous=True)
    for name in ("A", "D", "dt_bias"):
        _check(name, tensors[name], (heads,))
    require(batch * n_groups <= MAX_TICKETS, f"batch * n_groups must be <= {MAX_TICKETS}")
    check_same_device(**tensors)


def mamba2_state_update(
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
    """One Mamba2 decode step (conv + SSD state update) in one kernel; states updated in place.

    xBC: (batch, conv_dim) in_proj output before the conv, channels [x | B | C] with
        conv_dim = heads * head_dim + 2 * n_groups * d_state (B and C: n_groups * d_state each)
    dt: (batch, heads) raw dt, before dt_bias and softplus
    conv_state: (batch, conv_dim, d_conv) contiguous, oldest column first; shifted in place
    conv_weight: (conv_dim, d_conv) depthwise conv weight
    conv_bias: (conv_dim,) or None
    ssm_state: (batch, heads, head_dim, d_state) contiguous, any floating dtype; updated in place
    A: (heads,) negative (-exp(A_log))
    D: (heads,)
    dt_bias: (heads,)
    returns y: (batch, heads * head_dim) in xBC's dtype, y = h_new . C + D * x, where x, B, C are
        silu(conv(xBC)), dt = softplus(dt + dt_bias), h_new = exp(dt*A) h + dt * x (outer) B, and
        head h uses group h // (heads // n_groups).  No gating: the gated RMSNorm follows.
    """
    tensors = dict(
        xBC=xBC,
        dt=dt,
        conv_state=conv_state,
        conv_weight=conv_weight,
        conv_bias=conv_bias,
        ssm_state=ssm_state,
        A=A,
        D=D,
        dt_bias=dt_bias,
    )
    _check_args(tensors, n_groups, head_dim, d_state)
    return _launch_mamba2_state_update(
        xBC, dt, conv_state, conv_weight, conv_bias, ssm_state, A, D, dt_bias, n_groups
    )
