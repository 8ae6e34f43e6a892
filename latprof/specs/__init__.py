"""Torch-free operator specs: one module per family, the shared base in `base`.

Specs are looked up and built through the operator registry (`latprof.registry`: `build_spec`,
`spec_from_key`, `OPERATOR_NAMES`); this package holds the classes and the dtype helpers."""

from __future__ import annotations

from latprof.specs.base import (
    DTYPE_BYTES,
    OpSpec,
    StateBytes,
    canonical_dtype,
    dtype_bytes,
    parse_value,
)

__all__ = ["DTYPE_BYTES", "OpSpec", "StateBytes", "canonical_dtype", "dtype_bytes", "parse_value"]
