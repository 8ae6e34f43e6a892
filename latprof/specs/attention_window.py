"""Sliding-window attention block: the attention block of `latprof.specs.attention` whose query
at position p sees only the last `window` positions, p - window + 1 .. p (itself included), as
in Mistral, Qwen2's `use_sliding_window` layers and Gemma 3's local layers.

Its KV cache is a ring buffer of min(window, max_context) positions (position p lives in slot
p mod window), so the cache and the work of a decode step stop growing once the context passes
the window: bytes, FLOPs and cache size use min(context + 1, window) attended positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.attention import AttentionSpec
from latprof.specs.base import StateBytes, dtype_bytes, positive

#: the window of a spec built from a width alone (Mistral 7B v0.1's)
DEFAULT_WINDOW = 4096


@dataclass(frozen=True)
class WindowAttentionSpec(AttentionSpec):
    window: int = DEFAULT_WINDOW

    op: ClassVar[str] = "attention_window"

    @classmethod
    def resolve(cls, width, window=DEFAULT_WINDOW, **given):
        positive(cls.op, window=window)
        return super().resolve(width, **given, window=window)

    def decode_context_cap(self) -> int:
        # from context window - 1 on, a step attends to exactly `window` positions
        return max(self.window - 1, 1)

    def attended(self, context: int) -> int:
        """Positions one decode step attends to with `context` tokens already cached."""
        return min(context + 1, self.window)

    def cache_positions(self, max_context: int) -> int:
        """Slots of the ring-buffer KV cache for sequences of up to `max_context` tokens."""
        return min(max_context, self.window)

    def state_bytes(self, batch, max_context, dtype):
        positions = self.cache_positions(max_context)
        return StateBytes(kv_cache=2 * batch * positions * self.kv_dim * dtype_bytes(dtype))

    def cache_traffic_bytes(self, batch, context, dtype):
        # read K and V of the attended positions, write the new position's K and V
        return 2 * batch * (self.attended(context) + 1) * self.kv_dim * dtype_bytes(dtype)

    def flops_per_step(self, batch, context):
        scores_and_values = 4 * batch * self.heads * self.head_dim * self.attended(context)
        return 2 * batch * self.param_count() + scores_and_values
