"""Registry of operator specs by name; `build_spec` is the one way to make a spec."""

from __future__ import annotations

from typing import Any

from latprof.errors import InputError
from latprof.specs.attention import AttentionSpec
from latprof.specs.base import (
    DTYPE_BYTES,
    OpSpec,
    StateBytes,
    canonical_dtype,
    dtype_bytes,
    parse_value,
)
from latprof.specs.deltanet import DeltaNetSpec
from latprof.specs.embedding import EmbeddingSpec, LMHeadSpec
from latprof.specs.ffn import FFNSpec
from latprof.specs.gated_deltanet import GatedDeltaNetSpec
from latprof.specs.gla import GLASpec
from latprof.specs.mamba import MambaSpec
from latprof.specs.mamba2 import Mamba2Spec
from latprof.specs.moe import MoESpec

SPECS: dict[str, type[OpSpec]] = {
    cls.op: cls
    for cls in (
        AttentionSpec,
        FFNSpec,
        MoESpec,
        MambaSpec,
        Mamba2Spec,
        DeltaNetSpec,
        GatedDeltaNetSpec,
        GLASpec,
        EmbeddingSpec,
        LMHeadSpec,
    )
}
OPERATOR_NAMES: tuple[str, ...] = tuple(SPECS)
#: every shape column a LUT may carry, in a stable order
PARAM_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(name for cls in SPECS.values() for name in cls.param_names())
)

__all__ = [
    "DTYPE_BYTES",
    "OPERATOR_NAMES",
    "PARAM_COLUMNS",
    "SPECS",
    "OpSpec",
    "StateBytes",
    "build_spec",
    "canonical_dtype",
    "dtype_bytes",
    "spec_class",
    "spec_from_key",
]


def spec_class(op: str) -> type[OpSpec]:
    try:
        return SPECS[op]
    except KeyError:
        raise InputError(
            f"unknown operator {op!r}; valid operators: {', '.join(OPERATOR_NAMES)}"
        ) from None


def build_spec(op: str, width: int, **overrides: Any) -> OpSpec:
    """Spec of operator `op` at `width`: defaults derived from the width, `overrides` win.

    Unknown parameter names and impossible shapes raise `InputError`."""
    cls = spec_class(op)
    unknown = sorted(set(overrides) - set(cls.param_names()))
    if unknown:
        raise InputError(
            f"{op}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(cls.param_names())}"
        )
    return cls.resolve(width, **{k: v for k, v in overrides.items() if v is not None})


def spec_from_key(key: str) -> OpSpec:
    """Inverse of `OpSpec.key`."""
    try:
        op, rest = key.split("(", 1)
        fields = dict(item.split("=", 1) for item in rest.rstrip(")").split(","))
        values = {k: parse_value(v) for k, v in fields.items()}
        width = values.pop("width")
    except (ValueError, KeyError):
        raise InputError(f"malformed operator spec {key!r}") from None
    return build_spec(op, width, **values)
