"""Registry of operator blocks by name.  Family modules import lazily, so asking for `ffn` never
imports fla or mamba-ssm."""

from __future__ import annotations

import importlib

import torch

from latprof.errors import InputError
from latprof.ops.base import Block, State, torch_dtype
from latprof.specs import OPERATOR_NAMES, OpSpec

#: operator name -> (module, class) implementing it
BLOCKS: dict[str, tuple[str, str]] = {
    "attention": ("latprof.ops.attention", "AttentionBlock"),
    "ffn": ("latprof.ops.ffn", "FFNBlock"),
    "moe": ("latprof.ops.moe", "MoEBlock"),
    "mamba": ("latprof.ops.mamba", "MambaBlock"),
    "mamba2": ("latprof.ops.mamba2", "Mamba2Block"),
    "deltanet": ("latprof.ops.deltanet", "DeltaNetBlock"),
    "gated_deltanet": ("latprof.ops.gated_deltanet", "GatedDeltaNetBlock"),
    "gla": ("latprof.ops.gla", "GLABlock"),
    "embedding": ("latprof.ops.embedding", "EmbeddingBlock"),
    "lm_head": ("latprof.ops.embedding", "LMHeadBlock"),
}
assert tuple(BLOCKS) == OPERATOR_NAMES

__all__ = ["BLOCKS", "Block", "State", "block_class", "build_block", "torch_dtype"]


def block_class(op: str) -> type[Block]:
    try:
        module, name = BLOCKS[op]
    except KeyError:
        raise InputError(
            f"unknown operator {op!r}; valid operators: {', '.join(OPERATOR_NAMES)}"
        ) from None
    return getattr(importlib.import_module(module), name)


def build_block(
    spec: OpSpec,
    *,
    backend: str = "torch",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Block:
    """The block for `spec` with random weights, on `device` in `dtype`, stepping with `backend`."""
    return block_class(spec.op)(spec, backend=backend, device=device, dtype=dtype, seed=seed)


def backends_of(op: str) -> tuple[str, ...]:
    return block_class(op).backends
