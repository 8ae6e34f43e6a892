"""Softmax attention block: pre-RMSNorm, fused q/k/v projection, optional per-head q/k RMSNorm,
rotary position embedding, grouped-query attention over a static KV cache, out-projection,
residual add.

References: RoPE from RoFormer (Su et al., arXiv 2104.09864) in the non-interleaved "rotate half"
layout of GPT-NeoX / Llama (dimension i pairs with i + head_dim/2); grouped-query attention from
Ainslie et al. (arXiv 2305.13245), query head h reading KV head h // (heads / kv_heads); q/k norm
as in Qwen3 (one RMSNorm weight of head_dim shared by all heads, applied before RoPE).

Backends of the decode step:
- "torch": explicit matmuls, softmax in float32 (the reference), reading the cache in place
  (`gqa_attend_cache`: one matmul pair per KV head when batch > 1 and kv_heads > 1);
- "sdpa": `torch.nn.functional.scaled_dot_product_attention` (CPU and CUDA), the heads of one KV
  group laid out as that group's queries so no KV head is copied;
- "flash_attn": `flash_attn.flash_attn_with_kvcache` (CUDA, fp16 / bf16), which applies RoPE and
  writes the cache itself;
- "triton": our kernel `latprof.kernels.decode_attention.decode_attention`, likewise fused.
`prefill` always runs the PyTorch path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from latprof.errors import BackendUnavailable, InputError
from latprof.ops.base import Block, State, rms_norm
from latprof.specs.attention import AttentionSpec

ROPE_THETA = 10000.0


def rope_tables(
    max_positions: int, head_dim: int, theta: float = ROPE_THETA, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (max_positions, head_dim // 2) float32.

    angle[p, i] = p * theta ** (-2 i / head_dim); computed in float64 so that late positions keep
    their precision, stored in float32.
    """
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    positions = torch.arange(max_positions, dtype=torch.float64)
    angles = torch.outer(positions, inv_freq)  # (max_positions, head_dim // 2)
    return (
        angles.cos().to(device=device, dtype=torch.float32),
        angles.sin().to(device=device, dtype=torch.float32),
    )


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + head_dim/2) of `x` by the angles whose cos / sin are given.

    x: (..., head_dim)
    cos, sin: broadcastable to (..., head_dim // 2), float32
    returns x's shape and dtype; the rotation itself is computed in float32.
    """
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.to(x.dtype)


def _attend_matmuls(
    qg: torch.Tensor, kt: torch.Tensor, vt: torch.Tensor, scale: float, visible: torch.Tensor | None
) -> torch.Tensor:
    """softmax(qg @ kt * scale, masked to `visible`) @ vt, scores and softmax in float32."""
    scores = torch.matmul(qg, kt).float() * scale
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.matmul(scores.softmax(dim=-1).to(vt.dtype), vt)


def gqa_attend_cache(
    qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, visible: torch.Tensor | None
) -> torch.Tensor:
    """Grouped queries against cache views with explicit matmuls, never copying K or V.

    qg: (batch, kv_heads, group, head_dim), the query heads of each KV head
    k, v: (batch, ctx, kv_heads, head_dim) views of the cache
    visible: (batch, ctx) bool or None
    returns (batch, kv_heads, group, head_dim)

    One matmul over (batch, kv_heads) needs those two dims folded into one bmm batch dim; the
    permuted cache view allows that only when batch or kv_heads is 1, and otherwise matmul copies
    K and V first (about three times the step's KV traffic).  So with batch > 1 and kv_heads > 1
    each KV head gets its own matmuls over its strided view (kv_heads x more, smaller launches,
    no copy)."""
    batch, kv_heads = qg.shape[:2]
    if batch == 1 or kv_heads == 1:
        mask = None if visible is None else visible[:, None, None, :]
        return _attend_matmuls(qg, k.permute(0, 2, 3, 1), v.transpose(1, 2), scale, mask)
    mask = None if visible is None else visible[:, None, :]
    per_head = [
        _attend_matmuls(qg[:, h], k[:, :, h].transpose(1, 2), v[:, :, h], scale, mask)
        for h in range(kv_heads)
    ]  # each (batch, group, head_dim)
    return torch.stack(per_head, dim=1)


def gqa_decode_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of one query per head over the `ctx` cached positions, explicit matmuls.

    q: (batch, heads, head_dim)
    k, v: (batch, ctx, kv_heads, head_dim)
    returns (batch, heads, head_dim); scores and softmax in float32.
    """
    batch, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    qg = q.view(batch, kv_heads, heads // kv_heads, head_dim)  # (batch, kv_heads, group, head_dim)
    return gqa_attend_cache(qg, k, v, scale, None).reshape(batch, heads, head_dim)


def gqa_decode_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """Same contract as `gqa_decode_ref`, through `scaled_dot_product_attention`: the `group`
    query heads sharing a KV head become that head's `group` queries (no mask is needed, a decode
    query sees every cached position), so K and V are read in place, never repeated."""
    batch, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    qg = q.view(batch, kv_heads, heads // kv_heads, head_dim)  # (batch, kv_heads, group, head_dim)
    out = F.scaled_dot_product_attention(qg, k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.reshape(batch, heads, head_dim)


def gqa_decode_masked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, pos: torch.Tensor, sdpa: bool
) -> torch.Tensor:
    """Decode attention over the whole static cache, positions beyond each sequence's own masked
    out on the device (what a CUDA graph replayed at every position needs: no shape depends on
    the position).  Its cost follows the cache length, not the position.

    q: (batch, heads, head_dim)
    k, v: (batch, max_context, kv_heads, head_dim)
    pos: (batch,) int32, the position of each sequence's new token (already written to k, v)
    returns (batch, heads, head_dim)
    """
    batch, heads, head_dim = q.shape
    kv_heads, max_context = k.shape[2], k.shape[1]
    visible = torch.arange(max_context, device=q.device) <= pos.long()[:, None]  # (batch, ctx)
    qg = q.view(batch, kv_heads, heads // kv_heads, head_dim)  # (batch, kv_heads, group, head_dim)
    if sdpa:
        mask = visible[:, None, None, :]  # (batch, 1, 1, ctx), broadcast over heads and queries
        out = F.scaled_dot_product_attention(
            qg, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
        )
        return out.reshape(batch, heads, head_dim)
    return gqa_attend_cache(qg, k, v, scale, visible).reshape(batch, heads, head_dim)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """Causal self-attention over a whole sequence starting at position 0.

    q: (batch, seq, heads, head_dim)
    k, v: (batch, seq, kv_heads, head_dim)
    returns (batch, seq, heads, head_dim)
    """
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)  # (batch, seq, heads, head_dim)
    v = v.repeat_interleave(group, dim=2)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale
    )
    return out.transpose(1, 2)


def cache_attend_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State,
    pos: int | torch.Tensor,
    scale: float,
    *,
    sdpa: bool,
    rope: bool = True,
) -> torch.Tensor:
    """One decode step's attention on the PyTorch paths ("torch": explicit matmuls, "sdpa"):
    RoPE on q and k (when `rope`), the new k and v written to the cache at `pos`, attention over
    the cache.  Shared by every block that keeps a KV cache of this layout.

    q: (batch, heads, head_dim); k, v: (batch, kv_heads, head_dim), before RoPE
    state: k, v (batch, max_context, kv_heads, head_dim); cos, sin (max_context, head_dim // 2)
        float32 when `rope`
    pos: an int (attend over exactly pos + 1 positions) or a (batch,) int32 device tensor (the
        whole static cache, masked: `gqa_decode_masked`)
    returns (batch, heads, head_dim)
    """
    if isinstance(pos, torch.Tensor):
        idx = pos.long()  # (batch,)
        if rope:
            cos, sin = state["cos"][idx][:, None], state["sin"][idx][:, None]  # (batch, 1, hd/2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rows = torch.arange(q.shape[0], device=q.device)
        state["k"].index_put_((rows, idx), k)
        state["v"].index_put_((rows, idx), v)
        return gqa_decode_masked(q, state["k"], state["v"], scale, pos, sdpa=sdpa)
    if rope:
        cos, sin = state["cos"][pos], state["sin"][pos]  # (head_dim // 2,)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    state["k"][:, pos] = k
    state["v"][:, pos] = v
    keys, values = state["k"][:, : pos + 1], state["v"][:, : pos + 1]
    attend = gqa_decode_sdpa if sdpa else gqa_decode_ref
    return attend(q, keys, values, scale)


def cache_attend_prefill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: State, scale: float, rope: bool = True
) -> torch.Tensor:
    """Causal attention over a whole prompt from position 0, RoPE on q and k (when `rope`);
    fills the cache's k, v [:, :seq].

    q: (batch, seq, heads, head_dim); k, v: (batch, seq, kv_heads, head_dim), before RoPE
    returns (batch, seq, heads, head_dim)
    """
    seq = q.shape[1]
    if rope:
        cos = state["cos"][:seq, None]  # (seq, 1, head_dim // 2)
        sin = state["sin"][:seq, None]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    state["k"][:, :seq] = k
    state["v"][:, :seq] = v
    return causal_attention(q, k, v, scale)


def _import_decode_attention() -> Callable[..., torch.Tensor]:
    from latprof.kernels.decode_attention import decode_attention

    return decode_attention


def flash_attn_unavailable(device: torch.device) -> str | None:
    """Why the flash_attn backend cannot run on `device`; None if it can."""
    if device.type != "cuda":
        return f"flash_attn runs on CUDA devices only, not on {device.type}"
    try:
        import flash_attn  # noqa: F401
    except ImportError as err:
        return (
            f"flash_attn does not import ({err}); it builds from source: "
            "pip install flash-attn --no-build-isolation"
        )
    return None


class AttentionBlock(Block):
    """x + o_proj(attention(rope(q), rope(k), v)) with q, k, v projected from rms_norm(x)."""

    static_state_keys = frozenset({"cos", "sin", "cos_lowp", "sin_lowp"})  # RoPE tables
    spec: AttentionSpec

    def __init__(
        self,
        spec: AttentionSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        if spec.head_dim % 2:
            raise InputError(f"attention: RoPE needs an even head_dim, got {spec.head_dim}")
        if backend == "flash_attn" and dtype not in (torch.float16, torch.bfloat16):
            raise BackendUnavailable(
                f"attention: backend 'flash_attn' runs in float16 or bfloat16 only, not {dtype}"
            )
        self.norm = self.new_norm(spec.width)
        rows = spec.q_proj_dim + 2 * spec.kv_dim  # queries (and their gates), keys, values
        self.wqkv = self.new_param(rows, spec.width)  # (rows, width)
        self.bqkv = (
            self.new_param(spec.q_dim + 2 * spec.kv_dim, fan_in=1) if spec.qkv_bias else None
        )
        self.wo = self.new_param(spec.width, spec.q_dim)  # (width, q_dim)
        if spec.qk_norm:
            self.q_norm = self.new_norm(spec.q_dim if spec.qk_norm_full else spec.head_dim)
            self.k_norm = self.new_norm(spec.kv_dim if spec.qk_norm_full else spec.head_dim)
        if spec.post_norm:
            self.post_norm = self.new_norm(spec.width)
        self.scale = spec.head_dim**-0.5
        self._kernel: Callable[..., torch.Tensor] | None = None

    def allocate_state(self, batch: int, max_context: int) -> State:
        s = self.spec
        cos, sin = rope_tables(max_context, s.head_dim, device=self.device)  # (ctx, hd/2) fp32
        state = {
            "k": self.zeros(batch, max_context, s.kv_heads, s.head_dim),  # rotated keys
            "v": self.zeros(batch, max_context, s.kv_heads, s.head_dim),
            "seqlens": self.zeros(batch, dtype=torch.int32),  # (batch,) tokens already cached
            "cos": cos,
            "sin": sin,
        }
        if self.backend == "flash_attn":  # flash_attn wants the tables in the query's dtype
            state["cos_lowp"] = cos.to(self.dtype)
            state["sin_lowp"] = sin.to(self.dtype)
        return state

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v before RoPE (after q/k norm when the spec has it); the output gate, when the
        spec has one, is kept in `self._gate` for `_output`.

        x: (..., width)
        returns q: (..., heads, head_dim), k and v: (..., kv_heads, head_dim)
        """
        s = self.spec
        qkv = F.linear(rms_norm(x, self.norm), self.wqkv)  # (..., q_proj_dim + 2 kv_dim)
        if s.out_gate:
            q, gate, k, v = qkv.split([s.q_dim, s.q_dim, s.kv_dim, s.kv_dim], dim=-1)
            self._gate = gate  # (..., q_dim)
        else:
            q, k, v = qkv.split([s.q_dim, s.kv_dim, s.kv_dim], dim=-1)
        if self.bqkv is not None:
            bq, bk, bv = self.bqkv.split([s.q_dim, s.kv_dim, s.kv_dim])
            q, k, v = q + bq, k + bk, v + bv
        if s.qk_norm and s.qk_norm_full:  # one norm over all heads (OLMo2)
            q, k = rms_norm(q, self.q_norm), rms_norm(k, self.k_norm)
        q = q.unflatten(-1, (s.heads, s.head_dim))
        k = k.unflatten(-1, (s.kv_heads, s.head_dim))
        v = v.unflatten(-1, (s.kv_heads, s.head_dim))
        if s.qk_norm and not s.qk_norm_full:  # one head_dim norm shared by the heads (Qwen3)
            q = rms_norm(q, self.q_norm)
            k = rms_norm(k, self.k_norm)
        return q, k, v

    def _output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x + o_proj(out), with the output gate and the post-norm where the spec has them.

        x: (..., width); out: (..., heads, head_dim)
        """
        out = out.flatten(-2)  # (..., q_dim)
        if self.spec.out_gate:
            out = out * torch.sigmoid(self._gate)
        y = F.linear(out, self.wo)
        if self.spec.post_norm:
            y = rms_norm(y, self.post_norm)
        return x + y

    def step(self, x: torch.Tensor, state: State, pos: int | torch.Tensor) -> torch.Tensor:
        """One decode step at position `pos` (= tokens already cached).

        x: (batch, width)
        state: k, v (batch, max_context, kv_heads, head_dim); seqlens (batch,) int32;
            cos, sin (max_context, head_dim // 2) float32
        pos: an int (every sequence at that position; "torch" / "sdpa" then attend over exactly
            pos + 1 cached positions), or a (batch,) int32 tensor on the device, one position per
            sequence, never read on the host (what a CUDA graph replayed per token needs; "torch"
            / "sdpa" then attend over the whole static cache, masked: see `gqa_decode_masked`;
            "triton" / "flash_attn" read it as their cache_seqlens)
        returns (batch, width)
        """
        q, k, v = self._project(x)  # (batch, heads, hd), (batch, kv_heads, hd) x 2
        if self.backend in ("torch", "sdpa"):
            out = cache_attend_step(q, k, v, state, pos, self.scale, sdpa=self.backend == "sdpa")
        elif isinstance(pos, torch.Tensor):
            out = self._step_at_tensor_positions(q, k, v, state, pos)
        elif self.backend == "triton":
            if self._kernel is None:
                self._kernel = _import_decode_attention()
            state["seqlens"].fill_(pos)
            out = self._kernel(
                q,
                k,
                v,
                state["k"],
                state["v"],
                state["seqlens"],
                state["cos"],
                state["sin"],
                scale=self.scale,
            )
        else:
            from flash_attn import flash_attn_with_kvcache

            state["seqlens"].fill_(pos)
            out = flash_attn_with_kvcache(
                q.unsqueeze(1),  # (batch, 1, heads, head_dim)
                state["k"],
                state["v"],
                k=k.unsqueeze(1),  # (batch, 1, kv_heads, head_dim)
                v=v.unsqueeze(1),
                rotary_cos=state["cos_lowp"],
                rotary_sin=state["sin_lowp"],
                cache_seqlens=state["seqlens"],
                softmax_scale=self.scale,
                causal=True,
                rotary_interleaved=False,
            ).squeeze(1)
        return self._output(x, out)

    def _step_at_tensor_positions(self, q, k, v, state: State, pos: torch.Tensor) -> torch.Tensor:
        """The attention of `step` ("triton", "flash_attn") with positions in a device tensor
        (batch,) int32."""
        if self.backend == "triton":
            if self._kernel is None:
                self._kernel = _import_decode_attention()
            return self._kernel(
                q, k, v, state["k"], state["v"], pos, state["cos"], state["sin"], scale=self.scale
            )
        from flash_attn import flash_attn_with_kvcache

        return flash_attn_with_kvcache(
            q.unsqueeze(1),
            state["k"],
            state["v"],
            k=k.unsqueeze(1),
            v=v.unsqueeze(1),
            rotary_cos=state["cos_lowp"],
            rotary_sin=state["sin_lowp"],
            cache_seqlens=pos,
            softmax_scale=self.scale,
            causal=True,
            rotary_interleaved=False,
        ).squeeze(1)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """Causal forward over a whole prompt from an empty cache; fills k, v [:, :seq].

        x: (batch, seq, width)
        returns (batch, seq, width)
        """
        q, k, v = self._project(x)  # (batch, seq, heads, hd), (batch, seq, kv_heads, hd) x 2
        out = cache_attend_prefill(q, k, v, state, self.scale)  # (batch, seq, heads, head_dim)
        return self._output(x, out)
