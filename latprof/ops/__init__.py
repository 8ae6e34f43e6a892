"""Operator blocks, found through the registry (`latprof.registry`).  Family modules import
lazily, so asking for `ffn` never imports fla or mamba-ssm."""

from __future__ import annotations

import torch

from latprof.ops.base import Block, State, backend_unavailable, resolve_path, torch_dtype
from latprof.registry import operator
from latprof.specs import OpSpec

__all__ = ["Block", "State", "backend_unavailable", "block_class", "build_block", "torch_dtype"]


def block_class(op: str) -> type[Block]:
    """The block class of operator `op` (exact name; a miss lists the valid ones)."""
    return resolve_path(operator(op).block)


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
