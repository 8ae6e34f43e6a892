"""Operator specs: the torch-free description of one decoder operator.

A spec is a frozen dataclass holding every shape parameter of one operator (a residual block:
pre-RMSNorm, mixer, residual add; or the embedding / LM head).  It knows its analytic costs per
decode step (parameters, bytes read + written, FLOPs) and the bytes of its caches.  Nothing here
imports torch: `latprof estimate` works on specs and LUT rows alone, and must start in well
under a second.

Each family lives in its own module; its class is entered in the operator registry
(`latprof.registry.OPERATORS`), through which specs are looked up and built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from latprof.errors import InputError
from latprof.inputs import MAX_SIZE, quote

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def canonical_dtype(name: str) -> str:
    """Map a user spelling of a dtype (bf16, fp32, ...) to its canonical name."""
    try:
        return DTYPE_ALIASES[name.strip().lower()]
    except KeyError:
        raise InputError(
            f"unknown dtype {name!r}; valid: {', '.join(sorted(DTYPE_ALIASES))}"
        ) from None


def dtype_bytes(name: str) -> int:
    return DTYPE_BYTES[canonical_dtype(name)]


@dataclass(frozen=True)
class StateBytes:
    """Bytes of an operator's decode caches for one batch and maximum context."""

    kv_cache: int = 0
    recurrent: int = 0
    conv: int = 0

    @property
    def total(self) -> int:
        return self.kv_cache + self.recurrent + self.conv

    def __add__(self, other: StateBytes) -> StateBytes:
        return StateBytes(
            self.kv_cache + other.kv_cache,
            self.recurrent + other.recurrent,
            self.conv + other.conv,
        )

    def scaled(self, factor: int) -> StateBytes:
        return StateBytes(self.kv_cache * factor, self.recurrent * factor, self.conv * factor)


