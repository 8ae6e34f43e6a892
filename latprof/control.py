"""The same-session control of `latprof compare --same-session`.

A LUT is measured at one time and a whole model at another; on a shared machine the two moments can
differ by 10-20% in memory bandwidth (BENCHMARKS.md, repeatability).  That drift is not an error of
the LUT *method*, but it shows up in the comparison.  The control removes it: for each model, the
operator rows its estimate needs and the whole model itself are timed together, in the same
interleaved rounds, and the estimate summed from those fresh rows is set beside the same
measurement.  What remains of the error is what summing per-operator latencies misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latprof.e2e import ModelTarget, model_measurements
from latprof.estimate import Estimator
from latprof.grid import Point
from latprof.lut import LUT
from latprof.measure import OperatorTarget, measure
from latprof.sweep import lut_row
from latprof.timing import Measurement, TimerConfig


def measure_together(
    op_points: Sequence[Point],
    model_targets: Sequence[ModelTarget],
    env: dict[str, Any],
    config: TimerConfig,
) -> tuple[list[dict[str, Any]], list[Measurement]]:
    """Time operator rows and whole models as one group of the measurement path -> (LUT rows,
    whole-model measurements).  On a CPU they share interleaved rounds; on a GPU each is timed on
    its own, in order."""
    op_targets = [OperatorTarget(spec, setting) for spec, setting in op_points]
    results = measure([*op_targets, *model_targets], env["llc_bytes"], config)
    rows = [lut_row(r, env) for r in results[: len(op_targets)]]
    return rows, model_measurements(results[len(op_targets) :])


def estimates_from_rows(
    rows: list[dict[str, Any]],
    env: dict[str, Any],
    model,
    batch: int,
    contexts: Sequence[int],
    estimator_kwargs: dict[str, Any],
) -> dict[int, float]:
    """Step latency of `model` at each context, summed by the estimator from `rows` alone (a LUT
    held in memory)."""
    provenance = {"device_name": env["device_name"], "bandwidth_gbps": env["bandwidth_gbps"]}
    est = Estimator(LUT.from_rows(rows, provenance, "<same-session rows>"), **estimator_kwargs)
    return {c: est.step_latency_us(model, batch, c) for c in contexts}
