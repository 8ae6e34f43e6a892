"""Whole-model decode latency from a LUT: arithmetic on a table, no torch.

Per decode step at context c, the latency is the sum over layers of the LUT latency of the
layer's spec at Setting(phase="decode", batch, context, dtype, device, backend, mode), plus the
embedding and the LM head.  Attention rows are looked up at c + the model's meta tokens;
context-independent operators (`spec.context_dependent` false) at `ANY_CONTEXT`.

- **Context**: linear between measured contexts.  Decoding T tokens after a prompt of P sums the
  step latency over the contexts P .. P+T-1 exactly (arithmetic series per linear piece).
- **Width**: a spec the LUT lacks is interpolated between the two nearest measured widths of its
  family (same operator, same `spec.overrides()`), linearly in the parameter count: decode is
  bound by weight bytes, so latency is close to affine in them.
- Outside the measured range (context or width) is **extrapolation**: flagged, and an error
  unless allowed.  A spec with nothing to interpolate from is an error naming the spec and the
  `latprof sweep` command that measures it.

Search loops: build one `Estimator` per LUT (it indexes the rows once) and call
`decode_latency_us(model, ...)` for each candidate; per-spec results are cached, so a model costs a
few dictionary look-ups per distinct layer (see benchmarks/bench_estimate.py).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.lut import ANY_CONTEXT, LUT, SETTING_COLUMNS, Setting
from latprof.memory import GB, BatchFit, MemoryReport, max_batch, memory_report
from latprof.model import ModelSpec, load_model
from latprof.specs import OPERATOR_NAMES, OpSpec, build_spec, canonical_dtype, spec_from_key

__all__ = [
    "Curve",
    "Estimate",
    "EstimateRequest",
    "Estimator",
    "LayerEstimate",
    "MissingSpecs",
    "Report",
    "parse_backends",
    "run_estimate",
]


# ---- piecewise-linear latency curves -------------------------------------------------------------
class Curve:
    """Latency in µs as a function of context: linear between measured contexts and, beyond
    them, along the end segments.  One point (or a context-independent row) is a constant."""

    __slots__ = ("xs", "ys", "lo", "hi", "constant")

    def __init__(self, xs: Sequence[int], ys: Sequence[float], constant: bool = False) -> None:
        self.xs, self.ys, self.constant = tuple(xs), tuple(ys), constant
        self.lo, self.hi = self.xs[0], self.xs[-1]

    @classmethod
    def const(cls, value: float) -> Curve:
        return cls((ANY_CONTEXT,), (value,), constant=True)

    def at(self, c: float) -> float:
        xs, ys = self.xs, self.ys
        if len(xs) == 1:
            return ys[0]
        i = min(max(bisect.bisect_right(xs, c) - 1, 0), len(xs) - 2)
        return ys[i] + (ys[i + 1] - ys[i]) * (c - xs[i]) / (xs[i + 1] - xs[i])

    def covers(self, a: int, b: int) -> bool:
        """Whether contexts a..b lie inside the measured range (no extrapolation)."""
        return self.constant or (self.lo <= a and b <= self.hi)

    def measured_at(self, c: int) -> bool:
        i = bisect.bisect_left(self.xs, c)
        return i < len(self.xs) and self.xs[i] == c

    def sum_range(self, a: int, b: int) -> float:
        """Sum of the latency over the integer contexts a..b, exact for a piecewise-linear curve:
        on each linear piece [s, e) the n = e - s terms form an arithmetic series."""
        if len(self.xs) == 1:
            return self.ys[0] * (b - a + 1)
        total, s = 0.0, a
        fs = self.at(s)
        for x in self.xs[bisect.bisect_right(self.xs, a) : bisect.bisect_left(self.xs, b)]:
            fx = self.at(x)
            total += (x - s) * fs + (fx - fs) * (x - s - 1) / 2
            s, fs = x, fx
        fb = self.at(b)
        return total + (b - s) * fs + (fb - fs) * (b - s - 1) / 2 + fb

    def blend(self, other: Curve, t: float) -> Curve:
        """(1 - t) * self + t * other; the measured range is the intersection of both."""
        if self.constant and other.constant:
            return Curve.const((1 - t) * self.ys[0] + t * other.ys[0])
        xs = sorted({*(() if self.constant else self.xs), *(() if other.constant else other.xs)})
        out = Curve(xs, [(1 - t) * self.at(x) + t * other.at(x) for x in xs])
        ranged = [c for c in (self, other) if not c.constant]
        out.lo, out.hi = max(c.lo for c in ranged), min(c.hi for c in ranged)
        return out


@dataclass(frozen=True)
class Lookup:
    """How the LUT answers for one spec at one (phase, batch)."""

    curve: Curve
    backend: str
    method: str  # measured | width-interpolated | width-extrapolated
    widths: tuple[int, ...] = ()  # the measured widths used by width interpolation


# ---- errors --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Missing:
    spec: OpSpec
    phase: str
    batch: int
    backend: str | None
    contexts: tuple[int, ...]  # contexts the estimate needs (ANY_CONTEXT for constant ops)


class MissingSpecs(InputError):
    """Specs the LUT cannot answer for; the message holds the sweep command(s) that would."""

    def __init__(self, message: str, missing: list[Missing]) -> None:
        super().__init__(message)
        self.missing = missing


# ---- which rows of the LUT to use ----------------------------------------------------------------
@dataclass(frozen=True)
class LutSettings:
    """The dtype / device / mode of the LUT rows an estimate uses (values as the rows spell
    them), and what `--force` overrode."""

    dtype: str
    device: str
    mode: str
    device_name: str | None
    notes: tuple[str, ...] = ()

    @property
    def dtype_name(self) -> str:
        return canonical_dtype(self.dtype)


def _ok(row: dict[str, Any]) -> bool:
    """A successful measurement with every setting column filled in."""
    if row.get("status") not in (None, "ok") or row.get("latency_us_median") is None:
        return False
    return row["op"] is not None and all(row[k] is not None for k in SETTING_COLUMNS)


def _canonical_or_raw(name: str) -> str:
    try:
        return canonical_dtype(name)
    except InputError:
        return name


def resolve_settings(
    lut: LUT, dtype: str | None, device: str | None, mode: str | None, force: bool
) -> LutSettings:
    """Check the LUT against what the user asked; a mismatch is refused unless `force`."""
    rows = [r for r in lut.index.values() if _ok(r)]
    if not rows:
        raise InputError(f"{lut.path} holds no successful measurements ({len(lut.rows)} rows)")
    notes: list[str] = []
    refuse = (
        "A LUT measured with another {what} than asked for is refused: measure with "
        "`latprof sweep {flag} {asked} ...`, or pass --force to use its numbers anyway."
    )

    def pick(what: str, flag: str, asked: str | None, present: dict[str, str]) -> str:
        """present: comparable value -> value as spelled in the rows."""
        if asked is None:
            if len(present) == 1:
                return next(iter(present.values()))
            raise InputError(
                f"{lut.path} holds rows of several {what}s ({', '.join(sorted(present))}); "
                f"choose one with {flag}"
            )
        if asked in present:
            return present[asked]
        message = f"{lut.path} was measured with {what} {', '.join(sorted(present))}, not {asked}."
        if not force:
            raise InputError(message + " " + refuse.format(what=what, flag=flag, asked=asked))
        if len(present) > 1:
            raise InputError(message + f" --force cannot choose among them; give one with {flag}")
        value = next(iter(present.values()))
        notes.append(f"forced: {what} {asked} asked, the LUT's {value} used")
        return value

    dtypes = {_canonical_or_raw(r["dtype"]): r["dtype"] for r in rows}
    chosen_dtype = pick("dtype", "--dtype", canonical_dtype(dtype) if dtype else None, dtypes)
    devices = {r["device"]: r["device"] for r in rows}
    names = {r["device_name"] for r in rows if r.get("device_name")}
    if lut.provenance.get("device_name"):
        names.add(lut.provenance["device_name"])
    kind = (device or "auto").strip().lower()
    if kind in ("auto", "cpu", "cuda"):
        chosen_device = pick("device", "--device", None if kind == "auto" else kind, devices)
    else:  # a device name, compared exactly (case and surrounding spaces aside)
        if device.strip().casefold() not in {n.strip().casefold() for n in names}:
            measured_on = ", ".join(sorted(names)) or "an unnamed device"
            message = f"{lut.path} was measured on {measured_on}, not on {device!r}."
            if not force:
                raise InputError(
                    message + " A LUT from another device is refused: measure on that device "
                    "(`latprof sweep` there), or pass --force to use these numbers anyway."
                )
            notes.append(f"forced: device {device!r} asked, the LUT's {measured_on} used")
        chosen_device = pick("device", "--device", None, devices)
    modes = {r["mode"]: r["mode"] for r in rows}
    chosen_mode = pick("mode", "--mode", mode, modes)
    name = lut.provenance.get("device_name") or (sorted(names)[0] if names else None)
    return LutSettings(chosen_dtype, chosen_device, chosen_mode, name, tuple(notes))


def parse_backends(text: str | dict[str, str] | None) -> tuple[str | None, dict[str, str]]:
    """`"triton"` (one name for every operator that has it), `"attention=triton,ffn=torch"`, or
    both (`"triton,ffn=torch"`) -> (default, per-operator)."""
    if text is None:
        return None, {}
    if isinstance(text, dict):
        items = [f"{k}={v}" for k, v in text.items()]
    else:
        items = [item.strip() for item in text.split(",") if item.strip()]
    default, per_op = None, {}
    for item in items:
        if "=" in item:
            op, name = (part.strip() for part in item.split("=", 1))
            if op not in OPERATOR_NAMES:
                raise InputError(
                    f"--backend {item}: unknown operator {op!r}; valid: {', '.join(OPERATOR_NAMES)}"
                )
            if not name:
                raise InputError(f"--backend {item}: give a backend name after '='")
            per_op[op] = name
        elif default is not None:
            raise InputError(
                f"--backend: two backends for every operator ({default}, {item}); give one name, "
                "or op=name pairs"
            )
        else:
            default = item
    return default, per_op


# ---- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerEstimate:
    """One distinct spec of the model (count layers of it), per layer at one batch."""

    spec: OpSpec
    count: int
    positions: tuple[int, ...]  # layer indices; () for embedding and LM head
    backend: str
    latency_us_first: float  # one step at the first context
    latency_us_last: float  # one step at the last context
    latency_us_sum: float  # summed over all decode steps
    roofline_us_last: float | None  # bytes_per_step / bandwidth at the last context
    interpolation: str  # measured | context | width | width+context
    extrapolated: str | None  # why, if outside the measured range

    def as_json(self, step_us_last: float) -> dict[str, Any]:
        return {
            "op": self.spec.op,
            "spec": self.spec.key,
            "count": self.count,
            "positions": list(self.positions),
            "backend": self.backend,
            "latency_us_first": self.latency_us_first,
            "latency_us_last": self.latency_us_last,
            "share_of_step": self.count * self.latency_us_last / step_us_last,
            "roofline_us_last": self.roofline_us_last,
            "interpolation": self.interpolation,
            "extrapolated": self.extrapolated,
        }


@dataclass(frozen=True)
class Estimate:
    model: ModelSpec
    batch: int
    prompt: int
    generate: int
    layers: tuple[LayerEstimate, ...]
    step_us_first: float
    step_us_last: float
    decode_us: float
    roofline_step_us_last: float | None
    prefill_us: float | None
    prefill_note: str | None

    @property
    def first_context(self) -> int:
        return self.prompt

    @property
    def last_context(self) -> int:
        return self.prompt + self.generate - 1

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.generate / (self.decode_us * 1e-6)

    @property
    def interpolated(self) -> list[str]:
        return [r.spec.key for r in self.layers if r.interpolation != "measured"]

    @property
    def extrapolated(self) -> list[str]:
        return [r.spec.key for r in self.layers if r.extrapolated]

    def totals_json(self) -> dict[str, Any]:
        return {
            "step_us_first": self.step_us_first,
            "step_us_last": self.step_us_last,
            "decode_us": self.decode_us,
            "tokens_per_s": self.tokens_per_s,
            "roofline_step_us_last": self.roofline_step_us_last,
            "prefill_us": self.prefill_us,
            "prefill_note": self.prefill_note,
        }


# ---- the estimator -------------------------------------------------------------------------------
class Estimator:
    """One LUT, indexed for estimates at one dtype / device / mode.

    `backend`: None (each operator's only backend in the LUT), a name for every operator that has
    it, or {op: name}; an operator with several backends in the LUT and none chosen is an error.
    """

    def __init__(
        self,
        lut: LUT | str | Path,
        *,
        dtype: str | None = None,
        device: str | None = "auto",
        mode: str | None = None,
        backend: str | dict[str, str] | None = None,
        allow_extrapolation: bool = False,
        force: bool = False,
    ) -> None:
        self.lut = lut if isinstance(lut, LUT) else LUT.load(lut)
        self.settings = resolve_settings(self.lut, dtype, device, mode, force)
        self.allow_extrapolation, self.force = allow_extrapolation, force
        self.notes: list[str] = list(self.settings.notes)
        self._default_backend, self._op_backend = parse_backends(backend)
        s = self.settings
        # (spec key, phase, batch, backend) -> {context: latency_us}
        self._points: dict[tuple[str, str, int, str], dict[int, float]] = defaultdict(dict)
        self._backends: dict[tuple[str, str], set[str]] = defaultdict(set)  # (op, phase)
        self.batches: dict[str, set[int]] = defaultdict(set)  # phase -> batches
        bandwidths: Counter[float] = Counter()
        for row in self.lut.index.values():  # later rows (re-measurements) already won
            if not _ok(row) or row["device"] != s.device or row["mode"] != s.mode:
                continue
            if row["dtype"] != s.dtype:
                continue
            self._points[(row["spec"], row["phase"], row["batch"], row["backend"])][
                row["context"]
            ] = row["latency_us_median"]
            self._backends[(row["op"], row["phase"])].add(row["backend"])
            self.batches[row["phase"]].add(row["batch"])
            if row.get("bandwidth_gbps"):
                bandwidths[row["bandwidth_gbps"]] += 1
        if bandwidths:
            self.bandwidth_gbps: float | None = bandwidths.most_common(1)[0][0]
        else:
            self.bandwidth_gbps = self.lut.provenance.get("bandwidth_gbps")
        if self._default_backend and not any(
            self._default_backend in names for names in self._backends.values()
        ):
            self._refuse_backend(None, self._default_backend, [])
        self._backend_of: dict[str, str | None] = {}
        self._lookups: dict[tuple[OpSpec, str, int], Lookup | None] = {}
        self._sums: dict[tuple, float] = {}
        self._io: dict[tuple[int, int], tuple[OpSpec, OpSpec]] = {}
        self._families: dict[tuple, list[tuple[int, str, OpSpec]]] | None = None

    # ---- backends ------------------------------------------------------------------------------
    def _refuse_backend(self, op: str | None, asked: str, available: list[str]) -> str:
        what = f"{op} rows" if op else "rows"
        message = (
            f"--backend {asked}: {self.lut.path} has no {what} measured with {asked}"
            + (f" (it has: {', '.join(available)})" if available else "")
            + "."
        )
        if not self.force or len(available) > 1:
            raise InputError(
                message + " A LUT measured with another backend than asked for is refused: "
                "measure that backend, or pass --force to use the LUT's."
            )
        if available:
            self.notes.append(f"forced: {op} backend {asked} asked, the LUT's {available[0]} used")
            return available[0]
        self.notes.append(f"forced: backend {asked} asked; the LUT has none")
        return asked

    def backend_for(self, op: str) -> str | None:
        """The backend whose rows are used for `op`; None if the LUT has no rows for it."""
        if op in self._backend_of:
            return self._backend_of[op]
        available = sorted(
            self._backends.get((op, "decode")) or self._backends.get((op, "prefill"), ())
        )
        if op in self._op_backend:
            asked = self._op_backend[op]
            chosen = (
                asked
                if asked in available or not available
                else self._refuse_backend(op, asked, available)
            )
        elif self._default_backend in available:
            chosen = self._default_backend
        elif len(available) <= 1:
            chosen = available[0] if available else None
        else:
            raise InputError(
                f"{self.lut.path} has {op} rows for several backends ({', '.join(available)}); "
                f"choose one with --backend {op}=NAME (latprof never picks one silently)"
            )
        self._backend_of[op] = chosen
        return chosen

    # ---- looking specs up ----------------------------------------------------------------------
    def _measured(self, key: str, const: bool, phase: str, batch: int, backend: str):
        points = self._points.get((key, phase, batch, backend))
        if not points:
            return None
        if const:
            value = points.get(ANY_CONTEXT)
            return None if value is None else Curve.const(value)
        xs = sorted(points)
        return Curve(xs, [points[x] for x in xs])

    def lookup(self, spec: OpSpec, phase: str, batch: int) -> Lookup | None:
        """The LUT's latency curve for `spec`, measured or interpolated in width; None if the
        LUT has nothing to answer with."""
        cache_key = (spec, phase, batch)
        if cache_key in self._lookups:
            return self._lookups[cache_key]
        backend = self.backend_for(spec.op)
        result = None
        if backend is not None:
            const = phase == "decode" and not spec.context_dependent
            curve = self._measured(spec.key, const, phase, batch, backend)
            if curve is not None:
                result = Lookup(curve, backend, "measured")
            else:
                result = self._width_lookup(spec, const, phase, batch, backend)
        self._lookups[cache_key] = result
        return result

    def _family_index(self) -> dict[tuple, list[tuple[int, str, OpSpec]]]:
        """(op, overrides, phase, batch, backend) -> [(width, key, spec)] sorted by width."""
        if self._families is None:
            families: dict[tuple, list[tuple[int, str, OpSpec]]] = defaultdict(list)
            parsed: dict[str, OpSpec | None] = {}
            for key, phase, batch, backend in self._points:
                if key not in parsed:
                    try:
                        parsed[key] = spec_from_key(key)
                    except InputError:  # a row written by another version of the specs
                        parsed[key] = None
                spec = parsed[key]
                if spec is not None:
                    sig = (spec.op, _overrides(spec), phase, batch, backend)
                    families[sig].append((spec.width, key, spec))
            self._families = {k: sorted(v, key=lambda m: m[0]) for k, v in families.items()}
        return self._families

    def _width_lookup(self, spec, const, phase, batch, backend) -> Lookup | None:
        members = self._family_index().get((spec.op, _overrides(spec), phase, batch, backend), [])
        curves = [
            (m, c)
            for m in members
            if (c := self._measured(m[1], const, phase, batch, backend)) is not None
        ]
        if len(curves) < 2:
            return None
        widths = [m[0] for m, _ in curves]
        i = bisect.bisect_left(widths, spec.width)
        i = min(max(i, 1), len(curves) - 1)
        (m0, c0), (m1, c1) = curves[i - 1], curves[i]
        p, p0, p1 = spec.param_count(), m0[2].param_count(), m1[2].param_count()
        t = (p - p0) / (p1 - p0) if p1 != p0 else (spec.width - m0[0]) / (m1[0] - m0[0])
        inside = m0[0] <= spec.width <= m1[0]
        method = "width-interpolated" if inside else "width-extrapolated"
        return Lookup(c0.blend(c1, t), backend, method, (m0[0], m1[0]))

    # ---- estimating ----------------------------------------------------------------------------
    def _io_specs(self, model: ModelSpec) -> tuple[OpSpec, OpSpec]:
        key = (model.width, model.vocab_size)
        if key not in self._io:
            self._io[key] = (
                build_spec("embedding", model.width, vocab_size=model.vocab_size),
                build_spec("lm_head", model.width, vocab_size=model.vocab_size),
            )
        return self._io[key]

    def _range(self, spec: OpSpec, lookup: Lookup, a: int, b: int) -> str | None:
        """Why contexts a..b (and the spec's width) are extrapolation, or None."""
        why = []
        if lookup.method == "width-extrapolated":
            lo, hi = lookup.widths
            why.append(f"width {spec.width} outside the measured widths {lo}..{hi}")
        if not lookup.curve.covers(a, b):
            c = lookup.curve
            asked = f"{a}" if a == b else f"{a}..{b}"
            why.append(f"context {asked} outside the measured contexts {c.lo}..{c.hi}")
        return "; ".join(why) or None

    def _missing_error(self, model: ModelSpec, missing: list[Missing]) -> MissingSpecs:
        s = self.settings
        listed = "; ".join(f"{m.spec.key} [{m.phase}, backend {m.backend or '?'}]" for m in missing)
        by_backend: dict[str | None, list[Missing]] = defaultdict(list)
        for m in missing:
            by_backend[m.backend].append(m)
        commands = []
        for backend, group in by_backend.items():
            # context-independent operators are measured once, whatever --context says
            contexts = sorted(
                {max(c, 1) for m in group if m.spec.context_dependent for c in m.contexts}
            )
            specs = " ".join(f"--op-spec '{m.spec.key}'" for m in group)
            context_flag = f"--context {','.join(map(str, contexts))} " if contexts else ""
            commands.append(
                f"latprof sweep {specs} --batch {group[0].batch} {context_flag}"
                f"--dtype {s.dtype} --device {s.device} "
                f"--backend {backend or 'BACKEND'} --mode {s.mode} --out {self.lut.path}"
            )
        hint = ""
        unknown = sorted({m.spec.op for m in missing if m.backend is None})
        if unknown:
            hint = f" (BACKEND: the LUT has no rows for {', '.join(unknown)}, so name its backend)"
        return MissingSpecs(
            f"{self.lut.path} has no {missing[0].phase} rows at batch {missing[0].batch} "
            f"({s.dtype}, {s.device}, {s.mode}) for {len(missing)} operator spec(s) of model "
            f"{model.name!r}, and none to interpolate from: {listed}. Measure them with: "
            + " ; ".join(commands)
            + hint
            + " — or rerun with --measure-missing.",
            missing,
        )

    def estimate(
        self, model: ModelSpec, batch: int = 1, prompt: int = 0, generate: int = 1
    ) -> Estimate:
        """Per-layer and whole-model decode latency of `generate` tokens after `prompt`."""
        _check_query(batch, prompt, generate)
        a, b = prompt, prompt + generate - 1
        embedding, lm_head = self._io_specs(model)
        entries = [(embedding, ()), *((s, tuple(p)) for s, p in model.groups()), (lm_head, ())]
        dtype = self.settings.dtype_name
        rows, missing, extrapolated = [], [], []
        for spec, positions in entries:
            shift = model.meta_tokens if spec.context_dependent else 0
            lookup = self.lookup(spec, "decode", batch)
            if lookup is None:
                contexts = (a + shift, b + shift) if spec.context_dependent else (ANY_CONTEXT,)
                missing.append(Missing(spec, "decode", batch, self.backend_for(spec.op), contexts))
                continue
            curve = lookup.curve
            extra = self._range(spec, lookup, a + shift, b + shift)
            if extra:
                extrapolated.append(f"{spec.key}: {extra}")
            context_interp = not curve.constant and not (a == b and curve.measured_at(a + shift))
            how = "+".join(
                w
                for w, on in (("width", lookup.method != "measured"), ("context", context_interp))
                if on
            )
            floor = None
            if self.bandwidth_gbps:
                floor = spec.bytes_per_step(batch, b + shift, dtype) / (self.bandwidth_gbps * 1e3)
            rows.append(
                LayerEstimate(
                    spec,
                    max(1, len(positions)),
                    positions,
                    lookup.backend,
                    curve.at(a + shift),
                    curve.at(b + shift),
                    curve.sum_range(a + shift, b + shift),
                    floor,
                    how or "measured",
                    extra,
                )
            )
        if missing:
            raise self._missing_error(model, missing)
        if extrapolated and not self.allow_extrapolation:
            raise InputError(
                f"model {model.name!r} needs LUT values outside what was measured: "
                + "; ".join(extrapolated)
                + ". Measure the missing range with `latprof sweep` (wider --context or --widths),"
                " or pass --allow-extrapolation to accept a linear extrapolation (flagged)."
            )
        floors = [r.roofline_us_last for r in rows]
        prefill_us, prefill_note = self._prefill(model, entries, batch, prompt)
        return Estimate(
            model,
            batch,
            prompt,
            generate,
            tuple(rows),
            step_us_first=sum(r.count * r.latency_us_first for r in rows),
            step_us_last=sum(r.count * r.latency_us_last for r in rows),
            decode_us=sum(r.count * r.latency_us_sum for r in rows),
            roofline_step_us_last=None
            if None in floors
            else sum(r.count * r.roofline_us_last for r in rows),
            prefill_us=prefill_us,
            prefill_note=prefill_note,
        )

    def _prefill(self, model, entries, batch: int, prompt: int) -> tuple[float | None, str | None]:
        """Prefill of the prompt (plus meta tokens) from phase=prefill rows, where present."""
        if prompt == 0:
            return None, "no prompt"
        if batch not in self.batches.get("prefill", ()):
            return None, f"the LUT has no prefill rows at batch {batch}"
        n = prompt + model.meta_tokens
        total, missing, outside, interpolated = 0.0, [], [], False
        for spec, positions in entries:
            lookup = self.lookup(spec, "prefill", batch)
            if lookup is None:
                missing.append(spec.key)
                continue
            if self._range(spec, lookup, n, n):
                outside.append(spec.key)
            interpolated |= lookup.method != "measured" or not lookup.curve.measured_at(n)
            total += max(1, len(positions)) * lookup.curve.at(n)
        if missing:
            return None, f"no prefill rows for: {', '.join(missing)}"
        if outside and not self.allow_extrapolation:
            return None, (
                f"prompt length {n} outside the measured prefill range of: "
                f"{', '.join(outside)} (--allow-extrapolation)"
            )
        note = "extrapolated" if outside else ("interpolated" if interpolated else None)
        return total, note

    # ---- fast path for search loops --------------------------------------------------------------
    def _spec_sum(self, model: ModelSpec, spec: OpSpec, batch: int, a: int, b: int):
        """Latency of `spec` summed over contexts a..b; None where the LUT cannot answer
        (missing, or extrapolation not allowed)."""
        shift = model.meta_tokens if spec.context_dependent else 0
        key = (spec, batch, a + shift, b + shift)
        value = self._sums.get(key)
        if value is None:
            lookup = self.lookup(spec, "decode", batch)
            if lookup is None:
                return None
            if not self.allow_extrapolation and self._range(spec, lookup, a + shift, b + shift):
                return None
            value = self._sums[key] = lookup.curve.sum_range(a + shift, b + shift)
        return value

    def decode_latency_us(
        self, model: ModelSpec, batch: int = 1, prompt: int = 0, generate: int = 1
    ) -> float:
        """Total decode latency (µs) of `generate` tokens after `prompt`: the fast path of
        `estimate`, same numbers, no per-layer breakdown.  Raises what `estimate` raises."""
        _check_query(batch, prompt, generate)
        a, b = prompt, prompt + generate - 1
        embedding, lm_head = self._io_specs(model)
        parts = [
            self._spec_sum(model, embedding, batch, a, b),
            self._spec_sum(model, lm_head, batch, a, b),
        ]
        total = 0.0
        for spec, n in model.counts.items():
            value = self._spec_sum(model, spec, batch, a, b)
            if value is None:
                break
            total += n * value
        else:
            if None not in parts:
                return total + parts[0] + parts[1]
        return self.estimate(model, batch, prompt, generate).decode_us  # raises the full error

    def step_latency_us(self, model: ModelSpec, batch: int = 1, context: int = 0) -> float:
        """One decode step at `context` tokens in the cache."""
        return self.decode_latency_us(model, batch, context, 1)

    def decode_latencies_us(
        self, models: Iterable[ModelSpec], batch: int = 1, prompt: int = 0, generate: int = 1
    ) -> list[float]:
        return [self.decode_latency_us(m, batch, prompt, generate) for m in models]

    def throughput_at(
        self, model: ModelSpec, batch: int, prompt: int, generate: int
    ) -> tuple[float | None, str]:
        """Decode tokens/s at `batch`, interpolating the decode latency linearly in batch between
        the nearest measured batches (flagged); (None, why) where it cannot."""
        measured = sorted(self.batches.get("decode", ()))
        if batch in measured:
            pair, how = (batch, batch), f"measured batch {batch}"
        else:
            below, above = [b for b in measured if b < batch], [b for b in measured if b > batch]
            if below and above:
                pair, how = (below[-1], above[0]), "interpolated in batch"
            elif len(below) >= 2 and self.allow_extrapolation:
                pair, how = (below[-2], below[-1]), "extrapolated in batch"
            else:
                return None, (
                    f"batch {batch} is outside the LUT's batches "
                    f"{', '.join(map(str, measured))} (--allow-extrapolation)"
                )
        try:
            lat = [self.decode_latency_us(model, b, prompt, generate) for b in pair]
        except InputError as exc:
            return None, str(exc)
        if pair[0] == pair[1]:
            decode_us = lat[0]
        else:
            t = (batch - pair[0]) / (pair[1] - pair[0])
            decode_us = lat[0] + t * (lat[1] - lat[0])
            how += f" between {pair[0]} and {pair[1]}"
        return batch * generate / (decode_us * 1e-6), how

    def missing_points(self, missing: list[Missing]) -> list[tuple[OpSpec, Setting]]:
        """Grid points measuring what `missing` lacks: its contexts plus the LUT's contexts in
        between (for context-dependent operators), at this estimator's dtype / device / mode."""
        s = self.settings
        points = []
        for m in missing:
            if m.backend is None:
                raise InputError(
                    f"--measure-missing: the LUT has no {m.spec.op} rows, so its backend is "
                    f"unknown; name it with --backend {m.spec.op}=NAME"
                )
            contexts = (
                {max(c, 1) for c in m.contexts} if m.spec.context_dependent else {ANY_CONTEXT}
            )
            if m.spec.context_dependent:
                known = {
                    c
                    for (_, phase, _, _), pts in self._points.items()
                    if phase == m.phase
                    for c in pts
                }
                contexts |= {c for c in known if min(m.contexts) < c < max(m.contexts)}
            for c in sorted(contexts):
                points.append(
                    (m.spec, Setting(m.phase, m.batch, c, s.dtype, s.device, m.backend, s.mode))
                )
        return points


def _overrides(spec: OpSpec) -> tuple:
    return tuple(sorted(spec.overrides().items()))


def _check_query(batch: int, prompt: int, generate: int) -> None:
    for name, value, low in (("batch", batch, 1), ("prompt", prompt, 0), ("generate", generate, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")


# ---- one `latprof estimate` run ------------------------------------------------------------------
@dataclass(frozen=True)
class EstimateRequest:
    """Everything `latprof estimate` was asked (the CLI's flags, parsed)."""

    config: Path
    lut: Path | None = None
    batch: int = 1
    prompt: int = 1024
    generate: int = 128
    context: int | None = None  # memory: tokens in the cache; default prompt + generate
    dtype: str | None = None
    device: str = "auto"
    mode: str | None = None
    backend: str | None = None
    allow_extrapolation: bool = False
    force: bool = False
    measure_missing: bool = False
    memory_only: bool = False
    device_memory_gb: float | None = None


@dataclass
class Report:
    model: ModelSpec
    request: EstimateRequest
    memory: MemoryReport
    estimate: Estimate | None = None
    estimator: Estimator | None = None
    fit: BatchFit | None = None
    fit_tokens_per_s: float | None = None
    fit_note: str | None = None
    measured: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The `--json` document; its schema is documented in docs/estimate.md."""
        m, e, est = self.model, self.estimate, self.estimator
        out: dict[str, Any] = {
            "model": {
                "name": m.name,
                "source": m.source,
                "width": m.width,
                "vocab_size": m.vocab_size,
                "layers": len(m.layers),
                "summary": m.summary(),
                "tied_embeddings": m.tied_embeddings,
                "meta_tokens": m.meta_tokens,
                "params": m.param_count(),
            },
            "query": {
                "batch": self.request.batch,
                "prompt": self.request.prompt,
                "generate": self.request.generate,
                "first_context": self.request.prompt,
                "last_context": self.request.prompt + self.request.generate - 1,
            },
            "lut": None,
            "layers": None,
            "totals": None,
            "interpolated": [],
            "extrapolated": [],
            "memory": self.memory.as_json(),
            "max_batch": None,
            "measured_missing": self.measured,
            "notes": list(m.notes) + self.notes + (est.notes if est else []),
        }
        if est is not None:
            s = est.settings
            out["lut"] = {
                "path": str(est.lut.path),
                "dtype": s.dtype,
                "device": s.device,
                "device_name": s.device_name,
                "mode": s.mode,
                "bandwidth_gbps": est.bandwidth_gbps,
            }
        if e is not None:
            out["layers"] = [r.as_json(e.step_us_last) for r in e.layers]
            out["totals"] = e.totals_json()
            out["interpolated"], out["extrapolated"] = e.interpolated, e.extrapolated
        if self.fit is not None:
            out["max_batch"] = {
                **self.fit.as_json(),
                "tokens_per_s": self.fit_tokens_per_s,
                "throughput_note": self.fit_note,
            }
        return out


def run_estimate(req: EstimateRequest) -> Report:
    """Load the config (and LUT), estimate latency, memory and the largest batch that fits."""
    model = load_model(req.config)
    _check_query(req.batch, req.prompt, req.generate)
    context = req.context if req.context is not None else req.prompt + req.generate
    if req.lut is None:
        if not req.memory_only:
            raise InputError("give --lut LUT for latency, or --memory-only for memory alone")
        dtype = req.dtype or ("float32" if req.device == "cpu" else "bfloat16")
        report = Report(model, req, memory_report(model, req.batch, context, dtype))
    else:
        est = _estimator(req)
        report = Report(
            model,
            req,
            memory_report(model, req.batch, context, est.settings.dtype_name),
            estimator=est,
        )
        if not req.memory_only:
            try:
                report.estimate = est.estimate(model, req.batch, req.prompt, req.generate)
            except MissingSpecs as exc:
                if not req.measure_missing:
                    raise
                report.measured = _measure(est, exc.missing)
                report.notes.append(
                    f"--measure-missing: {len(exc.missing)} spec(s) measured into {est.lut.path}"
                )
                report.estimator = est = _estimator(req)
                report.estimate = est.estimate(model, req.batch, req.prompt, req.generate)
    if req.device_memory_gb is not None:
        _fit(report, context, int(req.device_memory_gb * GB))
    return report


def _estimator(req: EstimateRequest) -> Estimator:
    return Estimator(
        req.lut,
        dtype=req.dtype,
        device=req.device,
        mode=req.mode,
        backend=req.backend,
        allow_extrapolation=req.allow_extrapolation,
        force=req.force,
    )


def _measure(est: Estimator, missing: list[Missing]) -> dict[str, Any]:
    points = est.missing_points(missing)
    from latprof.sweep import measure_points  # imports torch: only here

    return measure_points(points, est.lut.path).as_dict()


def _fit(report: Report, context: int, device_bytes: int) -> None:
    req = report.request
    report.fit = max_batch(report.model, context, report.memory.dtype, device_bytes)
    if report.estimator is None:
        report.fit_note = "no LUT given: throughput needs --lut"
    elif report.fit.batch == 0:
        report.fit_note = "the weights alone do not fit"
    else:
        report.fit_tokens_per_s, report.fit_note = report.estimator.throughput_at(
            report.model, report.fit.batch, req.prompt, req.generate
        )
