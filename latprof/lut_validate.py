"""Checks a LUT's rows pass when it is loaded, so that no estimate ever sums a bad number.

A row is valid when:

- its status is ok, oom or error, and an ok row's latencies are finite, positive and below
  `MAX_LATENCY_US`, with p10 <= median <= p90;
- its sizes are positive (width, batch, samples, copies ...; context >= 0) and below the input
  ceilings of `latprof.inputs`;
- its setting columns are ones latprof writes (phase, dtype, device, mode, a backend);
- its `spec` text parses (`registry.spec_from_key`) and names the same operator, width and shape
  columns as the row holds.

Two ok rows with one key (spec and setting) but different values are a conflict: which one is
right cannot be known, so both are marked, each naming the other's line.  Identical duplicates
and a re-measurement of an oom or error row are not conflicts (the later row wins).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from latprof import inputs
from latprof.errors import InputError
from latprof.registry import PARAM_COLUMNS, spec_from_key
from latprof.specs import DTYPE_BYTES

#: a decode step slower than 100 s is not a measurement latprof could have made
MAX_LATENCY_US = 1e8
STATUSES = ("ok", "oom", "error")
_PHASES = ("decode", "prefill")
_DEVICES = ("cpu", "cuda")
_MODES = ("graph", "eager")
_SIZE_LIMITS = {
    "width": (1, inputs.MAX_SIZE),
    "batch": (1, inputs.MAX_BATCH),
    "context": (0, inputs.MAX_CONTEXT),
    "samples": (1, inputs.MAX_SAMPLES),
    "steps_per_sample": (1, 2**40),
    "copies": (1, 2**20),
    "threads": (1, inputs.MAX_THREADS),
}


def row_problem(row: dict[str, Any]) -> str | None:
    """Why `row` cannot be used, or None if it is valid."""
    status = row.get("status")
    if status not in STATUSES:
        return f"status {inputs.quote(status)} is not one of {', '.join(STATUSES)}"
    for col, (lo, hi) in _SIZE_LIMITS.items():
        value = row.get(col)
        if value is None:
            if col in ("width", "batch", "context"):
                return f"{col} is empty"
            continue
        if not lo <= value <= hi:
            return f"{col} is {inputs.quote(value)}, outside {lo}..{hi:,}"
    problem = _setting_problem(row)
    if problem:
        return problem
    if status == "ok":
        problem = _latency_problem(row)
        if problem:
            return problem
    return _spec_problem(row)


def _setting_problem(row: dict[str, Any]) -> str | None:
    for col, valid in (
        ("phase", _PHASES),
        ("dtype", tuple(DTYPE_BYTES)),
        ("device", _DEVICES),
        ("mode", _MODES),
    ):
        if row.get(col) not in valid:
            return f"{col} is {inputs.quote(row.get(col))}, not one of {', '.join(valid)}"
    if not row.get("backend"):
        return "backend is empty"
    return None


def _latency_problem(row: dict[str, Any]) -> str | None:
    values = {}
    for col in ("latency_us_median", "latency_us_p10", "latency_us_p90"):
        value = row.get(col)
        if value is None:
            if col == "latency_us_median":
                return "an ok row without latency_us_median"
            continue
        if not math.isfinite(value) or value <= 0:
            return f"{col} is {value!r}: a latency must be finite and positive"
        if value > MAX_LATENCY_US:
            return f"{col} is {value:g} µs, over the {MAX_LATENCY_US:g} µs ceiling of a step"
        values[col] = value
    median = values["latency_us_median"]
    p10, p90 = values.get("latency_us_p10", median), values.get("latency_us_p90", median)
    if not p10 <= median <= p90:
        return f"p10 {p10:g} <= median {median:g} <= p90 {p90:g} does not hold"
    return None


@lru_cache(maxsize=4096)
def _spec_columns(key: str) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(problem, the columns the spec text implies) for one spec text."""
    try:
        spec = spec_from_key(key)
    except InputError as exc:
        return f"spec {inputs.quote(key)} does not parse ({inputs.quote(str(exc), 100)})", ()
    cols = {"op": spec.op, "width": str(spec.width)}
    cols.update({k: _text(v) for k, v in spec.params().items()})
    return None, tuple(cols.items())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _spec_problem(row: dict[str, Any]) -> str | None:
    key = row.get("spec")
    if not isinstance(key, str):
        return "spec is empty"
    problem, cols = _spec_columns(key)
    if problem:
        return problem
    for col, expected in cols:
        if col not in row:  # a LUT written before this column existed
            continue
        got = _text(row.get(col))
        if got != expected:
            return f"column {col} is {inputs.quote(got)} but its spec says {inputs.quote(expected)}"
    implied = {c for c, _ in cols}
    for col in PARAM_COLUMNS:
        if col not in implied and row.get(col) not in (None, ""):
            return f"column {col} is set ({inputs.quote(row[col])}) but {row['op']} has no {col}"
    return None


def conflicts(numbered: list[tuple[int, dict[str, Any]]], key_of) -> dict[int, str]:
    """line -> problem for ok rows sharing a key with different latencies (both lines marked)."""
    first: dict[tuple, tuple[int, dict[str, Any]]] = {}
    out: dict[int, str] = {}
    for line, row in numbered:
        if row.get("status") != "ok":
            continue
        key = key_of(row)
        if key not in first:
            first[key] = (line, row)
            continue
        other_line, other = first[key]
        if _same_values(other, row):
            continue
        what = (
            f"{row.get('spec')} at batch {row.get('batch')}, context {row.get('context')} "
            f"({row.get('backend')}, {row.get('mode')})"
        )
        out[other_line] = out.get(other_line) or (
            f"conflicting duplicate of line {line}: {what} measured twice with different values"
        )
        out[line] = f"conflicting duplicate of line {other_line}: {what} measured twice"
    return out


def _same_values(a: dict[str, Any], b: dict[str, Any]) -> bool:
    cols = ("latency_us_median", "latency_us_p10", "latency_us_p90")
    return all(a.get(c) == b.get(c) for c in cols)


def problems(numbered: list[tuple[int, dict[str, Any]]], key_of) -> dict[int, str]:
    """line -> problem for every row that failed validation (its own checks or a conflict)."""
    out = {line: p for line, row in numbered if (p := row_problem(row))}
    for line, p in conflicts(numbered, key_of).items():
        out.setdefault(line, p)
    return out


def refusal(path: Any, found: dict[int, str]) -> InputError:
    """The error a strict load raises: the first few problems, with their lines."""
    shown = "; ".join(f"line {line}: {p}" for line, p in sorted(found.items())[:5])
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    return InputError(
        f"{path}: {len(found)} row(s) failed validation, so no estimate is made from this LUT: "
        f"{shown}{more}. Fix or delete these rows (`latprof show {path}` marks them), or "
        "re-measure them into a fresh LUT."
    )
