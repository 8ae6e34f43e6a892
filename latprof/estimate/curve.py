"""Piecewise-linear latency curves: one spec's LUT latency as a function of context.

Linear between measured contexts, and beyond them along the end segments (extrapolation, which
`Curve.covers` lets the caller flag).  `sum_range` sums a curve over a run of integer contexts
exactly, which is how a decode of T tokens is estimated without T look-ups."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from latprof.lut import ANY_CONTEXT


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

    def capped(self, cap: int) -> Curve:
        """This curve read at min(context, cap): flat from `cap` on (a sliding window)."""
        return self if self.constant else CappedCurve(self, cap)

    def blend(self, other: Curve, t: float) -> Curve:
        """(1 - t) * self + t * other; the measured range is the intersection of both."""
        if self.constant and other.constant:
            return Curve.const((1 - t) * self.ys[0] + t * other.ys[0])
        xs = sorted({*(() if self.constant else self.xs), *(() if other.constant else other.xs)})
        out = Curve(xs, [(1 - t) * self.at(x) + t * other.at(x) for x in xs])
        ranged = [c for c in (self, other) if not c.constant]
        out.lo, out.hi = max(c.lo for c in ranged), min(c.hi for c in ranged)
        return out


class CappedCurve(Curve):
    """A curve whose operator costs the same at every context from `cap` on (a sliding-window
    attention layer): read at min(context, cap), so rows measured up to the cap cover every
    longer context."""

    __slots__ = ("base", "cap")

    def __init__(self, base: Curve, cap: int) -> None:
        super().__init__(base.xs, base.ys)
        self.base, self.cap = base, cap
        self.lo, self.hi = base.lo, base.hi

    def at(self, c: float) -> float:
        return self.base.at(min(c, self.cap))

    def covers(self, a: int, b: int) -> bool:
        return self.base.covers(min(a, self.cap), min(b, self.cap))

    def measured_at(self, c: int) -> bool:
        return self.base.measured_at(min(c, self.cap))

    def sum_range(self, a: int, b: int) -> float:
        if b <= self.cap:
            return self.base.sum_range(a, b)
        flat = self.base.at(self.cap)
        if a >= self.cap:
            return flat * (b - a + 1)
        return self.base.sum_range(a, self.cap) + flat * (b - self.cap)

    def blend(self, other: Curve, t: float) -> Curve:
        if isinstance(other, CappedCurve) and other.cap == self.cap:
            return self.base.blend(other.base, t).capped(self.cap)
        return Curve.blend(self, other, t)
