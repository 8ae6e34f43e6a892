"""Gated group RMSNorm (Mamba2's output norm) as a Triton kernel, beside its PyTorch reference.

y = rmsnorm_g(x * silu(z)) * weight, where rmsnorm_g normalises each group of `group_size`
consecutive channels on its own (Mamba2 uses one group per SSM group: group_size =
d_inner / n_groups).  Gate first, then norm: Mamba2's `RMSNormGated(norm_before_gate=False)`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latprof.kernels.checks import require

# The PyTorch reference with the same signature: the one the blocks' torch backend runs.
from latprof.ops.ssm_reference import gated_rms_norm_ref  # noqa: E402, F401

# ----------------------------------------------------------------------------------------------
# kernel


@triton.jit
def _gated_rms_norm_kernel(
    x,
    z,
    weight,
    y,
    stride_xb,
    stride_zb,
    stride_yb,
    eps,
    GROUP_SIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i_b, i_g = tl.program_id(0), tl.program_id(1)
    o_c = i_g * GROUP_SIZE + tl.arange(0, BLOCK)
    m_c = tl.arange(0, BLOCK) < GROUP_SIZE
    b_x = tl.load(x + i_b * stride_xb + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_z = tl.load(z + i_b * stride_zb + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_v = b_x * b_z * tl.sigmoid(b_z)
    b_rstd = 1.0 / tl.sqrt(tl.sum(b_v * b_v, 0) / GROUP_SIZE + eps)
    b_w = tl.load(weight + o_c, mask=m_c, other=0.0).to(tl.float32)
    tl.store(y + i_b * stride_yb + o_c, (b_v * b_rstd * b_w).to(y.dtype.element_ty), mask=m_c)


# ----------------------------------------------------------------------------------------------
# launcher


def _launch_gated_rms_norm(x, z, weight, group_size, eps):
    batch, dim = x.shape
    y = torch.empty(batch, dim, dtype=x.dtype, device=x.device)  # (batch, dim)
    block = triton.next_power_of_2(group_size)
    grid = (batch, dim // group_size)
    _gated_rms_norm_kernel[grid](
        x,
        z,
        weight,
        y,
        stride_xb=x.stride(0),
        stride_zb=z.stride(0),
        stride_yb=y.stride(0),
        eps=eps,
        GROUP_SIZE=group_size,
        BLOCK=block,
        num_warps=min(16, max(1, block // 512)),
    )
    return y


# ----------------------------------------------------------------------------------------------
# public functions


def gated_rms_norm(
    x: torch.Tensor,
    z: torch.Tensor,
    weight: torch.Tensor,
    *,
    group_size: int,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group RMSNorm of the gated input, in float32; output in x's dtype.

    x: (batch, dim)
    z: (batch, dim) gate
    weight: (dim,)
    group_size: channels per norm group; must divide dim
    returns y: (batch, dim), each group of x * silu(z) divided by its root mean square
        (+ eps inside the root), times weight
    """
    require(isinstance(x, torch.Tensor) and x.dim() == 2, "x must be a (batch, dim) tensor")
    require(isinstance(group_size, int) and group_size >= 1, "group_size must be a positive int")
    require(isinstance(eps, (int, float)) and eps > 0, f"eps must be > 0, got {eps!r}")
    batch, dim = x.shape
    require(dim % group_size == 0, f"group_size ({group_size}) must divide dim ({dim})")
    for name, t, shape in (
        ("x", x, (batch, dim)),
        ("z", z, (batch, dim)),
        ("weight", weight, (dim,)),
    ):
        require(isinstance(t, torch.Tensor), f"{name} must be a tensor")
        require(tuple(t.shape) == shape, f"{name} must have shape {shape}, got {tuple(t.shape)}")
        require(t.is_floating_point(), f"{name} must be a floating-point tensor, got {t.dtype}")
        require(t.stride(-1) == 1, f"{name} needs a contiguous last dimension")
        require(t.device == x.device, f"{name} is on {t.device}, x on {x.device}")
    return _launch_gated_rms_norm(x, z, weight, group_size, float(eps))
