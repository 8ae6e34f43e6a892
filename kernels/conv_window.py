"""The depthwise causal-conv window of one decode step, a `@triton.jit` helper shared by the
Mamba-1 conv kernel (`mamba_step.py`) and the fused Mamba2 kernel (`mamba2_step.py`)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def shifted_conv_window(
    p_x,
    p_state,
    p_w,
    p_bias,
    o_c,
    m_c,
    stride_sc,
    stride_wc,
    W: tl.constexpr,
    BLOCK_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    """Depthwise causal conv of channels `o_c` for one new input column.

    Returns (the conv window after the shift, (BLOCK_C, BLOCK_W) float32: old columns 1..W-1
    then the new input; silu(conv + bias), (BLOCK_C,) float32).  Only loads: the caller stores
    the window back after a barrier, once every thread of the program has read the old state.
    `p_state` points at a batch row of the state, whose last (d_conv) dimension is contiguous.
    """
    o_w = tl.arange(0, BLOCK_W)
    b_x = tl.load(p_x + o_c, mask=m_c, other=0.0).to(tl.float32)
    m_keep = m_c[:, None] & (o_w[None, :] + 1 < W)
    p_win = p_state + o_c[:, None] * stride_sc + (o_w[None, :] + 1)
    b_win = tl.load(p_win, mask=m_keep, other=0.0).to(tl.float32)
    b_win = tl.where(o_w[None, :] == W - 1, b_x[:, None], b_win)
    m_w = m_c[:, None] & (o_w[None, :] < W)
    b_w = tl.load(p_w + o_c[:, None] * stride_wc + o_w[None, :], mask=m_w, other=0.0)
    b_out = tl.sum(b_win * b_w.to(tl.float32), 1)
    if HAS_BIAS:
        b_out += tl.load(p_bias + o_c, mask=m_c, other=0.0).to(tl.float32)
    return b_win, b_out * tl.sigmoid(b_out)
