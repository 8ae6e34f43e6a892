"""Generation-phase attention over a static KV cache, with RoPE and the cache write fused in.

One launch per decode step (TensorRT-LLM style), plus a small reduction launch when the context
is split (flash-decoding):

- program (b, kv head, split): loads the query heads of that kv head as one (group, head_dim)
  block and rotates it (RoPE, "rotate_half" pairs i and i + head_dim/2, at position
  cache_seqlens[b]), so the heads of a GQA group share every K/V load;
- it attends over its chunk of cached positions [0, cache_seqlens[b]) with an online softmax in
  float32 (exp2, the scale folded into log2(e));
- the program whose chunk holds position cache_seqlens[b] also rotates the new key, writes it and
  the new value into the cache at that index, and attends to the new token *from registers*: no
  program reads cache position cache_seqlens[b], so nothing reads memory another program writes;
- without split the program normalises and writes `out`; with split every program writes a
  partial (running max, sum, unnormalised acc) -- neutral (-inf, 0, 0) when its chunk lies beyond
  the sequence -- and `_combine_splits_kernel` merges them.

The chunking depends only on max_context and num_splits, and cache_seqlens is read on the device,
so one captured CUDA graph serves every step.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from latprof.kernels.checks import require

LOG2E = 1.4426950408889634
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

# ----------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _decode_attention_kernel(
    q,
    k_new,
    v_new,
    k_cache,
    v_cache,
    cache_seqlens,
    cos,
    sin,
    out,
    part_m,
    part_l,
    part_acc,
    qk_scale,
    stride_qb,
    stride_qh,
    stride_knb,
    stride_knh,
    stride_vnb,
    stride_vnh,
    stride_kcb,
    stride_kct,
    stride_kch,
    stride_vcb,
    stride_vct,
    stride_vch,
    stride_cos,
    stride_sin,
    stride_ob,
    stride_oh,
    KV_HEADS,
    MAX_CONTEXT,
    CHUNK,
    N_SPLITS,
    G: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i_bk, i_s = tl.program_id(0), tl.program_id(1)
    i_b, i_k = i_bk // KV_HEADS, i_bk % KV_HEADS
    HALF: tl.constexpr = HEAD_DIM // 2
    seqlen = tl.load(cache_seqlens + i_b)  # cached positions; the new token goes to this index

    o_g = tl.arange(0, BLOCK_G)
    o_d = tl.arange(0, BLOCK_D)
    o_n = tl.arange(0, BLOCK_N)
    m_g, m_d = o_g < G, o_d < HEAD_DIM
    m_gd = m_g[:, None] & m_d[None, :]
    o_h = i_k * G + o_g  # the query heads of kv head i_k

    # RoPE at position `seqlen`: x * cos + rotate_half(x) * sin, rotate_half(x)[i] = -x[i + HALF]
    # for i < HALF and x[i - HALF] above; so each element needs its partner (i + HALF) % HEAD_DIM
    o_rot = (o_d + HALF) % HEAD_DIM
    b_sign = tl.where(o_d < HALF, -1.0, 1.0)
    m_pos = m_d & (seqlen < MAX_CONTEXT)  # a full cache (precondition broken) is not touched
    b_cos = tl.load(cos + seqlen * stride_cos + o_d % HALF, mask=m_pos, other=0.0)
    b_sin = tl.load(sin + seqlen * stride_sin + o_d % HALF, mask=m_pos, other=0.0) * b_sign

    p_q = q + i_b * stride_qb + o_h[:, None] * stride_qh
    b_q = tl.load(p_q + o_d[None, :], mask=m_gd, other=0.0).to(tl.float32)
    b_qr = tl.load(p_q + o_rot[None, :], mask=m_gd, other=0.0).to(tl.float32)
    # rotated query, rounded to q's dtype like a framework's RoPE output: (BLOCK_G, BLOCK_D)
    b_q = (b_q * b_cos[None, :] + b_qr * b_sin[None, :]).to(q.dtype.element_ty)
    b_qd = b_q.to(DOT_DTYPE)

    p_k = k_cache + i_b.to(tl.int64) * stride_kcb + i_k * stride_kch
    p_v = v_cache + i_b.to(tl.int64) * stride_vcb + i_k * stride_vch
    b_m = tl.full([BLOCK_G], float("-inf"), tl.float32)  # running max of log2-scaled scores
    b_l = tl.zeros([BLOCK_G], tl.float32)  # running sum of exp2(score - max)
    b_acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)  # running sum of p * v

    lo = i_s * CHUNK
    hi = tl.minimum(lo + CHUNK, seqlen)
    for start in range(lo, hi, BLOCK_N):
        o_t = start + o_n
        m_t = o_t < hi
        m_td = m_t[:, None] & m_d[None, :]
        # int64: max_context * kv_heads * head_dim (one batch row of the cache) may pass 2**31
        o_t64 = o_t.to(tl.int64)
        b_k = tl.load(p_k + o_t64[:, None] * stride_kct + o_d[None, :], mask=m_td, other=0.0)
        b_s = tl.dot(b_qd, tl.trans(b_k.to(DOT_DTYPE)), input_precision=DOT_PRECISION)
        b_s *= qk_scale
        b_s = tl.where(m_t[None, :], b_s, float("-inf"))  # (BLOCK_G, BLOCK_N)
        b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
        b_alpha = tl.exp2(b_m - b_m_new)
        b_p = tl.exp2(b_s - b_m_new[:, None])
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        b_v = tl.load(p_v + o_t64[:, None] * stride_vct + o_d[None, :], mask=m_td, other=0.0)
        b_pv = tl.dot(b_p.to(DOT_DTYPE), b_v.to(DOT_DTYPE), input_precision=DOT_PRECISION)
        b_acc = b_acc * b_alpha[:, None] + b_pv
        b_m = b_m_new

    if i_s == seqlen // CHUNK:
        # the new token: rotate k, write k and v into the cache, attend to them from registers
        p_kn = k_new + i_b * stride_knb + i_k * stride_knh
        b_kn = tl.load(p_kn + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_knr = tl.load(p_kn + o_rot, mask=m_d, other=0.0).to(tl.float32)
        b_kn = (b_kn * b_cos + b_knr * b_sin).to(k_cache.dtype.element_ty)  # (BLOCK_D,)
        b_vn = tl.load(v_new + i_b * stride_vnb + i_k * stride_vnh + o_d, mask=m_d, other=0.0)
        b_vn = b_vn.to(v_cache.dtype.element_ty)
        seqlen64 = seqlen.to(tl.int64)
        tl.store(p_k + seqlen64 * stride_kct + o_d, b_kn, mask=m_pos)
        tl.store(p_v + seqlen64 * stride_vct + o_d, b_vn, mask=m_pos)

        b_sn = tl.sum(b_q.to(tl.float32) * b_kn.to(tl.float32)[None, :], 1) * qk_scale
        b_m_new = tl.maximum(b_m, b_sn)
        b_alpha = tl.exp2(b_m - b_m_new)
        b_pn = tl.exp2(b_sn - b_m_new)
        b_l = b_l * b_alpha + b_pn
        b_acc = b_acc * b_alpha[:, None] + b_pn[:, None] * b_vn.to(tl.float32)[None, :]
        b_m = b_m_new

    if SPLIT:
        o_row = (i_b * (KV_HEADS * G) + o_h) * N_SPLITS + i_s  # row of (batch, heads, splits)
        tl.store(part_m + o_row, b_m, mask=m_g)
        tl.store(part_l + o_row, b_l, mask=m_g)
        tl.store(part_acc + o_row[:, None] * HEAD_DIM + o_d[None, :], b_acc, mask=m_gd)
    else:
        b_o = b_acc / b_l[:, None]
        p_o = out + i_b * stride_ob + o_h[:, None] * stride_oh + o_d[None, :]
        tl.store(p_o, b_o.to(out.dtype.element_ty), mask=m_gd)


@triton.jit
def _combine_splits_kernel(
    part_m,
    part_l,
    part_acc,
    out,
    stride_ob,
    stride_oh,
    HEADS,
    N_SPLITS,
    HEAD_DIM: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i_bh = tl.program_id(0)
    i_b, i_h = i_bh // HEADS, i_bh % HEADS
    o_s = tl.arange(0, BLOCK_S)
    o_d = tl.arange(0, BLOCK_D)
    m_s, m_d = o_s < N_SPLITS, o_d < HEAD_DIM
    o_row = i_bh * N_SPLITS + o_s
    b_m = tl.load(part_m + o_row, mask=m_s, other=float("-inf"))
    b_l = tl.load(part_l + o_row, mask=m_s, other=0.0)
    b_acc = tl.load(
        part_acc + o_row[:, None] * HEAD_DIM + o_d[None, :],
        mask=m_s[:, None] & m_d[None, :],
        other=0.0,
    )  # (BLOCK_S, BLOCK_D)
    # the split holding the new token always has a finite max, so the weights are well defined
    b_w = tl.exp2(b_m - tl.max(b_m, 0))  # 0 for neutral partials (max -inf)
    b_o = tl.sum(b_w[:, None] * b_acc, 0) / tl.sum(b_w * b_l, 0)
    tl.store(out + i_b * stride_ob + i_h * stride_oh + o_d, b_o.to(out.dtype.element_ty), mask=m_d)


# ----------------------------------------------------------------------------------------------
# launcher

BLOCK_N = 64  # cached positions per loop iteration (at most; see `launch_config`)
MAX_HEAD_DIM = 512  # the largest launch configuration compiled ahead of time
MIN_SPLIT_POSITIONS = 512  # a split covers at least this many positions of the cache
MAX_SPLITS = 64


def launch_config(dtype: torch.dtype, head_dim: int) -> dict[str, int]:
    """BLOCK_N (cached positions per loop iteration), num_warps and num_stages for `dtype` and
    `head_dim`, chosen so every configuration fits a block's shared memory on sm_80 (163 KB) and
    sm_90 (227 KB) without register spills (checked ahead of time: tests/test_kernels_aot.py,
    `python -m latprof.kernels.aot_report`).  Triton pipelines the K and V tiles over
    num_stages buffers: shared memory grows with BLOCK_N * BLOCK_D * element size * num_stages.
    The interpreter (CPU) runs the same BLOCK_N, so the tests there cover the GPU's loop."""
    block_d = triton.next_power_of_2(head_dim)
    for max_itemsize, max_block_d, block_n, num_warps, num_stages in _LAUNCH_CONFIGS:
        if dtype.itemsize <= max_itemsize and block_d <= max_block_d:
            return {"BLOCK_N": block_n, "num_warps": num_warps, "num_stages": num_stages}
    raise ValueError(f"decode_attention has no launch configuration for head_dim {head_dim}")


