"""Error and ranking statistics for estimate-vs-measurement comparisons (torch-free, no scipy)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def relative_error_pct(estimate: float, measured: float) -> float:
    """(estimate - measured) / measured, in percent: positive = the LUT sum over-estimates."""
    return 100.0 * (estimate - measured) / measured


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the ranks."""
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else float("nan")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def discordant_pairs(
    estimates: Sequence[float], measured: Sequence[float]
) -> list[tuple[int, int]]:
    """Index pairs whose order the estimate gets wrong (ties excluded)."""
    n = len(estimates)
    return [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if (estimates[i] - estimates[j]) * (measured[i] - measured[j]) < 0
    ]


def error_summary(estimates: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Mean / median / worst |error| %, share within ±5% and ±10%, Kendall tau, Spearman rho,
    and the discordant pairs: how many, and the widest measured gap (%) between the two models of
    one (a ranking error between near-ties is measurement noise; one across a wide gap is not)."""
    if len(estimates) != len(measured) or not estimates:
        raise ValueError("need matching, non-empty estimate and measurement lists")
    errors = [relative_error_pct(e, m) for e, m in zip(estimates, measured, strict=True)]
    abs_err = [abs(e) for e in errors]
    worst = max(range(len(errors)), key=lambda i: abs_err[i])
    n = len(errors)
    flipped = discordant_pairs(estimates, measured)
    gaps = [abs(measured[i] - measured[j]) / min(measured[i], measured[j]) for i, j in flipped]
    return {
        "n": n,
        "mean_abs_error_pct": statistics.fmean(abs_err),
        "median_abs_error_pct": statistics.median(abs_err),
        "mean_error_pct": statistics.fmean(errors),
        "worst_error_pct": errors[worst],
        "worst_index": worst,
        "within_5pct": sum(a <= 5 for a in abs_err) / n,
        "within_10pct": sum(a <= 10 for a in abs_err) / n,
        "kendall_tau": kendall_tau(estimates, measured) if n > 1 else float("nan"),
        "spearman_rho": spearman_rho(estimates, measured) if n > 1 else float("nan"),
        "discordant_pairs": len(flipped),
        "pairs": n * (n - 1) // 2,
        "max_discordant_gap_pct": 100 * max(gaps) if gaps else 0.0,
    }
