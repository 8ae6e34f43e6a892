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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from latprof.errors import InputError
from latprof.lut import ANY_CONTEXT, Setting
from latprof.specs import OPERATOR_NAMES, OpSpec, build_spec, canonical_dtype, spec_from_key

PHASES = ("decode", "prefill")
#: what a spec file may override per operator
OP_KEYS = ("widths", "backends", "params", "mode")
#: backends whose kernels are Triton: on a CPU they would run in Triton's interpreter, an emulator
TRITON_BACKENDS = frozenset({"triton", "fla", "mamba_ssm"})


@dataclass(frozen=True)
class GridRequest:
    """Everything a sweep was asked to measure, before expansion into points."""

    ops: tuple[str, ...]
    widths: tuple[int, ...]
    batch: tuple[int, ...]
    context: tuple[int, ...]
    dtype: str
    device: str
    mode: str
    backends: tuple[str, ...] = ("torch",)
    phases: tuple[str, ...] = ("decode",)
    op_overrides: tuple[tuple[str, dict[str, Any]], ...] = ()
    op_specs: tuple[str, ...] = ()


def _as_tuple(value: Any, name: str, kind: type) -> tuple:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, kind) or isinstance(item, bool) and kind is int:
            raise InputError(f"{name}: expected {kind.__name__} values, got {item!r}")
    return tuple(items)


def parse_backends(items: tuple[str, ...] | list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`torch,attention=sdpa` -> (['torch'], {'attention': ['sdpa']})."""
    general: list[str] = []
    per_op: dict[str, list[str]] = {}
    for item in items:
        if "=" in item:
            op, name = (s.strip() for s in item.split("=", 1))
            if op not in OPERATOR_NAMES:
                raise InputError(
                    f"--backend {item}: unknown operator {op!r}; valid: {', '.join(OPERATOR_NAMES)}"
                )
            per_op.setdefault(op, []).append(name)
        else:
            general.append(item.strip())
    return general, per_op


def backends_for(op: str, request: GridRequest, supported: tuple[str, ...]) -> list[str]:
    """The backends `op` is measured with; an op none of whose backends was asked for is an error,
    and so is a backend that no requested op supports (checked by the caller)."""
    general, per_op = parse_backends(request.backends)
    overrides = dict(request.op_overrides).get(op, {})
    if "backends" in overrides:
        chosen = list(_as_tuple(overrides["backends"], f"ops.{op}.backends", str))
    elif op in per_op:
        chosen = per_op[op]
    else:
        chosen = [b for b in general if b in supported]
    unknown = [b for b in chosen if b not in supported]
    if unknown or not chosen:
        asked = ", ".join(unknown or general) or "(none)"
        raise InputError(
            f"{op} has no backend among those asked for ({asked}); {op} supports: "
            f"{', '.join(supported)}. Add e.g. --backend {op}={supported[0]}"
        )
    if request.device == "cpu":
        emulated = [b for b in chosen if b in TRITON_BACKENDS]
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


def expand(request: GridRequest, supported_backends) -> list[tuple[OpSpec, Setting]]:
    """All (spec, setting) points of a request, deduplicated, in a stable order.

    `supported_backends(op)` gives the backends an op's block implements (from the ops registry;
    passed in so this module stays torch-free)."""
    points: dict[tuple, tuple[OpSpec, Setting]] = {}
    overrides = dict(request.op_overrides)
    specs: list[OpSpec] = []
    for op in request.ops:
        over = overrides.get(op, {})
        widths = _as_tuple(over.get("widths"), f"ops.{op}.widths", int) or request.widths
        for width in widths:
            for params in _param_product(dict(over.get("params") or {})):
                specs.append(build_spec(op, width, **params))
    specs += [spec_from_key(key) for key in request.op_specs]
    for spec in specs:
        over = overrides.get(spec.op, {})
        mode = resolve_mode(over["mode"], request.device) if "mode" in over else request.mode
        for backend in backends_for(spec.op, request, supported_backends(spec.op)):
            for phase in request.phases:
                contexts = request.context
                if phase == "decode" and not spec.context_dependent:
                    contexts = (ANY_CONTEXT,)
                if phase == "prefill" and spec.input_kind != "hidden":
                    continue
                for batch, context in itertools.product(request.batch, contexts):
                    setting = Setting(
                        phase, batch, context, request.dtype, request.device, backend, mode
                    )
                    points.setdefault((spec.key, setting), (spec, setting))
    return list(points.values())


def load_spec_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"sweep spec {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not ("ops" in data or "op_specs" in data):
        raise InputError(f"{path}: a sweep spec is a mapping with an `ops:` or `op_specs:` key")
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
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(
            f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    return data


def request_from_file(
    data: dict[str, Any], *, device: str, dtype: str | None, mode: str | None, path: str
) -> GridRequest:
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
    return GridRequest(
        ops=tuple(ops_field),
        widths=_as_tuple(data.get("widths"), "widths", int) or (1024,),
        batch=_as_tuple(data.get("batch"), "batch", int) or (1,),
        context=_as_tuple(data.get("context"), "context", int) or (1024,),
        dtype=canonical_dtype(dtype or data.get("dtype") or default_dtype_name(device)),
        device=device,
        mode=resolve_mode(mode or data.get("mode"), device),
        backends=_as_tuple(data.get("backends"), "backends", str) or ("torch",),
        phases=phases,
        op_overrides=tuple((op, dict(over or {})) for op, over in ops_field.items()),
        op_specs=_as_tuple(data.get("op_specs"), "op_specs", str),
    )


def default_dtype_name(device: str) -> str:
    return "bfloat16" if device == "cuda" else "float32"


def resolve_mode(mode: str | None, device: str) -> str:
    if mode is None:
        return "graph" if device == "cuda" else "eager"
    if mode not in ("graph", "eager"):
        raise InputError(f"unknown mode {mode!r}; valid: graph, eager")
    if device == "cpu" and mode == "graph":
        raise InputError(
            "--mode graph needs CUDA graphs, which exist only on cuda; use eager on cpu"
        )
    return mode
