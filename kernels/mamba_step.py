"""Mamba-1 decode step: causal conv1d update and selective state update, as Triton kernels.

A Mamba-1 mixer decodes one token as in_proj -> conv shift + depthwise conv + silu -> x_proj (a
matmul producing dt, B, C from the conv output) -> dt_proj -> selective state update -> out_proj.
Because x_proj sits between the conv and the SSM update, the two cannot be fused into one kernel
the way Mamba2's can (`mamba2_step.py`): the SSM update needs B and C, which are only known after a
matmul over *all* conv output channels.  So this module holds two kernels, each beside its PyTorch
reference with the same signature:

- `causal_conv1d_update`: shift the conv state by one column and apply the depthwise conv + silu;
- `selective_state_update`: h = exp(dt*A) h + dt*B*x, y = (C.h + D*x) * silu(z).

The conv-window helper `shifted_conv_window` (`conv_window.py`) is shared with the Mamba2 kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latprof.kernels.checks import check_same_device, require
from latprof.kernels.conv_window import shifted_conv_window

# The PyTorch reference with the same signature: the one the blocks' torch backend runs.
from latprof.ops.ssm_reference import causal_conv1d_update_ref, selective_state_update_ref  # noqa: E402, F401

# ----------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _causal_conv1d_update_kernel(
    x,
    conv_state,
    weight,
    bias,
    y,
    stride_xb,
    stride_sb,
    stride_sc,
    stride_wc,
    stride_yb,
    DIM,
    W: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    i_b, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    p_state = conv_state + i_b.to(tl.int64) * stride_sb
    b_win, b_y = shifted_conv_window(
        x + i_b * stride_xb,
        p_state,
        weight,
        bias,
        o_d,
        m_d,
        stride_sc,
        stride_wc,
        W,
        BLOCK_W,
        HAS_BIAS,
    )
    tl.store(y + i_b * stride_yb + o_d, b_y.to(y.dtype.element_ty), mask=m_d)
    # a thread may store a column another thread of this program still has to read: wait
    tl.debug_barrier()
    o_w = tl.arange(0, BLOCK_W)
    p_win = p_state + o_d[:, None] * stride_sc + o_w[None, :]
    m_win = m_d[:, None] & (o_w[None, :] < W)
    tl.store(p_win, b_win.to(conv_state.dtype.element_ty), mask=m_win)


@triton.jit
def _selective_state_update_kernel(
    state,
    x,
    dt,
    A,
    B,
    C,
    D,
    z,
    dt_bias,
    y,
    stride_sb,
    stride_sd,
    stride_xb,
    stride_dtb,
    stride_ad,
    stride_bb,
    stride_cb,
    stride_zb,
    stride_yb,
    DIM,
    D_STATE,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    i_b, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    o_n = tl.arange(0, BLOCK_N)
    m_d, m_n = o_d < DIM, o_n < D_STATE
    m_dn = m_d[:, None] & m_n[None, :]

    b_x = tl.load(x + i_b * stride_xb + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_z = tl.load(z + i_b * stride_zb + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dt = tl.load(dt + i_b * stride_dtb + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dt += tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dt = tl.where(b_dt <= 20.0, tl.log(1.0 + tl.exp(b_dt)), b_dt)  # softplus, torch's threshold
    b_A = tl.load(A + o_d[:, None] * stride_ad + o_n[None, :], mask=m_dn, other=0.0)
    b_B = tl.load(B + i_b * stride_bb + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_C = tl.load(C + i_b * stride_cb + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_D = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)

    p_h = state + i_b.to(tl.int64) * stride_sb + o_d[:, None] * stride_sd + o_n[None, :]
    b_h = tl.load(p_h, mask=m_dn, other=0.0).to(tl.float32)
    b_h = b_h * tl.exp(b_dt[:, None] * b_A.to(tl.float32)) + (b_dt * b_x)[:, None] * b_B[None, :]
    tl.store(p_h, b_h.to(state.dtype.element_ty), mask=m_dn)

    b_y = tl.sum(b_h * b_C[None, :], 1) + b_D * b_x
    b_y *= b_z * tl.sigmoid(b_z)
    tl.store(y + i_b * stride_yb + o_d, b_y.to(y.dtype.element_ty), mask=m_d)


# ----------------------------------------------------------------------------------------------
# launchers


def _launch_causal_conv1d_update(x, conv_state, weight, bias):
    batch, dim = x.shape
    d_conv = conv_state.shape[2]
    y = torch.empty(batch, dim, dtype=x.dtype, device=x.device)  # (batch, dim)
    block_w = triton.next_power_of_2(d_conv)
    block_d = max(16, min(256, 1024 // block_w))
    grid = (batch, triton.cdiv(dim, block_d))
    _causal_conv1d_update_kernel[grid](
        x,
        conv_state,
        weight,
        bias if bias is not None else weight,  # never read without HAS_BIAS
        y,
        stride_xb=x.stride(0),
        stride_sb=conv_state.stride(0),
        stride_sc=conv_state.stride(1),
        stride_wc=weight.stride(0),
        stride_yb=y.stride(0),
        DIM=dim,
        W=d_conv,
        BLOCK_D=block_d,
        BLOCK_W=block_w,
        HAS_BIAS=bias is not None,
        num_warps=4,
    )
    return y


def _launch_selective_state_update(state, x, dt, A, B, C, D, z, dt_bias):
    batch, dim, d_state = state.shape
    y = torch.empty(batch, dim, dtype=x.dtype, device=x.device)  # (batch, dim)
    block_n = triton.next_power_of_2(d_state)
    block_d = max(16, min(64, 4096 // block_n))
    grid = (batch, triton.cdiv(dim, block_d))
    _selective_state_update_kernel[grid](
        state,
        x,
        dt,
        A,
        B,
        C,
        D,
        z,
        dt_bias,
        y,
        stride_sb=state.stride(0),
        stride_sd=state.stride(1),
        stride_xb=x.stride(0),
        stride_dtb=dt.stride(0),
        stride_ad=A.stride(0),
        stride_bb=B.stride(0),
        stride_cb=C.stride(0),
        stride_zb=z.stride(0),
        stride_yb=y.stride(0),
        DIM=dim,
        D_STATE=d_state,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        num_warps=4,
    )
    return y


# ----------------------------------------------------------------------------------------------
# public functions


def _check_vector_rows(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    """`t` has `shape`, a floating dtype and a contiguous last dimension."""
    require(isinstance(t, torch.Tensor), f"{name} must be a tensor, got {type(t).__name__}")
    require(tuple(t.shape) == shape, f"{name} must have shape {shape}, got {tuple(t.shape)}")
    require(t.is_floating_point(), f"{name} must be a floating-point tensor, got {t.dtype}")
    require(t.stride(-1) == 1 or t.shape[-1] == 1, f"{name} needs a contiguous last dimension")


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """One decode step of a depthwise causal conv1d with silu, shifting `conv_state` in place.

    x: (batch, dim) the new input column
    conv_state: (batch, dim, d_conv) the last d_conv inputs, oldest first; shifted left in place,
        x becomes the last column (contiguous last dimension required)
    weight: (dim, d_conv)
    bias: (dim,) or None
    returns y: (batch, dim) in x's dtype, silu(sum(conv_state_new * weight, -1) + bias)
    """
    require(isinstance(x, torch.Tensor) and x.dim() == 2, "x must be a (batch, dim) tensor")
    batch, dim = x.shape
    require(
        isinstance(conv_state, torch.Tensor) and conv_state.dim() == 3,
        "conv_state must be a (batch, dim, d_conv) tensor",
    )
    d_conv = conv_state.shape[2]
    require(d_conv >= 1, "conv_state needs d_conv >= 1")
    _check_vector_rows("x", x, (batch, dim))
    _check_vector_rows("conv_state", conv_state, (batch, dim, d_conv))
    _check_vector_rows("weight", weight, (dim, d_conv))
    if bias is not None:
        _check_vector_rows("bias", bias, (dim,))
    check_same_device(x=x, conv_state=conv_state, weight=weight, bias=bias)
    return _launch_causal_conv1d_update(x, conv_state, weight, bias)


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor,
    dt_bias: torch.Tensor,
) -> torch.Tensor:
    """Mamba-1 selective state update for one token, `state` updated in place.

    state: (batch, dim, d_state) h, any floating dtype (math in float32)
    x: (batch, dim) conv output
    dt: (batch, dim) raw dt (dt_proj output before bias and softplus)
    A: (dim, d_state) negative (-exp(A_log))
    B: (batch, d_state)
    C: (batch, d_state)
    D: (dim,)
    z: (batch, dim) gate
    dt_bias: (dim,)
    returns y: (batch, dim) in x's dtype, (sum_n C*h + D*x) * silu(z) with
        h = exp(dt*A) h + dt*B*x and dt = softplus(dt + dt_bias)
    """
    require(isinstance(x, torch.Tensor) and x.dim() == 2, "x must be a (batch, dim) tensor")
    batch, dim = x.shape
    require(
        isinstance(state, torch.Tensor) and state.dim() == 3,
        "state must be a (batch, dim, d_state) tensor",
    )
    d_state = state.shape[2]
    require(d_state >= 1, "state needs d_state >= 1")
    _check_vector_rows("state", state, (batch, dim, d_state))
    for name, t in (("x", x), ("dt", dt), ("z", z)):
        _check_vector_rows(name, t, (batch, dim))
    _check_vector_rows("A", A, (dim, d_state))
    for name, t in (("B", B), ("C", C)):
        _check_vector_rows(name, t, (batch, d_state))
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        _check_vector_rows(name, t, (dim,))
    check_same_device(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    return _launch_selective_state_update(state, x, dt, A, B, C, D, z, dt_bias)
