"""A LUT as latency curves: for one spec at one (phase, batch), the LUT's curve in context.

Rows are indexed once, at one dtype / device / mode (`resolve_settings`).  A spec the LUT lacks is
interpolated between the two nearest measured widths of its family (same operator, same
`spec.overrides()`), linearly in the parameter count: decode is bound by weight bytes, so latency
is close to affine in them.  Beyond the measured widths it is extrapolated, and the `Lookup` says
so."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from latprof.errors import InputError
from latprof.estimate.curve import Curve
from latprof.estimate.lut_selection import BackendChoice, resolve_settings, usable_row
from latprof.lut import ANY_CONTEXT, LUT
from latprof.registry import PREFILL_BACKEND, spec_from_key
from latprof.settings import BackendRequest
from latprof.specs import OpSpec


@dataclass(frozen=True)
class Lookup:
    """How the LUT answers for one spec at one (phase, batch)."""

    curve: Curve
    backend: str
    method: str  # measured | width-interpolated | width-extrapolated
    widths: tuple[int, ...] = ()  # the measured widths used by width interpolation

    def extrapolation(self, width: int, a: int, b: int) -> str | None:
        """Why contexts a..b (and the spec's `width`) are extrapolation, or None."""
        why = []
        if self.method == "width-extrapolated":
            lo, hi = self.widths
            why.append(f"width {width} outside the measured widths {lo}..{hi}")
        if not self.curve.covers(a, b):
            c = self.curve
            asked = f"{a}" if a == b else f"{a}..{b}"
            why.append(f"context {asked} outside the measured contexts {c.lo}..{c.hi}")
        return "; ".join(why) or None


class LatencyTable:
    """One LUT's successful rows at one dtype / device / mode, answering `lookup` per spec.

    `backend`: as for `BackendChoice`; an operator with several backends in the LUT and none
    chosen is an error.  `force` accepts a LUT of other settings or backends (see `notes`).
    """

    def __init__(
        self,
        lut: LUT | str | Path,
        *,
        dtype: str | None = None,
        device: str | None = "auto",
        mode: str | None = None,
        backend: str | dict[str, str] | BackendRequest | None = None,
        force: bool = False,
    ) -> None:
        self.lut = lut if isinstance(lut, LUT) else LUT.load(lut)
        self.settings = s = resolve_settings(self.lut, dtype, device, mode, force)
        # (spec key, phase, batch, backend) -> {context: latency_us}
        self._points: dict[tuple[str, str, int, str], dict[int, float]] = defaultdict(dict)
        available: dict[tuple[str, str], set[str]] = defaultdict(set)  # (op, phase) -> backends
        self.batches: dict[str, set[int]] = defaultdict(set)  # phase -> batches
        bandwidths: Counter[float] = Counter()
        for row in self.lut.index.values():  # later rows (re-measurements) already won
            if not usable_row(row) or row["device"] != s.device or row["mode"] != s.mode:
                continue
            if row["dtype"] != s.dtype:
                continue
            self._points[(row["spec"], row["phase"], row["batch"], row["backend"])][
                row["context"]
            ] = row["latency_us_median"]
            available[(row["op"], row["phase"])].add(row["backend"])
            self.batches[row["phase"]].add(row["batch"])
            if row.get("bandwidth_gbps"):
                bandwidths[row["bandwidth_gbps"]] += 1
        if bandwidths:
            self.bandwidth_gbps: float | None = bandwidths.most_common(1)[0][0]
        else:
            self.bandwidth_gbps = self.lut.provenance.get("bandwidth_gbps")
        self.backends = BackendChoice(backend, available, self.lut.path, force)
        self._lookups: dict[tuple[OpSpec, str, int], Lookup | None] = {}
        self._families: dict[tuple, list[tuple[int, str, OpSpec]]] | None = None

    @property
    def notes(self) -> list[str]:
        """What `force` overrode: settings first, then backends (as they were chosen)."""
        return [*self.settings.notes, *self.backends.notes]

    def backend_for(self, op: str) -> str | None:
        """The backend whose rows are used for `op`; None if the LUT has no rows for it."""
        return self.backends.for_op(op)

    def contexts(self, phase: str) -> set[int]:
        """Every context measured at `phase`, any spec, batch or backend."""
        return {c for (_, p, _, _), pts in self._points.items() if p == phase for c in pts}

    def lookup(self, spec: OpSpec, phase: str, batch: int) -> Lookup | None:
        """The LUT's latency curve for `spec`, measured or interpolated in width; None if the
        LUT has nothing to answer with."""
        cache_key = (spec, phase, batch)
        if cache_key in self._lookups:
            return self._lookups[cache_key]
        backend = self.backend_for(spec.op)
        if phase == "prefill" and backend is not None:
            backend = (
                PREFILL_BACKEND  # every block's prefill runs the PyTorch path (its rows say so)
            )
        result = None
        if backend is not None:
            const = phase == "decode" and not spec.context_dependent
            curve = self._measured(spec.key, const, phase, batch, backend)
            if curve is not None:
                result = Lookup(curve, backend, "measured")
            else:
                result = self._width_lookup(spec, const, phase, batch, backend)
        cap = spec.decode_context_cap() if phase == "decode" else None
        if result is not None and cap is not None:
            result = Lookup(result.curve.capped(cap), result.backend, result.method, result.widths)
        self._lookups[cache_key] = result
        return result

    def _measured(self, key: str, const: bool, phase: str, batch: int, backend: str):
        points = self._points.get((key, phase, batch, backend))
        if not points:
            return None
        if const:
            value = points.get(ANY_CONTEXT)
            return None if value is None else Curve.const(value)
        xs = sorted(points)
        return Curve(xs, [points[x] for x in xs])

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


def _overrides(spec: OpSpec) -> tuple:
    return tuple(sorted(spec.overrides().items()))
