"""Multi-head Latent Attention block (latprof.specs.mla): pre-RMSNorm, query projection (through a
q_lora_rank bottleneck with its RMSNorm, or direct), kv_a_proj to the RMS-normed latent c_kv and
the shared rotary key k_rope, kv_b_proj expanding c_kv to per-head k_nope and v, causal softmax
attention with scale (qk_nope_head_dim + qk_rope_head_dim) ** -0.5, o_proj, residual add.  The
layout and parameter names follow transformers' `DeepseekV3Attention` / `KimiLinearAttention`.

Rotary embedding (rope=True): latprof's rotate-half convention (`latprof.ops.attention.apply_rope`:
dimension i of the rope part pairs with i + rope/2, angle p * 10000 ** (-2i / rope)), which is
transformers' DeepseekV3Attention with `rope_interleave=False`.  DeepSeek's checkpoints pair
adjacent dimensions (2i, 2i + 1) instead (`rope_interleave=True`, the default there); that is the
same block with the rope rows of q_b_proj / q_proj and kv_a_proj permuted (evens, then odds), so
the costs are identical (tests/test_ops_mla.py checks both against transformers).  YaRN scaling
(DeepSeek-V2 / V3) changes only the tables and the softmax scale, not the work, and is left out.
With rope=False (Kimi Linear's mla_use_nope) nothing is rotated.

Decode cache: `latent` (batch, max_context, kv_lora_rank + qk_rope_head_dim), each row
[c_kv, k_rope] of one position (k_rope rotated where rope=True): 576 values per token and layer
at DeepSeek's sizes, where expanded per-head keys and values would take heads x (nope + rope + v)
= 5120 at DeepSeek-V2-Lite's 16 heads.

The decode step ("torch", the reference) is the weight-absorbed form serving engines run for MLA
decode (vLLM's MLA backend, vllm/v1/attention/backends/mla/common.py, its "data-movement
friendly" path; FlashMLA's `flash_mla_with_kvcache` likewise reads 576-wide cache rows and
returns dv = 512 values per head).  The k-part of kv_b_proj, W_UK (heads, nope, kv_lora_rank),
takes q_nope into the latent space, so the scores q_latent . c_kv + q_rope . k_rope are one
query of size kv_lora_rank + rope per head against the cached rows: multi-query attention with
one shared KV head whose value is c_kv.  The v-part, W_UV (heads, v, kv_lora_rank), then maps the
weighted sum of c_kv to v_head_dim per head.  The step reads the latent cache only, never
per-head keys or values; W_UK and W_UV are views of kv_b_proj (no second copy of the weights).
- "torch": explicit matmuls, scores and softmax in float32, the cache read in place;
- "sdpa": `torch.nn.functional.scaled_dot_product_attention` with the heads as the queries of
  that single KV head, key and value the whole latent row (the output's rope columns dropped):
  the same sum, by a fused kernel where torch has one for that head size.
With positions in a device tensor both attend over the whole static cache, masked (see `step`).
`prefill` is the naive form: k_nope and v expanded per head through kv_b_proj and causal
attention over the sequence, so the step-equals-prefill tests compare absorbed against naive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.attention import apply_rope, rope_tables
from latprof.ops.base import Block, State, rms_norm
from latprof.specs.mla import MLASpec


def mla_decode_ref(
    query: torch.Tensor,
    latent: torch.Tensor,
    kv_lora_rank: int,
    scale: float,
    visible: torch.Tensor | None,
) -> torch.Tensor:
    """Absorbed-form attention of one query per head over cached latent rows, explicit matmuls.

    query: (batch, heads, kv_lora_rank + rope), [q_latent, q_rope]
    latent: (batch, ctx, kv_lora_rank + rope) view of the cache, rows [c_kv, k_rope]
    visible: (batch, ctx) bool, the rows each sequence may see, or None (all)
    returns (batch, heads, kv_lora_rank), the softmax-weighted sum of c_kv; scores and softmax
    in float32.
    """
    values = latent[..., :kv_lora_rank]  # (batch, ctx, kv_lora_rank), a view
    scores = torch.matmul(query, latent.transpose(1, 2)).float() * scale  # (batch, heads, ctx)
    if visible is not None:
        scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
        # a row past a position has weight 0, but 0 * NaN is NaN: rows never written must not
        # reach the sum (one more pass over c_kv than an int position's step makes)
        values = torch.where(visible[..., None], values, 0.0)
    return torch.matmul(scores.softmax(dim=-1).to(values.dtype), values)


def mla_decode_sdpa(
    query: torch.Tensor,
    latent: torch.Tensor,
    kv_lora_rank: int,
    scale: float,
    visible: torch.Tensor | None,
) -> torch.Tensor:
    """Same contract as `mla_decode_ref`, through `scaled_dot_product_attention`: one KV head
    whose `heads` queries are the heads.  Key and value are both the whole latent row, so that
    torch's fused kernels, which want equal key and value sizes, can take it (with a value of
    c_kv alone it runs its math path); the rope columns of the output are dropped, which costs
    rope / kv_lora_rank more multiply-adds in the weighted sum and no extra bytes."""
    if visible is not None:
        # an additive mask does not cancel a NaN score: zero the rows past each position first
        latent = torch.where(visible[..., None], latent, 0.0)
    mask = None if visible is None else visible[:, None, None, :]  # (batch, 1, 1, ctx)
    kv = latent.unsqueeze(1)  # (batch, 1, ctx, kv_lora_rank + rope)
    out = F.scaled_dot_product_attention(query.unsqueeze(1), kv, kv, attn_mask=mask, scale=scale)
    return out.squeeze(1)[..., :kv_lora_rank]  # (batch, heads, kv_lora_rank)


class MLABlock(Block):
    """x + o_proj(MLA(rms_norm(x))), decode steps in the weight-absorbed form over a latent
    cache, prefill in the naive (expanded) form."""

    static_state_keys = frozenset({"cos", "sin"})  # RoPE tables
    spec: MLASpec

    def __init__(
        self,
        spec: MLASpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        s = spec
        q_out = s.heads * s.qk_head_dim
        self.norm = self.new_norm(s.width)
        if s.q_lora_rank:
            self.q_a_proj = self.new_param(s.q_lora_rank, s.width)  # (q_lora_rank, width)
            self.q_a_norm = self.new_norm(s.q_lora_rank)
            self.q_b_proj = self.new_param(q_out, s.q_lora_rank)  # (heads * (nope + rope), q_lr)
        else:
            self.q_proj = self.new_param(q_out, s.width)  # (heads * (nope + rope), width)
        self.kv_a_proj = self.new_param(s.latent_dim, s.width)  # (kv_lora_rank + rope, width)
        self.kv_a_norm = self.new_norm(s.kv_lora_rank)
        # (heads * (nope + v), kv_lora_rank): per head, the k_nope rows then the v rows
        self.kv_b_proj = self.new_param(
            s.heads * (s.qk_nope_head_dim + s.v_head_dim), s.kv_lora_rank
        )
        self.o_proj = self.new_param(s.width, s.heads * s.v_head_dim)  # (width, heads * v)
        self.scale = s.qk_head_dim**-0.5
        self._attend = mla_decode_ref if backend == "torch" else mla_decode_sdpa

    def allocate_state(self, batch: int, max_context: int) -> State:
        s = self.spec
        state = {"latent": self.zeros(batch, max_context, s.latent_dim)}  # rows [c_kv, k_rope]
        if s.rope:
            cos, sin = rope_tables(max_context, s.qk_rope_head_dim, device=self.device)
            state["cos"], state["sin"] = cos, sin  # (max_context, rope / 2) float32
        return state

    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of kv_b_proj: W_UK (heads, nope, kv_lora_rank), W_UV (heads, v, kv_lora_rank)."""
        s = self.spec
        w = self.kv_b_proj.view(s.heads, s.qk_nope_head_dim + s.v_head_dim, s.kv_lora_rank)
        return w[:, : s.qk_nope_head_dim], w[:, s.qk_nope_head_dim :]

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Query parts, latent and shared key part, before the rotary embedding.

        x: (..., width)
        returns q_nope (..., heads, nope), q_rope (..., heads, rope), c_kv (..., kv_lora_rank)
        after its RMSNorm, k_rope (..., rope)
        """
        s = self.spec
        h = rms_norm(x, self.norm)
        if s.q_lora_rank:
            q = F.linear(rms_norm(F.linear(h, self.q_a_proj), self.q_a_norm), self.q_b_proj)
        else:
            q = F.linear(h, self.q_proj)
        q_nope, q_rope = q.unflatten(-1, (s.heads, s.qk_head_dim)).split(
            [s.qk_nope_head_dim, s.qk_rope_head_dim], dim=-1
        )
        c_kv, k_rope = F.linear(h, self.kv_a_proj).split([s.kv_lora_rank, s.qk_rope_head_dim], -1)
        return q_nope, q_rope, rms_norm(c_kv, self.kv_a_norm), k_rope

    def step(self, x: torch.Tensor, state: State, pos: int | torch.Tensor) -> torch.Tensor:
        """One decode step at position `pos` (= tokens already cached).

        x: (batch, width)
        state: latent (batch, max_context, kv_lora_rank + rope); with rope, cos and sin
            (max_context, rope / 2) float32
        pos: an int (every sequence there; the step attends over exactly pos + 1 rows), or an
            int32 tensor on the device, (batch,) or 0-d, never read on the host (what a CUDA
            graph replayed per token needs): the step then attends over the whole static cache,
            rows past each sequence's position masked out and zeroed, at the cost of the cache
            length
        returns (batch, width)
        """
        s = self.spec
        q_nope, q_rope, c_kv, k_rope = self._project(x)  # (b, H, nope), (b, H, rope), (b, L), ...
        cache = state["latent"]
        if isinstance(pos, torch.Tensor):
            idx = pos.expand(x.shape[0]).long()  # (batch,)
            if s.rope:
                cos, sin = state["cos"][idx], state["sin"][idx]  # (batch, rope / 2)
                q_rope = apply_rope(q_rope, cos[:, None], sin[:, None])
                k_rope = apply_rope(k_rope, cos, sin)
            rows = torch.arange(x.shape[0], device=x.device)
            cache.index_put_((rows, idx), torch.cat((c_kv, k_rope), dim=-1))
            visible = torch.arange(cache.shape[1], device=x.device) <= idx[:, None]  # (b, ctx)
        else:
            if s.rope:
                cos, sin = state["cos"][pos], state["sin"][pos]  # (rope / 2,)
                q_rope = apply_rope(q_rope, cos, sin)
                k_rope = apply_rope(k_rope, cos, sin)
            cache[:, pos] = torch.cat((c_kv, k_rope), dim=-1)
            cache, visible = cache[:, : pos + 1], None
        w_uk, w_uv = self.absorbed_weights()
        q_latent = torch.matmul(q_nope.transpose(0, 1), w_uk).transpose(0, 1)  # (b, H, L)
        query = torch.cat((q_latent, q_rope), dim=-1)  # (batch, heads, kv_lora_rank + rope)
        o_latent = self._attend(query, cache, s.kv_lora_rank, self.scale, visible)  # (b, H, L)
        out = torch.matmul(o_latent.transpose(0, 1), w_uv.transpose(1, 2))  # (H, batch, v)
        return x + F.linear(out.transpose(0, 1).flatten(-2), self.o_proj)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """Causal forward over a whole prompt from an empty cache, in the naive form (keys and
        values expanded per head through kv_b_proj); fills latent[:, :seq].

        x: (batch, seq, width)
        returns (batch, seq, width)
        """
        s = self.spec
        seq = x.shape[1]
        q_nope, q_rope, c_kv, k_rope = self._project(x)  # (b, seq, H, nope), ..., (b, seq, rope)
        if s.rope:
            cos, sin = state["cos"][:seq], state["sin"][:seq]  # (seq, rope / 2)
            q_rope = apply_rope(q_rope, cos[:, None], sin[:, None])
            k_rope = apply_rope(k_rope, cos, sin)
        state["latent"][:, :seq] = torch.cat((c_kv, k_rope), dim=-1)
        kv = F.linear(c_kv, self.kv_b_proj).unflatten(-1, (s.heads, -1))  # (b, seq, H, nope + v)
        k_nope, v = kv.split([s.qk_nope_head_dim, s.v_head_dim], dim=-1)
        k = torch.cat((k_nope, k_rope[:, :, None].expand(-1, -1, s.heads, -1)), dim=-1)
        q = torch.cat((q_nope, q_rope), dim=-1)  # (batch, seq, heads, nope + rope)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            scale=self.scale,
        )  # (batch, heads, seq, v)
        return x + F.linear(out.transpose(1, 2).flatten(-2), self.o_proj)
