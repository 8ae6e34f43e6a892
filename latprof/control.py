"""The same-session control of `latprof compare --same-session`.

A LUT is measured at one time and a whole model at another; on a shared machine the two moments can
differ by 10-20% in memory bandwidth (BENCHMARKS.md, repeatability).  That drift is not an error of
the LUT *method*, but it shows up in the comparison.  The control removes it: for each model, the
operator rows its estimate needs and the whole model itself are timed together, in the same
interleaved rounds, and the estimate summed from those fresh rows is set beside the same
measurement.  What remains of the error is what summing per-operator latencies misses.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latprof import lut
from latprof.e2e import E2EPoint
from latprof.lut import Setting
from latprof.specs import OpSpec
from latprof.timing import Measurement, TimerConfig


def measure_together(
    op_points: Sequence[tuple[OpSpec, Setting]],
    e2e_points: Sequence[E2EPoint],
    env: dict[str, Any],
    config: TimerConfig,
) -> tuple[list[dict[str, Any]], list[Measurement]]:
    """Time operator rows and whole models in one group -> (LUT rows, end-to-end measurements).

    On a CPU all workloads share interleaved rounds; on a GPU each is timed on its own, in order."""
    from latprof import e2e, sweep
    from latprof.timing import time_cpu

    llc = env["llc_bytes"]
    op_loads = []
    for spec, setting in op_points:
        copies = sweep.copies_needed(spec, setting, llc)
        op_loads.append((sweep.build_workload(spec, setting, copies), copies))
    for p in e2e_points:
        e2e.check_point(p)
    e2e_loads = [e2e.build_workload(p, e2e.copies_needed(p, llc)) for p in e2e_points]
    if env["device"] == "cpu":
        ms = time_cpu([w for w, _ in op_loads] + e2e_loads, config)
        op_ms, e2e_ms = ms[: len(op_loads)], ms[len(op_loads) :]
    else:
        op_ms = [
            sweep.time_gpu_point(w, s, config)
            for (w, _), (_, s) in zip(op_loads, op_points, strict=True)
        ]
        e2e_ms = e2e.time_gpu_models(e2e_loads, e2e_points, config)
    rows = [
        sweep.lut_row(spec, setting, env, copies, m, "ok")
        for (spec, setting), (_, copies), m in zip(op_points, op_loads, op_ms, strict=True)
    ]
    return rows, e2e_ms


def estimates_from_rows(
    rows: list[dict[str, Any]],
    env: dict[str, Any],
    model,
    batch: int,
    contexts: Sequence[int],
    estimator_kwargs: dict[str, Any],
) -> dict[int, float]:
    """Step latency of `model` at each context, summed by the estimator from `rows` alone."""
    from latprof.estimate import Estimator

    with tempfile.TemporaryDirectory(prefix="latprof-control-") as tmp:
        path = Path(tmp) / "control.csv"
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        lut.record_run(
            path,
            {
                "started_at": now,
                "device_name": env["device_name"],
                "device": env["device"],
                "bandwidth_gbps": env["bandwidth_gbps"],
            },
        )
        lut.append_rows(path, rows)
        est = Estimator(path, **estimator_kwargs)
        return {c: est.step_latency_us(model, batch, c) for c in contexts}
