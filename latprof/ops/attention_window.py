"""Sliding-window attention block: `AttentionBlock`'s projections, RoPE, q/k norm, output gate
and post-norm, with a ring-buffer KV cache of `window` slots (latprof.specs.attention_window).

Position p's rotated key and value are written to slot p mod window, overwriting position
p - window, which no later query sees.  Keys are rotated before they are cached, and a softmax
does not care about the order of its keys, so a decode step attends over the filled slots in
slot order.  Backends: "torch" (explicit matmuls, the reference) and "sdpa".  `prefill` runs
causal attention with the window mask and leaves the ring buffer as that many steps would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.attention import (
    AttentionBlock,
    apply_rope,
    gqa_decode_ref,
    gqa_decode_sdpa,
    rope_tables,
)
from latprof.ops.base import State
from latprof.specs.attention_window import WindowAttentionSpec


def window_mask(seq: int, window: int, device: torch.device) -> torch.Tensor:
    """(seq, seq) bool: query i sees key j where i - window < j <= i."""
    i = torch.arange(seq, device=device)[:, None]
    j = torch.arange(seq, device=device)[None, :]
    return (j <= i) & (j > i - window)


def windowed_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, window: int
) -> torch.Tensor:
    """q: (batch, seq, heads, hd); k, v: (batch, seq, kv_heads, hd) -> (batch, seq, heads, hd)."""
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    mask = window_mask(q.shape[1], window, q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale
    )
    return out.transpose(1, 2)


class WindowAttentionBlock(AttentionBlock):
    """x + o_proj(attention over the last `window` positions)."""

    spec: WindowAttentionSpec

    def allocate_state(self, batch: int, max_context: int) -> State:
        s = self.spec
        slots = s.cache_positions(max_context)
        cos, sin = rope_tables(max_context, s.head_dim, device=self.device)  # (ctx, hd/2) fp32
        return {
            "k": self.zeros(batch, slots, s.kv_heads, s.head_dim),  # rotated keys, ring buffer
            "v": self.zeros(batch, slots, s.kv_heads, s.head_dim),
            "cos": cos,
            "sin": sin,
        }

    def step(self, x: torch.Tensor, state: State, pos: int | torch.Tensor) -> torch.Tensor:
        """One decode step at position `pos` (tokens already seen).

        x: (batch, width); state: k, v (batch, slots, kv_heads, head_dim), cos / sin
        pos: an int, or a (batch,) int32 device tensor (then the whole ring buffer is read
            with the slots not yet written masked out, so no shape depends on the position)
        returns (batch, width)
        """
        q, k, v = self._project(x)  # (batch, heads, hd), (batch, kv_heads, hd) x 2
        slots = state["k"].shape[1]
        if isinstance(pos, torch.Tensor):
            out = self._step_at_tensor_positions(q, k, v, state, pos)
            return self._output(x, out)
        cos, sin = state["cos"][pos], state["sin"][pos]  # (head_dim // 2,)
        q = apply_rope(q, cos, sin)
        slot = pos % slots
        state["k"][:, slot] = apply_rope(k, cos, sin)
        state["v"][:, slot] = v
        filled = min(pos + 1, slots)
        keys, values = state["k"][:, :filled], state["v"][:, :filled]
        attend = gqa_decode_ref if self.backend == "torch" else gqa_decode_sdpa
        return self._output(x, attend(q, keys, values, self.scale))

    def _step_at_tensor_positions(self, q, k, v, state: State, pos: torch.Tensor) -> torch.Tensor:
        idx = pos.long()  # (batch,)
        cos, sin = state["cos"][idx][:, None], state["sin"][idx][:, None]  # (batch, 1, hd/2)
        q = apply_rope(q, cos, sin)
        slots = state["k"].shape[1]
        rows = torch.arange(q.shape[0], device=q.device)
        state["k"].index_put_((rows, idx % slots), apply_rope(k, cos, sin))
        state["v"].index_put_((rows, idx % slots), v)
        batch, heads, head_dim = q.shape
        kv_heads = state["k"].shape[2]
        visible = torch.arange(slots, device=q.device) <= idx[:, None]  # (batch, slots)
        qg = q.view(batch, kv_heads, heads // kv_heads, head_dim)
        keys, values = state["k"].transpose(1, 2), state["v"].transpose(1, 2)
        if self.backend == "sdpa":
            out = F.scaled_dot_product_attention(
                qg, keys, values, attn_mask=visible[:, None, None, :], scale=self.scale
            )
            return out.reshape(batch, heads, head_dim)
        scores = torch.matmul(qg, keys.transpose(-1, -2)).float() * self.scale
        scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
        out = torch.matmul(scores.softmax(dim=-1).to(values.dtype), values)
        return out.reshape(batch, heads, head_dim)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """Windowed causal forward over a prompt from an empty cache; leaves the last
        min(seq, slots) positions in their ring slots.

        x: (batch, seq, width) -> (batch, seq, width)
        """
        seq = x.shape[1]
        q, k, v = self._project(x)
        cos, sin = state["cos"][:seq, None], state["sin"][:seq, None]  # (seq, 1, hd/2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        slots = state["k"].shape[1]
        kept = torch.arange(max(0, seq - slots), seq, device=x.device)
        state["k"][:, kept % slots] = k[:, kept]
        state["v"][:, kept % slots] = v[:, kept]
        out = windowed_causal_attention(q, k, v, self.scale, self.spec.window)
        return self._output(x, out)
