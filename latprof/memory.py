"""Memory of a model at decode time: weights and caches.  Needs no LUT and no torch.

KV cache = 2 x attention layers x kv_heads x head_dim x (context + meta tokens) x dtype bytes x
batch; recurrent and conv state come from each operator's `state_bytes`.  Activations and
allocator workspace are not counted: the total is a floor on what the device must hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latprof.errors import InputError
from latprof.model_spec import ModelSpec
from latprof.specs import canonical_dtype

GB = 10**9


@dataclass(frozen=True)
class MemoryReport:
    """Bytes a model needs for `batch` sequences with `context` tokens each in the cache."""

    dtype: str
    batch: int
    context: int  # tokens per sequence, without the model's meta tokens
    meta_tokens: int
    weights: int
    kv_cache: int
    recurrent: int
    conv: int

    @property
    def state(self) -> int:
        return self.kv_cache + self.recurrent + self.conv

    @property
    def total(self) -> int:
        return self.weights + self.state

    def as_json(self) -> dict[str, Any]:
        """Byte counts as plain integers."""
        return {
            "dtype": self.dtype,
            "batch": self.batch,
            "context": self.context,
            "meta_tokens": self.meta_tokens,
            "weights_bytes": self.weights,
            "kv_cache_bytes": self.kv_cache,
            "recurrent_state_bytes": self.recurrent,
            "conv_state_bytes": self.conv,
            "state_bytes": self.state,
            "total_bytes": self.total,
        }


def memory_report(model: ModelSpec, batch: int, context: int, dtype: str) -> MemoryReport:
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    if context < 0:
        raise InputError(f"context must be >= 0, got {context}")
    dtype = canonical_dtype(dtype)
    state = model.state_bytes(batch, context, dtype)
    return MemoryReport(
        dtype,
        batch,
        context,
        model.meta_tokens,
        model.weight_bytes(dtype),
        state.kv_cache,
        state.recurrent,
        state.conv,
    )


@dataclass(frozen=True)
class BatchFit:
    """The largest batch whose weights and caches fit in `device_bytes`."""

    device_bytes: int
    batch: int  # 0: the weights alone do not fit
    bytes_per_sequence: int
    memory: MemoryReport | None  # at that batch

    def as_json(self) -> dict[str, Any]:
        return {
            "device_memory_bytes": self.device_bytes,
            "max_batch": self.batch,
            "bytes_per_sequence": self.bytes_per_sequence,
            "total_bytes": self.memory.total if self.memory else None,
        }


def max_batch(model: ModelSpec, context: int, dtype: str, device_bytes: int) -> BatchFit:
    """Largest batch B with weights + B x (caches of one sequence) <= device_bytes.

    Caches grow linearly in the batch, so B = floor((device - weights) / per-sequence bytes)."""
    if device_bytes <= 0:
        raise InputError(f"device memory must be positive, got {device_bytes} bytes")
    one = memory_report(model, 1, context, dtype)
    free = device_bytes - one.weights
    if free < one.state:
        return BatchFit(device_bytes, 0, one.state, None)
    if one.state == 0:
        raise InputError(f"model {model.name!r} keeps no per-sequence state; no batch limit")
    batch = free // one.state
    return BatchFit(device_bytes, batch, one.state, memory_report(model, batch, context, dtype))