def positive(op: str, **sizes: int) -> None:
    """Reject non-positive, non-integer or absurd sizes (over `inputs.MAX_SIZE`) with a message
    naming the operator."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{op}: {name} must be a positive integer, got {quote(value)}")
        if value > MAX_SIZE:
            raise InputError(f"{op}: {name}={quote(value)} is over latprof's limit of {MAX_SIZE:,}")


def divides(op: str, part_name: str, part: int, whole_name: str, whole: int) -> None:
    if whole % part:
        raise InputError(
            f"{op}: {part_name}={part} does not divide {whole_name}={whole}; "
            f"choose {part_name} among the divisors of {whole}"
        )


def exact_div(op: str, whole_name: str, whole: int, part_name: str, part: int) -> int:
    divides(op, part_name, part, whole_name, whole)
    return whole // part


def round_to(value: float, multiple: int) -> int:
    """Round to the nearest positive multiple (3 * 1000 -> 3072 for multiple 128)."""
    return max(multiple, int(round(value / multiple)) * multiple)


@dataclass(frozen=True)
class OpSpec:
    """Base of every operator spec.  Subclasses add their shape fields after `width`.

    Subclasses implement `resolve` (fill defaults from the width, validate) and the cost model.
    Build specs through `build_spec(op, width, **overrides)`, never by hand: the constructor does
    not derive defaults.
    """

    width: int

    op: ClassVar[str] = ""
    context_dependent: ClassVar[bool] = False
    #: kind of input of the decode step: "hidden" (batch, width) or "tokens" (batch,) ids.
    input_kind: ClassVar[str] = "hidden"
    #: the block reads the model's embedding output e (batch, width) beside the hidden state:
    #: its `step(x, state, pos, embedding)` / `prefill(x, state, embedding)` take it (Zamba2's
    #: shared attention runs on concat(x, e))
    reads_embedding: ClassVar[bool] = False
    #: fields added after a family's first LUTs were written (a bias, a gate, an inner size
    #: that is no multiple of the width): left out of `key` while they hold their default, so
    #: existing LUT rows keep their keys, and never a LUT shape column (the `spec` column
    #: carries them), so existing LUT files keep their header
    extra_fields: ClassVar[tuple[str, ...]] = ()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def resolve(cls, width: int, **given: Any) -> OpSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """Shape fields besides width, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "width")

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def column_params(self) -> dict[str, Any]:
        """Shape fields that are LUT columns (all but `extra_fields`)."""
        return {k: v for k, v in self.params().items() if k not in self.extra_fields}

    def key_params(self) -> dict[str, Any]:
        """Fields written in `key`: every field, `extra_fields` only where not at the default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {
            k: v for k, v in self.params().items() if k not in self.extra_fields or v != defaults[k]
        }

    def overrides(self) -> dict[str, Any]:
        """Fields that differ from the defaults this width would get."""
        default = type(self).resolve(self.width)
        return {k: v for k, v in self.params().items() if getattr(default, k) != v}

    @property
    def key(self) -> str:
        """Canonical text of the spec: `attention(width=2048,heads=16,...)`; the LUT join key."""
        fields = ",".join(f"{k}={_fmt(v)}" for k, v in self.key_params().items())
        return f"{self.op}(width={self.width}" + (f",{fields})" if fields else ")")

    def __str__(self) -> str:
        return self.key

    # ---- cost model (per decode step) -----------------------------------------------------
    #: a step reads only part of the weights (MoE: the routed experts), so copies for timing are
    #: sized on `bytes_per_step`, not on all weights (latprof.measure.OperatorTarget.touched_bytes)
    sparse_reads: ClassVar[bool] = False

    def param_count(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def shared_param_count(self) -> int:
        """Weights a use of this spec can reuse from an earlier use of the same spec (a model's
        `weight_ties`); 0 for a block with no shareable part, which cannot be tied."""
        return 0

    def pre_norm_params(self) -> int:
        """Weights of this block's own pre-norm (one per residual block, of the width); 0 where
        the block has none.  A model whose norms carry no weights (OLMo) subtracts them."""
        return self.width

    def state_bytes(self, batch: int, max_context: int, dtype: str) -> StateBytes:
        return StateBytes()

    def decode_context_cap(self) -> int | None:
        """The context from which a decode step costs the same at every longer context (a
        sliding window's), or None: LUT rows are measured up to it and read as flat beyond."""
        return None

    def flops_per_step(self, batch: int, context: int) -> int:
        """Multiply-adds count as two FLOPs; matmuls dominate."""
        return 2 * batch * self.param_count()

    def bytes_per_step(self, batch: int, context: int, dtype: str) -> int:
        """Bytes one decode step must move from memory: every weight once, the caches read and
        written, the activations in and out.  The roofline floor is this over the bandwidth."""
        nbytes = dtype_bytes(dtype)
        weights = self.param_count() * nbytes
        activations = 2 * batch * self.width * nbytes
        return weights + activations + self.cache_traffic_bytes(batch, context, dtype)

    def cache_traffic_bytes(self, batch: int, context: int, dtype: str) -> int:
        """Cache bytes moved by one step: recurrent / conv state read and written back."""
        state = self.state_bytes(batch, context + 1, dtype)
        return 2 * (state.recurrent + state.conv)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_value(text: str) -> Any:
    """Inverse of `_fmt` for the types specs use: int, bool, str."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return text


def resolve_heads(op: str, width: int, heads: int | None, head_dim: int | None) -> tuple[int, int]:
    """Heads and head_dim for multi-head mixers: given heads alone, head_dim = width / heads
    (which must divide); given neither, head_dim 128 and heads = width / 128."""
    positive(op, width=width)
    if heads is not None:
        positive(op, heads=heads)
    if head_dim is not None:
        positive(op, head_dim=head_dim)
    if head_dim is None and heads is not None:
        head_dim = exact_div(op, "width", width, "heads", heads)
    if head_dim is None:
        head_dim = 128
    if heads is None:
        if width < head_dim:
            raise InputError(
                f"{op}: width={width} is smaller than head_dim={head_dim}; "
                "give heads and head_dim explicitly"
            )
        heads = width // head_dim
    return heads, head_dim
