"""Measure grid points and append them to a LUT.

Each point is an `OperatorTarget` measured by `latprof.measure` (copies beyond twice the
last-level cache, CPU groups in interleaved rounds or one CUDA graph per point, the re-measure
policy); each group's rows are appended as soon as it is measured.  Points already in the LUT are
skipped, so a killed sweep re-run measures only what is missing; the check is repeated under the
LUT lock right before appending, so two sweeps on one LUT never write a row twice.

Two sweeps on one LUT split the work: each claims a group's points before measuring them
(`latprof.claims`), skips points another holds, and at the end waits for those, taking any whose
claim lapsed.  Rows carry the CPU time other processes used while their group was timed
(`latprof.cpu_load`, flag `loaded`) and a `concurrent` flag when another sweep was timing the same
device.  An oom row counts as measured unless `retry_oom`.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import latprof
from latprof import lut
from latprof.claims import WAIT_POLL_S, ActiveSweep, Claims, device_id
from latprof.cpu_load import CpuLoad, Load
from latprof.errors import InputError
from latprof.grid import Point
from latprof.measure import OperatorTarget, Result, environment, measure, plan_groups
from latprof.timing import TimerConfig


@dataclass
class SweepSummary:
    lut_path: str
    device_name: str
    points_total: int = 0
    skipped_existing: int = 0
    measured: int = 0
    oom: int = 0
    errors: int = 0
    noisy: int = 0
    loaded: int = 0  # rows timed while other processes used the CPU (`latprof.cpu_load`)
    concurrent: int = 0  # rows timed while another sweep timed this device (`latprof.claims`)
    wall_s: float = 0.0
    error_messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- rows ------------------------------------------------------------------------------------
def lut_row(result: Result, env: dict[str, Any]) -> dict[str, Any]:
    """The LUT row of one measured operator target (ok, oom or error)."""
    spec, setting = result.target.spec, result.target.setting
    m, copies, clocks = result.measurement, result.copies, result.clocks
    row = lut.spec_columns(spec)
    row.update(setting.as_dict())
    nbytes = spec.bytes_per_step(setting.batch, setting.context, setting.dtype)
    roofline_us = nbytes / (env["bandwidth_gbps"] * 1e3)
    row.update(
        status=result.status,
        copies=copies,
        threads=env["threads"],
        params=spec.param_count(),
        bytes_per_step=nbytes,
        flops_per_step=spec.flops_per_step(setting.batch, setting.context),
        bandwidth_gbps=env["bandwidth_gbps"],
        roofline_us=roofline_us,
        device_name=env["device_name"],
        error=result.error[:300] or None,
        measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        sm_clock_mhz_before=clocks[0],
        temp_c_before=clocks[1],
        sm_clock_mhz_after=clocks[2],
        temp_c_after=clocks[3],
    )
    if setting.phase == "prefill":  # the roofline of a prefill is not a decode step's
        row.update(roofline_us=None, bytes_per_step=None)
    if m is not None:
        median = m.median_us
        row.update(
            latency_us_median=median,
            latency_us_p10=m.quantile_us(0.1),
            latency_us_p90=m.quantile_us(0.9),
            latency_cv=m.cv,
            samples=len(m.samples_us),
            steps_per_sample=m.steps_per_sample,
            flags=";".join(m.flags) or None,
        )
        if row["bytes_per_step"]:
            row.update(
                achieved_gbps=nbytes / (median * 1e3), pct_of_roofline=100.0 * roofline_us / median
            )
    return row


def _key(target: OperatorTarget) -> tuple:
    return lut.row_key(target.spec.key, target.setting)


def _measure_group(
    group: list[OperatorTarget],
    env: dict[str, Any],
    config: TimerConfig,
    lut_path: Path,
    retry_oom: bool,
    active: ActiveSweep,
    claims: Claims,
) -> list[dict[str, Any]]:
    """Measure one claimed group and append its rows (those nobody appended meanwhile); the
    rows carry the CPU load of others during the group and a `concurrent` flag when another
    sweep was timing this device."""
    if not group:
        return []
    concurrent = active.check()
    load = CpuLoad() if env["device"] == "cpu" else None
    if load:
        load.start()
    try:
        results = measure(group, env["llc_bytes"], config)
        busy = load.stop() if load else None
        concurrent = active.check() or concurrent
        rows = [_flag(lut_row(r, env), busy, concurrent) for r in results]
        with lut.locked(lut_path):
            done = existing_keys(lut_path, retry_oom)
            fresh = [r for r in rows if lut.key_of_row(r) not in done]
            lut.append_rows_locked(lut_path, fresh)
            claims.release(_key(t) for t in group)
    except BaseException:
        with lut.locked(lut_path):
            claims.release(_key(t) for t in group)
        raise
    return fresh


def _flag(row: dict[str, Any], busy: Load | None, concurrent: bool) -> dict[str, Any]:
    flags = [f for f in (row.get("flags") or "").split(";") if f]
    if busy is not None:
        row.update(other_cpu_cores=busy.other_cores, steal_pct=busy.steal_pct)
        if busy.loaded:
            flags.append("loaded")
    if concurrent:
        flags.append("concurrent")
    row["flags"] = ";".join(flags) or None
    return row


def _count(summary: SweepSummary, fresh: list[dict[str, Any]]) -> None:
    for r in fresh:
        summary.measured += 1
        summary.oom += r["status"] == "oom"
        summary.errors += r["status"] == "error"
        summary.noisy += "noisy" in (r.get("flags") or "")
        summary.loaded += "loaded" in (r.get("flags") or "")
        summary.concurrent += "concurrent" in (r.get("flags") or "")
        if r["status"] == "error":
            summary.error_messages.append(f"{r['spec']}: {r['error']}")


# ---- the sweep ---------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {
        "latprof": latprof.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }
    for name in ("triton", "fla", "mamba_ssm", "flash_attn"):
        try:
            from importlib.metadata import version

            dist = {"fla": "fla-core", "mamba_ssm": "mamba-ssm", "flash_attn": "flash-attn"}
            out[name] = version(dist.get(name, name))
        except Exception:
            out[name] = None
    return out


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        res = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def existing_keys(lut_path: Path, retry_oom: bool = False) -> set[tuple]:
    """Keys of rows already measured: ok, and oom (an OOM point would only OOM again) unless
    `retry_oom`.  A LUT with rows that fail validation is refused (`LUT.load`)."""
    if not lut_path.exists() or lut_path.stat().st_size == 0:
        return set()
    done = ("ok",) if retry_oom else ("ok", "oom")
    table = lut.LUT.load(lut_path)
    return {key for key, r in table.index.items() if r.get("status") in done}


def run_sweep(
    points: Sequence[Point],
    lut_path: str | Path,
    *,
    threads: int | None = None,
    config: TimerConfig | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    command: str = "",
    run_info: dict[str, Any] | None = None,
    retry_oom: bool = False,
) -> SweepSummary:
    """Measure every point not yet in `lut_path`, appending rows as they are measured.
    `run_info` is added to this run's provenance (e.g. the shard, `latprof.shard.provenance`)."""
    t0 = time.perf_counter()
    lut_path = Path(lut_path)
    if not points:
        raise InputError("the sweep grid is empty: no operator x setting to measure")
    devices = {s.device for _, s in points}
    if len(devices) != 1:
        raise InputError(f"one sweep measures one device, got {sorted(devices)}")
    device = devices.pop()
    targets = {(spec.key, setting): OperatorTarget(spec, setting) for spec, setting in points}
    for target in targets.values():
        target.check()  # every backend can run here, up front
    env = environment(device, threads)
    config = config or TimerConfig.for_device(device)
    summary = SweepSummary(str(lut_path), env["device_name"], points_total=len(points))
    done = existing_keys(lut_path, retry_oom)  # a LUT that fails validation: refused first
    lut.record_run(
        lut_path,
        {
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "device": device,
            "device_name": env["device_name"],
            "device_properties": env["device_properties"],
            "bandwidth_gbps": env["bandwidth_gbps"],
            "bandwidth_source": env["bandwidth_source"],
            "threads": env["threads"],
            "timer": config.__dict__,
            "versions": versions(),
            "points": len(points),
            "host": platform.node(),
            **(run_info or {}),
        },
    )
    todo = [p for p in points if lut.row_key(p[0].key, p[1]) not in done]
    summary.skipped_existing = len(points) - len(todo)
    finished = 0
    pending = [targets[(spec.key, setting)] for spec, setting in todo]
    claims, waited = Claims(lut_path), False
    with ActiveSweep(device_id(device), str(lut_path)) as active:
        while pending:  # a pass over what is left; then wait for points other sweeps hold
            for group in plan_groups(pending, env["llc_bytes"]):
                if on_progress:
                    on_progress(finished, len(todo), group[0].label)
                with lut.locked(lut_path):  # another sweep may have measured or claimed some
                    done = existing_keys(lut_path, retry_oom)
                    group = [t for t in group if _key(t) not in done]
                    mine = claims.take(_key(t) for t in group)
                group = [t for t in group if _key(t) in mine]
                fresh = _measure_group(group, env, config, lut_path, retry_oom, active, claims)
                _count(summary, fresh)
                finished += len(group)
                attempted = {_key(t) for t in group}
                pending = [t for t in pending if _key(t) not in attempted]
            with lut.locked(lut_path):
                done = existing_keys(lut_path, retry_oom)
                held = claims.held_by_others()
            pending = [t for t in pending if _key(t) not in done]
            if pending and not any(_key(t) in held for t in pending):
                continue  # claims lapsed (a sweep was killed): take them now
            if pending:
                if not waited:
                    print(
                        f"latprof: waiting for {len(pending)} point(s) another sweep on {lut_path} "
                        "is measuring",
                        file=sys.stderr,
                    )
                    waited = True
                time.sleep(WAIT_POLL_S)  # another sweep is measuring them
    if on_progress:
        on_progress(len(todo), len(todo), "done")
    summary.wall_s = round(time.perf_counter() - t0, 2)
    return summary