#: (largest element size, largest BLOCK_D, BLOCK_N, num_warps, num_stages), first match wins.
#: Shared memory / registers / stack per thread on sm_90 at group 4 (BENCHMARKS.md, "Kernels
#: compiled ahead of time"): 16-bit up to head_dim 256 141 KB / 143-148 / 0; 16-bit 512 146 KB /
#: 142 / 0; float32 up to 128 140 KB / 108 / 0, 256 146 KB / 80 / 0, 512 97 KB / 93 / 0.  The
#: single config it replaces (64, 4 warps, 3 stages everywhere) needed 274 KB and spilled 8.7 KB
#: per thread at float32 head_dim 256, 274 KB at 16-bit head_dim 512.
_LAUNCH_CONFIGS = (
    (2, 256, 64, 4, 3),
    (2, 512, 64, 8, 2),
    (4, 128, 64, 4, 3),
    (4, 256, 32, 8, 3),
    (4, 512, 16, 4, 2),
)


def default_num_splits(batch: int, kv_heads: int, max_context: int, sm_count: int) -> int:
    """Splits of the context so that about two programs run per SM when batch * kv_heads alone
    cannot fill the GPU; each split covers at least MIN_SPLIT_POSITIONS of the cache.  Depends on
    the cache size, never on the current context, so a captured graph stays valid."""
    programs = batch * kv_heads
    if programs >= sm_count:
        return 1
    by_context = max(1, max_context // MIN_SPLIT_POSITIONS)
    return max(1, min(triton.cdiv(2 * sm_count, programs), by_context, MAX_SPLITS))


@functools.cache
def _cuda_sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _sm_count(device: torch.device) -> int:
    """SMs of `device`; on the meta device (compiled ahead of time, `latprof.kernels.aot`) those
    of the stand-in driver's target."""
    if device.type == "meta":
        from triton.runtime.driver import driver

        return driver.active.multi_processor_count
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _cuda_sm_count(torch.device("cuda", index))


def _launch_decode_attention(
    q, k_new, v_new, k_cache, v_cache, cache_seqlens, cos, sin, scale, num_splits
):
    batch, heads, head_dim = q.shape
    _, max_context, kv_heads, _ = k_cache.shape
    group = heads // kv_heads
    device = q.device
    interpreted = device.type == "cpu"  # meta: compiled for a GPU target, never run
    if num_splits is None:
        if interpreted:
            num_splits = 1  # the interpreter runs programs one at a time: nothing to fill
        else:
            num_splits = default_num_splits(batch, kv_heads, max_context, _sm_count(device))
    config = launch_config(q.dtype, head_dim)
    block_n = config["BLOCK_N"]
    chunk = triton.cdiv(triton.cdiv(max_context, num_splits), block_n) * block_n
    split = num_splits > 1
    out = torch.empty(batch, heads, head_dim, dtype=q.dtype, device=device)  # (batch, heads, d)
    if split:
        part_m = torch.empty(batch, heads, num_splits, dtype=torch.float32, device=device)
        part_l = torch.empty(batch, heads, num_splits, dtype=torch.float32, device=device)
        # (batch, heads, splits, head_dim)
        part_acc = torch.empty(
            batch, heads, num_splits, head_dim, dtype=torch.float32, device=device
        )
    else:
        part_m = part_l = part_acc = out  # never touched without SPLIT
    block_d = triton.next_power_of_2(head_dim)
    # Triton 3.7's interpreter computes tl.dot of bfloat16 blocks wrongly: on CPU (where only the
    # interpreter runs) the dot operands go in as float32, exact for 16-bit inputs
    upcast = interpreted
    _decode_attention_kernel[(batch * kv_heads, num_splits)](
        q,
        k_new,
        v_new,
        k_cache,
        v_cache,
        cache_seqlens,
        cos,
        sin,
        out,
        part_m,
        part_l,
        part_acc,
        qk_scale=scale * LOG2E,
        stride_qb=q.stride(0),
        stride_qh=q.stride(1),
        stride_knb=k_new.stride(0),
        stride_knh=k_new.stride(1),
        stride_vnb=v_new.stride(0),
        stride_vnh=v_new.stride(1),
        stride_kcb=k_cache.stride(0),
        stride_kct=k_cache.stride(1),
        stride_kch=k_cache.stride(2),
        stride_vcb=v_cache.stride(0),
        stride_vct=v_cache.stride(1),
        stride_vch=v_cache.stride(2),
        stride_cos=cos.stride(0),
        stride_sin=sin.stride(0),
        stride_ob=out.stride(0),
        stride_oh=out.stride(1),
        KV_HEADS=kv_heads,
        MAX_CONTEXT=max_context,
        CHUNK=chunk,
        N_SPLITS=num_splits,
        G=group,
        HEAD_DIM=head_dim,
        BLOCK_G=max(16, triton.next_power_of_2(group)),  # tl.dot needs at least 16 rows
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        SPLIT=split,
        DOT_DTYPE=tl.float32 if upcast else _TL_DTYPES[q.dtype],
        DOT_PRECISION="ieee" if upcast or q.dtype == torch.float32 else "tf32",
        num_warps=config["num_warps"],
        num_stages=config["num_stages"],
    )
    if split:
        _combine_splits_kernel[(batch * heads,)](
            part_m,
            part_l,
            part_acc,
            out,
            stride_ob=out.stride(0),
            stride_oh=out.stride(1),
            HEADS=heads,
            N_SPLITS=num_splits,
            HEAD_DIM=head_dim,
            BLOCK_S=triton.next_power_of_2(num_splits),
            BLOCK_D=block_d,
            num_warps=4,
        )
    return out


# ----------------------------------------------------------------------------------------------
# public functions


def _check_tensor(name: str, t: object, ndim: int, what: str) -> None:
    require(isinstance(t, torch.Tensor), f"{name} must be a tensor, got {type(t).__name__}")
    require(t.dim() == ndim, f"{name} must be {what}, got shape {tuple(t.shape)}")
    require(t.stride(-1) == 1, f"{name} needs a contiguous last dimension")


def _check_args(q, k_new, v_new, k_cache, v_cache, cache_seqlens, cos, sin, scale, num_splits):
    _check_tensor("q", q, 3, "(batch, heads, head_dim)")
    _check_tensor("k_cache", k_cache, 4, "(batch, max_context, kv_heads, head_dim)")
    batch, heads, head_dim = q.shape
    _, max_context, kv_heads, _ = k_cache.shape
    require(q.is_floating_point(), f"q must be a floating-point tensor, got {q.dtype}")
    require(head_dim % 2 == 0 and head_dim > 0, f"head_dim must be even, got {head_dim}")
    require(head_dim <= MAX_HEAD_DIM, f"head_dim must be <= {MAX_HEAD_DIM}, got {head_dim}")
    require(
        kv_heads > 0 and heads % kv_heads == 0,
        f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})",
    )
    require(max_context >= 1, "the cache needs max_context >= 1")
    for name, t, shape in (
        ("k_new", k_new, (batch, kv_heads, head_dim)),
        ("v_new", v_new, (batch, kv_heads, head_dim)),
        ("k_cache", k_cache, (batch, max_context, kv_heads, head_dim)),
        ("v_cache", v_cache, (batch, max_context, kv_heads, head_dim)),
    ):
        _check_tensor(name, t, len(shape), str(shape))
        require(tuple(t.shape) == shape, f"{name} must have shape {shape}, got {tuple(t.shape)}")
        require(t.dtype == q.dtype, f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
    _check_tensor("cache_seqlens", cache_seqlens, 1, "(batch,)")
    require(tuple(cache_seqlens.shape) == (batch,), f"cache_seqlens must have shape ({batch},)")
    require(
        cache_seqlens.dtype == torch.int32,
        f"cache_seqlens must be int32, got {cache_seqlens.dtype}",
    )
    for name, t in (("cos", cos), ("sin", sin)):
        _check_tensor(name, t, 2, "(max_context, head_dim // 2)")
        shape = (max_context, head_dim // 2)
        require(tuple(t.shape) == shape, f"{name} must have shape {shape}, got {tuple(t.shape)}")
        require(t.dtype == torch.float32, f"{name} must be float32, got {t.dtype}")
    tensors = {
        "q": q,
        "k_new": k_new,
        "v_new": v_new,
        "k_cache": k_cache,
        "v_cache": v_cache,
        "cache_seqlens": cache_seqlens,
        "cos": cos,
        "sin": sin,
    }
    devices = {t.device for t in tensors.values()}
    require(
        len(devices) == 1, f"all tensors must be on one device, got {sorted(map(str, devices))}"
    )
    require(
        scale is None or (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0),
        f"scale must be a positive number or None, got {scale!r}",
    )
    require(
        num_splits is None
        or (isinstance(num_splits, int) and not isinstance(num_splits, bool) and num_splits >= 1),
        f"num_splits must be a positive int or None, got {num_splits!r}",
    )


def decode_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    scale: float | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """One decode step of GQA attention with RoPE, appending the new token to the KV cache.

    q: (batch, heads, head_dim) query before RoPE
    k_new: (batch, kv_heads, head_dim) the new token's key before RoPE
    v_new: (batch, kv_heads, head_dim) the new token's value
    k_cache: (batch, max_context, kv_heads, head_dim) written in place: rotated k_new at
        index cache_seqlens[b]
    v_cache: (batch, max_context, kv_heads, head_dim) written in place: v_new at cache_seqlens[b]
    cache_seqlens: (batch,) int32 on the device, tokens already cached per row; must be
        < max_context (not checked: that would need a device sync)
    cos: (max_context, head_dim // 2) float32 RoPE table, row = position
    sin: (max_context, head_dim // 2) float32
    scale: softmax scale, default head_dim ** -0.5
    num_splits: context splits (flash-decoding); default from batch, kv_heads and max_context
    returns out: (batch, heads, head_dim) in q's dtype; query head h attends with kv head
        h // (heads // kv_heads) over cache_seqlens[b] + 1 positions (softmax in float32)
    """
    _check_args(q, k_new, v_new, k_cache, v_cache, cache_seqlens, cos, sin, scale, num_splits)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return _launch_decode_attention(
        q, k_new, v_new, k_cache, v_cache, cache_seqlens, cos, sin, scale, num_splits
    )


def rotate_half_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin in float32; x: (..., head_dim), cos/sin: (head_dim // 2,)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def decode_attention_ref(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    scale: float | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """PyTorch reference of `decode_attention` (same signature; num_splits has no effect).

    Implements scaled dot-product attention (Vaswani et al. 2017) for one query token with
    grouped-query heads (Ainslie et al. 2023, GQA) and rotary position embedding (Su et al. 2021,
    RoFormer) in the "rotate_half" layout of the Llama / GPT-NeoX reference code.
    """
    batch, heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(q)  # (batch, heads, head_dim)
    for b, pos in enumerate(cache_seqlens.tolist()):
        q_rot = rotate_half_rope(q[b], cos[pos], sin[pos]).to(q.dtype)  # (heads, head_dim)
        k_cache[b, pos] = rotate_half_rope(k_new[b], cos[pos], sin[pos]).to(k_cache.dtype)
        v_cache[b, pos] = v_new[b]
        keys = k_cache[b, : pos + 1].float().repeat_interleave(heads // kv_heads, dim=1)
        values = v_cache[b, : pos + 1].float().repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("hd,thd->ht", q_rot.float(), keys) * scale  # (heads, pos + 1)
        out[b] = torch.einsum("ht,thd->hd", scores.softmax(-1), values).to(q.dtype)
    return out
