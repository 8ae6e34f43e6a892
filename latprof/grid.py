"""The sweep grid: operator specs x settings, from flags or from a spec file (luts/*.yaml).

Spec file format (every key optional except `ops`):

```yaml
name: quick
widths: [256, 512, 1024]          # default widths for every op
batch: [1, 4]
context: [128, 1024, 4096]        # only context-dependent ops (attention) use it
dtype: null                        # default: bf16 on cuda, float32 on cpu
mode: null                         # graph | eager (default graph on cuda, eager on cpu)
phases: [decode]                   # decode and/or prefill (prefill: context = prompt length)
backends: [torch]                  # each op is measured with every listed backend it supports
ops:                               # op -> overrides: widths, backends, params (lists), mode
  attention: {backends: [torch, sdpa]}
  moe: {mode: eager}               # e.g. an op whose step cannot be graph-captured
  lm_head: {params: {vocab_size: [32000]}}
op_specs: ["ffn(width=2048,ffn_dim=6144,activation=swiglu)"]   # exact specs, at every setting
```
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latprof import inputs
from latprof.errors import InputError
from latprof.lut import ANY_CONTEXT, Setting
from latprof.model_spec import ModelSpec
from latprof.registry import OPERATOR_NAMES, PREFILL_BACKEND, build_spec, operator, spec_from_key
from latprof.settings import Settings, parse_counts, resolve_mode
from latprof.specs import OpSpec

PHASES = ("decode", "prefill")
#: what a spec file may override per operator
OP_KEYS = ("widths", "backends", "params", "mode")

Point = tuple[OpSpec, Setting]


@dataclass(frozen=True)
class GridRequest:
    """Everything a sweep was asked to measure, before expansion into points.  `settings` are
    resolved for measuring (`Settings.resolve(measure=True)`): device, dtype and mode are set."""

    ops: tuple[str, ...]
    widths: tuple[int, ...]
    settings: Settings
    phases: tuple[str, ...] = ("decode",)
    op_overrides: tuple[tuple[str, dict[str, Any]], ...] = ()
    op_specs: tuple[str, ...] = ()


def _as_tuple(value: Any, name: str, kind: type) -> tuple:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, kind) or isinstance(item, bool) and kind is int:
            raise InputError(f"{name}: expected {kind.__name__} values, got {inputs.quote(item)}")
    return tuple(items)


def backends_for(op: str, request: GridRequest) -> list[str]:
    """The backends `op` is measured with (from the registry's list for `op`); an op none of
    whose asked-for backends it supports is an error, and so is a Triton backend on a CPU."""
    entry = operator(op)
    supported = entry.backend_names
    asked = request.settings.backends
    general, per_op = list(asked.general or ("torch",)), asked.per_op_dict
    overrides = dict(request.op_overrides).get(op, {})
    if "backends" in overrides:
        chosen = list(_as_tuple(overrides["backends"], f"ops.{op}.backends", str))
    elif op in per_op:
        chosen = list(per_op[op])
    else:
        chosen = [b for b in general if b in supported]
    unknown = [b for b in chosen if b not in supported]
    if unknown or not chosen:
        asked = ", ".join(unknown or general) or "(none)"
        raise InputError(
            f"{op} has no backend among those asked for ({asked}); {op} supports: "
            f"{', '.join(supported)}. Add e.g. --backend {op}={supported[0]}"
        )
    if request.settings.device == "cpu":
        emulated = [b for b in chosen if entry.backend(b).triton]
        if emulated:
            raise InputError(
                f"{op}: backend {emulated[0]!r} runs Triton kernels, which on a CPU execute only "
                "in Triton's interpreter (an emulator): its timings would say nothing about this "
                "CPU. Use --backend torch (or sdpa for attention) on cpu."
            )
    return chosen


def _param_product(params: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def points_for(
    spec: OpSpec,
    *,
    phase: str,
    batches: Iterable[int],
    contexts: Iterable[int],
    dtype: str,
    device: str,
    backend: str,
    mode: str,
) -> list[Point]:
    """The grid points of one spec: every (batch, context), with the context rule every caller
    shares: a decode step of a context-independent operator is measured once, at `ANY_CONTEXT`;
    a context-dependent one at least at context 1.  Prefill only for operators on hidden states,
    and with the backend it really runs (`PREFILL_BACKEND`)."""
    if phase == "prefill" and spec.input_kind != "hidden":
        return []
    if phase == "prefill":
        backend = PREFILL_BACKEND  # what `Block.prefill` runs, whichever decode backend was asked
    if phase == "decode" and not spec.context_dependent:
        contexts = (ANY_CONTEXT,)
    elif spec.context_dependent:
        cap = spec.decode_context_cap() if phase == "decode" else None
        contexts = tuple(dict.fromkeys(max(min(c, cap or c), 1) for c in contexts))
    return [
        (spec, Setting(phase, batch, context, dtype, device, backend, mode))
        for batch, context in itertools.product(batches, contexts)
    ]


def dedupe(points: Iterable[Point]) -> list[Point]:
    """Points in first-seen order, each (spec, setting) once."""
    return list({(spec.key, s): (spec, s) for spec, s in points}.values())


def expand(request: GridRequest) -> list[Point]:
    """All (spec, setting) points of a request, deduplicated, in a stable order."""
    overrides = dict(request.op_overrides)
    settings = request.settings
    specs: list[OpSpec] = []
    for op in request.ops:
        over = overrides.get(op, {})
        widths = (
            parse_counts(_as_tuple(over["widths"], f"ops.{op}.widths", int), f"ops.{op}.widths")
            if over.get("widths") is not None
            else request.widths
        )
        for width in widths:
            for params in _param_product(dict(over.get("params") or {})):
                specs.append(build_spec(op, width, **params))
    specs += [spec_from_key(key) for key in request.op_specs]
    points: list[Point] = []
    for spec in specs:
        over = overrides.get(spec.op, {})
        mode = resolve_mode(over["mode"], settings.device) if "mode" in over else settings.mode
        for backend in backends_for(spec.op, request):
            for phase in request.phases:
                points += points_for(
                    spec,
                    phase=phase,
                    batches=settings.batch,
                    contexts=settings.context,
                    dtype=settings.dtype,
                    device=settings.device,
                    backend=backend,
                    mode=mode,
                )
    return dedupe(points)


def model_points(
    models: Iterable[ModelSpec],
    *,
    batches: Iterable[int],
    contexts: Iterable[int],
    dtype: str,
    device: str,
    mode: str,
    backends: dict[str, str],
) -> list[Point]:
    """The decode rows whose sum is each model's estimate at these contexts, exactly (no
    interpolation): every layer spec, the embedding and the LM head; attention at the context
    plus the model's meta tokens.  `backends`: op -> backend (`BackendRequest.for_ops`); an
    operator not named runs torch."""
    batches, contexts = tuple(batches), tuple(contexts)
    points: list[Point] = []
    for model in models:
        for spec in (*model.layers, model.embedding, model.lm_head):
            points += points_for(
                spec,
                phase="decode",
                batches=batches,
                contexts=[c + model.meta_tokens for c in contexts],
                dtype=dtype,
                device=device,
                backend=backends.get(spec.op, "torch"),
                mode=mode,
            )
    return dedupe(points)


def load_spec_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = inputs.read_text(path, "sweep spec")  # exists, a file, UTF-8, bounded in size
    data = inputs.parse_yaml(text, str(path))  # bounded numbers, depth and alias expansion
    if not isinstance(data, dict) or not ("ops" in data or "op_specs" in data):
        raise InputError(
            f"{path}: a sweep spec is a mapping with an `ops:` or `op_specs:` key, not "
            f"{inputs.quote(data)}"
        )
    known = {
        "name",
        "widths",
        "batch",
        "context",
        "dtype",
        "mode",
        "phases",
        "backends",
        "ops",
        "op_specs",
        "device",
        "description",
    }
    unknown = sorted(map(str, set(data) - known))
    if unknown:
        raise InputError(
            f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    return data


def _counts(data: dict[str, Any], key: str, default: tuple[int, ...], path: str) -> tuple:
    """A spec file's `batch`, `context` or `widths`: checked exactly as the flag of that name
    (`parse_counts`: integers, `8k` allowed, >= 1, below the same ceiling)."""
    value = data.get(key)
    if value is None:
        return default
    items = value if isinstance(value, list | tuple) else [value]
    try:
        return parse_counts([str(v) if isinstance(v, str) else v for v in items], key)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def request_from_file(
    data: dict[str, Any], *, device: str, dtype: str | None, mode: str | None, path: str
) -> GridRequest:
    """The request a spec file makes on `device` (resolved: cpu or cuda); `dtype` and `mode`
    from the command line win over the file's."""
    ops_field = data.get("ops") or {}
    if isinstance(ops_field, list):
        ops_field = {op: {} for op in ops_field}
    if not isinstance(ops_field, dict):
        raise InputError(f"{path}: `ops` must be a list of operator names or a mapping")
    for op, over in ops_field.items():
        if op not in OPERATOR_NAMES:
            raise InputError(
                f"{path}: unknown operator {op!r}; valid operators: {', '.join(OPERATOR_NAMES)}"
            )
        if over is not None and not isinstance(over, dict):
            raise InputError(f"{path}: ops.{op} must be a mapping ({', '.join(OP_KEYS)})")
        unknown = sorted(set(over or {}) - set(OP_KEYS))
        if unknown:
            raise InputError(
                f"{path}: ops.{op}: unknown key(s) {', '.join(unknown)}; "
                f"valid: {', '.join(OP_KEYS)}"
            )
    phases = _as_tuple(data.get("phases"), "phases", str) or ("decode",)
    for phase in phases:
        if phase not in PHASES:
            raise InputError(f"{path}: unknown phase {phase!r}; valid: {', '.join(PHASES)}")
    settings = Settings.for_device(
        device,
        dtype=dtype or data.get("dtype"),
        mode=mode or data.get("mode"),
        batch=_counts(data, "batch", (1,), path),
        context=_counts(data, "context", (1024,), path),
        backend=_as_tuple(data.get("backends"), "backends", str) or ("torch",),
    )
    return GridRequest(
        ops=tuple(ops_field),
        widths=_counts(data, "widths", (1024,), path),
        settings=settings,
        phases=phases,
        op_overrides=tuple((op, dict(over or {})) for op, over in ops_field.items()),
        op_specs=_as_tuple(data.get("op_specs"), "op_specs", str),
    )
