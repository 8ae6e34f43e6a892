"""Measure grid points and append them to a LUT.

For each point: build enough independent copies of the operator (weights + static caches) that
their bytes exceed twice the last-level cache, wrap one decode step per copy in a `Workload`, time
it (`latprof.timing`), and append the row at once.  Points already in the LUT are skipped, so a
killed sweep re-run measures only what is missing; the check is repeated under the LUT lock right
before appending, so two sweeps on one LUT never write a row twice.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import latprof
from latprof import device_info, lut
from latprof.errors import InputError
from latprof.lut import Setting
from latprof.ops import block_class, build_block, torch_dtype
from latprof.specs import OpSpec
from latprof.timing import (
    Measurement,
    TimerConfig,
    Workload,
    copies_for,
    interleave_groups,
    time_cpu,
    time_cuda_eager,
    time_cuda_graph,
)

Point = tuple[OpSpec, Setting]
#: total bytes of operator copies one grid point may allocate
COPY_BUDGET_BYTES = {"cpu": 1024**3, "cuda": 8 * 1024**3}
MAX_COPIES = 256
#: CPU points timed together in interleaved rounds: a group's samples spread over its whole
#: duration, so a burst of machine noise costs each row a sample or two instead of biasing the
#: rows that happened to run during it.  Bigger groups dilute bursts better; a killed sweep loses
#: the group in flight, and every copy of a group is held in memory at once.
CPU_GROUP_MAX_POINTS = 24
CPU_GROUP_MAX_BYTES = 6 * 1024**3


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
    wall_s: float = 0.0
    error_messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- building workloads ------------------------------------------------------------------------
def bytes_per_copy(spec: OpSpec, setting: Setting) -> int:
    nbytes = torch.finfo(torch_dtype(setting.dtype)).bits // 8
    state = spec.state_bytes(setting.batch, max_context_for(setting), setting.dtype)
    return spec.param_count() * nbytes + state.total


def max_context_for(setting: Setting) -> int:
    """Cache length a point needs: exactly the context (+1 for the new token), so a cache-length
    dependent kernel does the work of this context and no more."""
    return max(setting.context, 1) + 1


def copies_needed(spec: OpSpec, setting: Setting, llc_bytes: int) -> int:
    budget = COPY_BUDGET_BYTES[setting.device]
    return copies_for(bytes_per_copy(spec, setting), llc_bytes, budget, MAX_COPIES)


def build_workload(spec: OpSpec, setting: Setting, copies: int, seed: int = 0) -> Workload:
    """`copies` independent blocks with their caches, one decode (or prefill) call per step."""
    dtype = torch_dtype(setting.dtype)
    steps: list[Callable[[], object]] = []
    gen = torch.Generator().manual_seed(seed)
    for c in range(copies):
        block = build_block(
            spec, backend=setting.backend, device=setting.device, dtype=dtype, seed=seed + c
        )
        block.eval()
        if setting.phase == "prefill":
            state = block.allocate_state(setting.batch, setting.context)
            x = block.example_sequence(setting.batch, setting.context, gen)
            steps.append(_bind_prefill(block, x, state))
        else:
            state = block.allocate_state(setting.batch, max_context_for(setting))
            x = block.example_input(setting.batch, gen)
            block.randomize_state(state, torch.Generator().manual_seed(1234))
            steps.append(_bind_step(block, x, state, setting.context))
    return Workload(steps)


def _bind_step(block, x, state, pos):
    return lambda: block.step(x, state, pos)


def _bind_prefill(block, x, state):
    return lambda: block.prefill(x, state)


# ---- measuring ---------------------------------------------------------------------------------
def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def lut_row(
    spec: OpSpec,
    setting: Setting,
    env: dict[str, Any],
    copies: int,
    m: Measurement | None,
    status: str,
    error: str = "",
    clocks: tuple = (None, None, None, None),
) -> dict[str, Any]:
    row = lut.spec_columns(spec)
    row.update(setting.as_dict())
    nbytes = spec.bytes_per_step(setting.batch, setting.context, setting.dtype)
    roofline_us = nbytes / (env["bandwidth_gbps"] * 1e3)
    row.update(
        status=status,
        copies=copies,
        threads=env["threads"],
        params=spec.param_count(),
        bytes_per_step=nbytes,
        flops_per_step=spec.flops_per_step(setting.batch, setting.context),
        bandwidth_gbps=env["bandwidth_gbps"],
        roofline_us=roofline_us,
        device_name=env["device_name"],
        error=error[:300] or None,
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


def time_gpu_point(workload: Workload, setting: Setting, config: TimerConfig) -> Measurement:
    timer = time_cuda_graph if setting.mode == "graph" else time_cuda_eager
    m = timer(workload, config)
    if m.cv > config.cv_threshold:
        again = timer(workload, config)
        m = again if again.cv < m.cv else m
        m.flags.append("remeasured")
        if m.cv > config.cv_threshold:
            m.flags.append("noisy")
    return m


def _gpu_throttled(before: float | None, after: float | None) -> bool:
    top = device_info.gpu_max_sm_clock()
    return bool(top and after and after < 0.9 * top)


def measure_group(points: Sequence[Point], env: dict[str, Any], config: TimerConfig) -> list[dict]:
    """Measure points (CPU: together, in interleaved rounds; CUDA: one at a time) -> LUT rows."""
    rows: list[dict | None] = [None] * len(points)
    ready: list[tuple[int, Workload, int]] = []
    for i, (spec, setting) in enumerate(points):
        copies = copies_needed(spec, setting, env["llc_bytes"])
        try:
            workload = build_workload(spec, setting, copies)
            if setting.device == "cuda":
                before = device_info.gpu_clocks()
                m = time_gpu_point(workload, setting, config)
                after = device_info.gpu_clocks()
                if _gpu_throttled(before[0], after[0]):
                    m.flags.append("throttled")
                rows[i] = lut_row(spec, setting, env, copies, m, "ok", clocks=(*before, *after))
                del workload
            else:
                ready.append((i, workload, copies))
        except InputError:
            raise
        except Exception as exc:  # recorded per point: one bad point must not end the sweep
            rows[i] = _failure_row(spec, setting, env, copies, exc)
        finally:
            if setting.device == "cuda":
                torch.cuda.empty_cache()
    if ready:
        try:
            ms = time_cpu([w for _, w, _ in ready], config)
            for (i, _, copies), m in zip(ready, ms, strict=True):
                rows[i] = lut_row(*points[i], env, copies, m, "ok")
        except Exception as exc:
            for i, _, copies in ready:
                rows[i] = _failure_row(*points[i], env, copies, exc)
    ready.clear()
    gc.collect()
    return [r for r in rows if r is not None]


def _failure_row(spec, setting, env, copies, exc: BaseException) -> dict:
    status = "oom" if _is_oom(exc) else "error"
    return lut_row(spec, setting, env, copies, None, status, error=f"{type(exc).__name__}: {exc}")


# ---- the sweep ---------------------------------------------------------------------------------
def environment(device: str, threads: int | None = None) -> dict[str, Any]:
    """Device facts every row and the provenance sidecar carry.  Fixes the CPU thread count."""
    if device == "cpu":
        torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
        torch.set_flush_denormal(True)
    bandwidth, source = device_info.memory_bandwidth_gbps(device)
    return {
        "device": device,
        "device_name": device_info.device_name(device),
        "device_properties": device_info.device_properties(device),
        "llc_bytes": device_info.last_level_cache_bytes(device),
        "bandwidth_gbps": round(bandwidth, 1),
        "bandwidth_source": source,
        "threads": torch.get_num_threads() if device == "cpu" else None,
    }


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


def existing_keys(lut_path: Path) -> set[tuple]:
    """Keys of rows already measured (ok or oom: an OOM point would only OOM again)."""
    if not lut_path.exists() or lut_path.stat().st_size == 0:
        return set()
    return {lut.key_of_row(r) for r in lut.read_rows(lut_path) if r.get("status") in ("ok", "oom")}


def check_backends(points: Iterable[Point]) -> None:
    """Every (op, backend, device) of the grid must be able to run here; say why not, up front."""
    seen = set()
    for spec, setting in points:
        key = (spec.op, setting.backend, setting.device)
        if key in seen:
            continue
        seen.add(key)
        cls = block_class(spec.op)
        reason = cls.backend_unavailable(setting.backend, torch.device(setting.device))
        if reason:
            raise InputError(f"{spec.op}: backend {setting.backend!r} cannot run here: {reason}")
        if setting.mode == "graph" and not cls.graph_capturable:
            raise InputError(
                f"{spec.op}: its {setting.backend!r} step synchronises with the host, so it cannot "
                "be captured in a CUDA graph; measure it in a sweep of its own with --mode eager"
            )


def plan_groups(points: Sequence[Point], llc_bytes: int) -> list[list[Point]]:
    """CPU points in groups timed together (interleaved), bounded in count and in the bytes of
    their operator copies; CUDA points one by one (a GPU does not drift like a shared CPU)."""
    if points and points[0][1].device != "cpu":
        return [[p] for p in points]

    def held(point: Point) -> int:
        return bytes_per_copy(*point) * copies_needed(*point, llc_bytes)

    return interleave_groups(points, held, CPU_GROUP_MAX_POINTS, CPU_GROUP_MAX_BYTES)


def run_sweep(
    points: Sequence[Point],
    lut_path: str | Path,
    *,
    threads: int | None = None,
    config: TimerConfig | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    command: str = "",
) -> SweepSummary:
    """Measure every point not yet in `lut_path`, appending rows as they are measured."""
    t0 = time.perf_counter()
    lut_path = Path(lut_path)
    if not points:
        raise InputError("the sweep grid is empty: no operator x setting to measure")
    devices = {s.device for _, s in points}
    if len(devices) != 1:
        raise InputError(f"one sweep measures one device, got {sorted(devices)}")
    device = devices.pop()
    check_backends(points)
    env = environment(device, threads)
    config = config or TimerConfig.for_device(device)
    summary = SweepSummary(str(lut_path), env["device_name"], points_total=len(points))
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
        },
    )
    done = existing_keys(lut_path)
    todo = [p for p in points if lut.row_key(p[0].key, p[1]) not in done]
    summary.skipped_existing = len(points) - len(todo)
    finished = 0
    for group in plan_groups(todo, env["llc_bytes"]):
        if on_progress:
            on_progress(finished, len(todo), f"{group[0][0].op} w{group[0][0].width}")
        with lut.locked(lut_path):  # another sweep may have measured some meanwhile
            done = existing_keys(lut_path)
        group = [p for p in group if lut.row_key(p[0].key, p[1]) not in done]
        rows = measure_group(group, env, config) if group else []
        with lut.locked(lut_path):
            done = existing_keys(lut_path)
            fresh = [r for r in rows if lut.key_of_row(r) not in done]
            lut.append_rows_locked(lut_path, fresh)
        for r in fresh:
            summary.measured += 1
            summary.oom += r["status"] == "oom"
            summary.errors += r["status"] == "error"
            summary.noisy += "noisy" in (r.get("flags") or "")
            if r["status"] == "error":
                summary.error_messages.append(f"{r['spec']}: {r['error']}")
        finished += len(group)
    if on_progress:
        on_progress(len(todo), len(todo), "done")
    summary.wall_s = round(time.perf_counter() - t0, 2)
    return summary


def measure_points(points: Sequence[Point], lut_path: str | Path, **kwargs: Any) -> SweepSummary:
    """Library entry point for `estimate --measure-missing` and `compare`: measure these points."""
    return run_sweep(points, lut_path, **kwargs)
