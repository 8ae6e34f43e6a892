"""The operator registry: every operator family latprof knows, described once, without torch.

One `Operator` per family: its spec class (shapes, defaults from the width, analytic costs), the
block that runs it (imported lazily: blocks need torch), its backends with their kind and the
check that says why one cannot run here, and the references its PyTorch step is tested against.
Specs, blocks, sweep grids, config loaders and backend checks all read this table; a lookup is by
exact name, and a miss lists the valid names.

Adding a family: a spec module under `latprof/specs/`, a block module under `latprof/ops/`, and
one `Operator(...)` entry below (README, "Adding an operator").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from latprof.errors import InputError
from latprof.inputs import quote
from latprof.specs.attention import AttentionSpec
from latprof.specs.attention_window import WindowAttentionSpec
from latprof.specs.base import OpSpec, parse_value
from latprof.specs.deltanet import DeltaNetSpec
from latprof.specs.embedding import EmbeddingSpec, LMHeadSpec
from latprof.specs.ffn import FFNSpec
from latprof.specs.gated_deltanet import GatedDeltaNetSpec
from latprof.specs.gla import GLASpec
from latprof.specs.kda import KDASpec
from latprof.specs.mamba import MambaSpec
from latprof.specs.mamba2 import Mamba2Spec
from latprof.specs.mla import MLASpec
from latprof.specs.moe import MoESpec
from latprof.specs.shared_attention import SharedAttentionSpec
from latprof.specs.short_conv import ShortConvSpec

#: the backend every block's `prefill` runs (the PyTorch path; the backends are decode steps):
#: prefill rows record it whatever backend the sweep asked for (latprof.grid.points_for)
PREFILL_BACKEND = "torch"

#: backend kinds: plain PyTorch ops, a third-party kernel library, or our own Triton kernels
BACKEND_KINDS = ("torch", "library", "ours")


@dataclass(frozen=True)
class Backend:
    """One way to run an operator's decode step.

    `triton`: its kernels are Triton, so on a CPU they run only in Triton's interpreter (an
    emulator, never timed).  `check`: "module:function" taking a torch.device and returning why
    the backend cannot run there, or None (imported only when asked).  `graph_capturable`: False
    where the step reads data back to the host, so it cannot sit in a CUDA graph."""

    name: str
    kind: str
    triton: bool = False
    check: str | None = None
    graph_capturable: bool = True

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise ValueError(f"backend {self.name}: kind {self.kind!r} not in {BACKEND_KINDS}")


TORCH = Backend("torch", "torch")
SDPA = Backend("sdpa", "torch")
FLA = Backend("fla", "library", triton=True, check="latprof.ops.fla_compat:fla_unavailable")
MAMBA_SSM = Backend(
    "mamba_ssm", "library", triton=True, check="latprof.ops.mamba_ssm_compat:unavailable_on"
)
FLASH_ATTN = Backend("flash_attn", "library", check="latprof.ops.attention:flash_attn_unavailable")
OURS_TRITON = Backend("triton", "ours", triton=True, check="latprof.ops.base:triton_runs_on")


@dataclass(frozen=True)
class Operator:
    """One operator family.  `block` is "module:Class"; `implicit` operators (embedding, LM head)
    are added to every model from its width and vocabulary, never listed among its layers."""

    name: str
    spec: type[OpSpec]
    block: str
    backends: tuple[Backend, ...]
    references: tuple[str, ...] = ()
    implicit: bool = False

    def __post_init__(self) -> None:
        if self.spec.op != self.name:
            raise ValueError(
                f"operator {self.name}: spec class {self.spec.__name__} is for {self.spec.op!r}"
            )
        if not self.backends or self.backends[0].name != "torch":
            raise ValueError(f"operator {self.name}: the PyTorch reference 'torch' comes first")

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def backend(self, name: str) -> Backend:
        """The backend called `name` (exact); a miss lists this operator's backends."""
        for b in self.backends:
            if b.name == name:
                return b
        raise InputError(
            f"{self.name}: unknown backend {name!r}; valid for {self.name}: "
            f"{', '.join(self.backend_names)}"
        )


_SSM_REFS = ("mamba-ssm's selective_state_update_ref / ssd_minimal (latprof.ops.ssm_reference)",)
_FLA_REFS = ("fla-core's naive_* recurrences (fla.ops.*.naive)",)

OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator(
            "attention",
            AttentionSpec,
            "latprof.ops.attention:AttentionBlock",
            (TORCH, SDPA, FLASH_ATTN, OURS_TRITON),
            ("torch.nn.functional.scaled_dot_product_attention (causal, GQA)",),
        ),
        Operator(
            "attention_window",
            WindowAttentionSpec,
            "latprof.ops.attention_window:WindowAttentionBlock",
            (TORCH, SDPA),
            ("attention over the whole sequence with the sliding-window mask (prefill)",),
        ),
        Operator("ffn", FFNSpec, "latprof.ops.ffn:FFNBlock", (TORCH,)),
        Operator(
            "moe",
            MoESpec,
            "latprof.ops.moe:MoEBlock",
            # per-expert token counts are read back to the host: eager mode only
            (Backend("torch", "torch", graph_capturable=False),),
        ),
        Operator(
            "mamba",
            MambaSpec,
            "latprof.ops.mamba:MambaBlock",
            (TORCH, MAMBA_SSM, OURS_TRITON),
            _SSM_REFS,
        ),
        Operator(
            "mamba2",
            Mamba2Spec,
            "latprof.ops.mamba2:Mamba2Block",
            (TORCH, MAMBA_SSM, OURS_TRITON),
            _SSM_REFS,
        ),
        Operator(
            "deltanet", DeltaNetSpec, "latprof.ops.deltanet:DeltaNetBlock", (TORCH, FLA), _FLA_REFS
        ),
        Operator(
            "gated_deltanet",
            GatedDeltaNetSpec,
            "latprof.ops.gated_deltanet:GatedDeltaNetBlock",
            (TORCH, FLA),
            _FLA_REFS,
        ),
        Operator("gla", GLASpec, "latprof.ops.gla:GLABlock", (TORCH, FLA), _FLA_REFS),
        Operator(
            "kda",
            KDASpec,
            "latprof.ops.kda:KDABlock",
            (TORCH, FLA),
            (
                "fla-core's naive_recurrent_kda and naive_kda_gate (fla.ops.kda)",
                "transformers' KimiLinearDeltaAttention (its PyTorch chunked and recurrent paths)",
            ),
        ),
        Operator(
            "short_conv",
            ShortConvSpec,
            "latprof.ops.short_conv:ShortConvBlock",
            (TORCH, FLA),
            ("fla-core's causal_conv1d_update (no activation)", "torch.nn.functional.conv1d"),
        ),
        Operator(
            "mla",
            MLASpec,
            "latprof.ops.mla:MLABlock",
            (TORCH, SDPA),
            (
                "its own naive (expanded k / v) prefill",
                "transformers' DeepseekV3Attention (rope) and KimiLinearAttention (NoPE)",
            ),
        ),
        Operator(
            "shared_attention",
            SharedAttentionSpec,
            "latprof.ops.shared_attention:SharedAttentionBlock",
            (TORCH, SDPA),
            ("transformers' Zamba2AttentionDecoderLayer + Zamba2HybridLayer.linear (eager)",),
        ),
        Operator(
            "embedding",
            EmbeddingSpec,
            "latprof.ops.embedding:EmbeddingBlock",
            (TORCH,),
            implicit=True,
        ),
        Operator(
            "lm_head", LMHeadSpec, "latprof.ops.embedding:LMHeadBlock", (TORCH,), implicit=True
        ),
    )
}
OPERATOR_NAMES: tuple[str, ...] = tuple(OPERATORS)
#: operators a model adds by itself from width and vocab_size; never listed among its layers
IMPLICIT_OPS: tuple[str, ...] = tuple(name for name, op in OPERATORS.items() if op.implicit)
#: every shape column a LUT may carry, in a stable order
PARAM_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(
        name
        for op in OPERATORS.values()
        for name in op.spec.param_names()
        if name not in op.spec.extra_fields
    )
)


def operator(name: str) -> Operator:
    """The registry entry of operator `name` (exact); a miss lists the valid names."""
    try:
        return OPERATORS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown operator {name!r}; valid operators: {', '.join(OPERATOR_NAMES)}"
        ) from None


def spec_class(op: str) -> type[OpSpec]:
    return operator(op).spec


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


_KEY = re.compile(r"(?P<op>[a-z][a-z0-9_]*)\((?P<body>[^()]*)\)")
_FIELD = re.compile(r"(?P<name>[a-z][a-z0-9_]*)=(?P<value>[A-Za-z0-9_.+-]+)")


def spec_from_key(key: str) -> OpSpec:
    """Inverse of `OpSpec.key`: `op(width=W,name=value,...)`, strictly: one pair of parentheses,
    no spaces, each field once, `width` among them; fields left out take their defaults."""
    shown = quote(key, 80)
    expected = "expected op(width=W,name=value,...), e.g. ffn(width=2048,ffn_dim=6144)"
    match = _KEY.fullmatch(key) if isinstance(key, str) and len(key) <= 1000 else None
    if match is None:
        raise InputError(f"malformed operator spec {shown}: {expected}")
    values: dict[str, Any] = {}
    for item in match["body"].split(","):
        field = _FIELD.fullmatch(item)
        if field is None:
            raise InputError(f"malformed operator spec {shown}: field {quote(item)}; {expected}")
        if field["name"] in values:
            raise InputError(f"malformed operator spec {shown}: {field['name']} given twice")
        values[field["name"]] = parse_value(field["value"])
    if "width" not in values:
        raise InputError(f"malformed operator spec {shown}: no width; {expected}")
    width = values.pop("width")
    return build_spec(match["op"], width, **values)
