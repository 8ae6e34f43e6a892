"""Timers: how a decode step's latency is measured (DESIGN.md, "Timing").

A `Workload` runs one decode step per call, rotating among independent copies of the operator
(weights + state) so that their bytes exceed twice the last-level cache: a step never finds its
weights in cache, as inside a whole model.

- CPU (`time_cpu`): warm-up, then interleaved rounds over all workloads of a group (a drifting
  machine spreads over every row instead of biasing some), each sample `perf_counter_ns` over
  enough steps to last `min_sample_s`; median / p10 / p90 / coefficient of variation.
- CUDA graph (`time_cuda_graph`): static buffers, warm-up on a side stream (Triton compiles and
  autotunes there), one graph holding K consecutive steps, replayed R times between CUDA events;
  per-step time = replay time / K.
- CUDA eager (`time_cuda_eager`): the same K steps launched one by one, timed with CUDA events.

One re-measure policy for every device and target (`keep_steadier`, `flag_if_noisy`): a sample
set whose coefficient of variation exceeds `cv_threshold` is measured again, up to
`max_remeasure` times; the steadier set is kept and flagged `remeasured`, and `noisy` if it is
still above the threshold.  On a CPU the noisy members of a group are re-measured together, in
rounds of their own (`time_cpu`); on a GPU one target at a time (`remeasured_if_noisy`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass
class TimerConfig:
    warmup_steps: int = 3
    samples: int = 21
    min_sample_s: float = 0.010
    cv_threshold: float = 0.10
    max_remeasure: int = 2
    graph_steps: int = 16  # K: decode steps captured in one graph (at least one per copy)

    @classmethod
    def for_device(cls, device: str) -> TimerConfig:
        if device == "cuda":
            return cls(warmup_steps=5, samples=30, cv_threshold=0.03, graph_steps=16)
        return cls()


@dataclass
class Measurement:
    samples_us: list[float]  # per-step latency of each sample, microseconds
    steps_per_sample: int
    flags: list[str] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)

    def quantile_us(self, q: float) -> float:
        xs = sorted(self.samples_us)
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def cv(self) -> float:
        if len(self.samples_us) < 2:
            return 0.0
        return statistics.stdev(self.samples_us) / statistics.mean(self.samples_us)


class Workload:
    """One grid point ready to time: `step()` runs one decode step on the next copy."""

    def __init__(self, steps: Sequence[Callable[[], object]]) -> None:
        if not steps:
            raise ValueError("a workload needs at least one copy")
        self._steps = list(steps)
        self._next = 0

    @property
    def copies(self) -> int:
        return len(self._steps)

    def step(self) -> None:
        self._steps[self._next]()
        self._next = (self._next + 1) % len(self._steps)


# ---- the re-measure policy --------------------------------------------------------------------
def keep_steadier(first: Measurement, again: Measurement) -> Measurement:
    """Of a measurement and its re-measurement, the one with the lower cv, flagged remeasured."""
    best = again if again.cv < first.cv else first
    if "remeasured" not in best.flags:
        best.flags.append("remeasured")
    return best


def flag_if_noisy(m: Measurement, config: TimerConfig) -> Measurement:
    if m.cv > config.cv_threshold and "noisy" not in m.flags:
        m.flags.append("noisy")
    return m


def remeasured_if_noisy(measure_once: Callable[[], Measurement], config: TimerConfig):
    """Measure once, then again while the cv exceeds the threshold (at most `max_remeasure`
    times), keeping the steadier; flag what stays noisy."""
    m = measure_once()
    for _ in range(config.max_remeasure):
        if m.cv <= config.cv_threshold:
            break
        m = keep_steadier(m, measure_once())
    return flag_if_noisy(m, config)


def copies_for(bytes_per_copy: int, llc_bytes: int, budget_bytes: int, max_copies: int) -> int:
    """Copies to rotate so their bytes exceed twice the last-level cache, within a memory budget
    and a count limit (always at least one)."""
    per_copy = max(1, bytes_per_copy)
    wanted = -(-2 * llc_bytes // per_copy)
    affordable = max(1, budget_bytes // per_copy)
    return int(max(1, min(wanted, affordable, max_copies)))


# ---- CPU ------------------------------------------------------------------------------------
def interleave_groups(
    items: Sequence[T], nbytes: Callable[[T], int], max_items: int, max_bytes: int
) -> list[list[T]]:
    """Consecutive groups of items to time together in interleaved rounds, each at most
    `max_items` long and (beyond its first item) at most `max_bytes` of operator copies held."""
    groups: list[list[T]] = []
    held = 0
    for item in items:
        size = nbytes(item)
        if not groups or len(groups[-1]) >= max_items or held + size > max_bytes:
            groups.append([])
            held = 0
        groups[-1].append(item)
        held += size
    return groups


def _cpu_sample_us(workload: Workload, steps: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(steps):
        workload.step()
    return (time.perf_counter_ns() - t0) / 1e3 / steps


def _steps_for(workload: Workload, config: TimerConfig) -> int:
    """Steps per sample so one sample lasts at least `min_sample_s` (and covers every copy)."""
    single_us = _cpu_sample_us(workload, max(1, min(workload.copies, 4)))
    steps = max(1, int(config.min_sample_s * 1e6 / max(single_us, 1e-3)))
    return max(steps, min(workload.copies, 64))


def _rounds(workloads: Sequence[Workload], steps: Sequence[int], rounds: int) -> list[list[float]]:
    samples: list[list[float]] = [[] for _ in workloads]
    n = len(workloads)
    for r in range(rounds):
        for j in range(n):
            i = (j + r) % n  # rotate the order so no row always runs first
            samples[i].append(_cpu_sample_us(workloads[i], steps[i]))
    return samples


@torch.inference_mode()
def time_cpu(workloads: Sequence[Workload], config: TimerConfig) -> list[Measurement]:
    """Time a group of workloads in interleaved rounds; see the module docstring."""
    for w in workloads:
        for _ in range(max(config.warmup_steps, w.copies)):
            w.step()
    steps = [_steps_for(w, config) for w in workloads]
    samples = _rounds(workloads, steps, config.samples)
    result = [Measurement(s, n) for s, n in zip(samples, steps, strict=True)]
    for _ in range(config.max_remeasure):
        noisy = [i for i, m in enumerate(result) if m.cv > config.cv_threshold]
        if not noisy:
            break
        again = _rounds([workloads[i] for i in noisy], [steps[i] for i in noisy], config.samples)
        for i, s in zip(noisy, again, strict=True):
            result[i] = keep_steadier(result[i], Measurement(s, steps[i]))
    return [flag_if_noisy(m, config) for m in result]


# ---- CUDA -----------------------------------------------------------------------------------
def _warm_up_on_side_stream(workload: Workload, steps: int) -> None:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(steps):
            workload.step()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


def _graph_steps(workload: Workload, config: TimerConfig) -> int:
    k = max(config.graph_steps, workload.copies)
    return k + (-k % workload.copies)  # whole rotations, so every copy runs equally often


def _event_samples(run: Callable[[], None], samples: int, steps: int) -> list[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(samples)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(samples)]
    for start, end in zip(starts, ends, strict=True):
        start.record()
        run()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e3 / steps for s, e in zip(starts, ends, strict=True)]


@torch.inference_mode()
def time_cuda_graph(workload: Workload, config: TimerConfig) -> Measurement:
    """Capture K consecutive decode steps in one CUDA graph and time its replays."""
    k = _graph_steps(workload, config)
    _warm_up_on_side_stream(workload, max(config.warmup_steps, workload.copies))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(k):
            workload.step()
    for _ in range(2):
        graph.replay()
    torch.cuda.synchronize()
    m = Measurement(_event_samples(graph.replay, config.samples, k), k)
    del graph
    return m


@torch.inference_mode()
def time_cuda_eager(workload: Workload, config: TimerConfig) -> Measurement:
    """The same K steps launched one by one (no graph): includes the launch overhead."""
    k = _graph_steps(workload, config)
    _warm_up_on_side_stream(workload, max(config.warmup_steps, workload.copies))

    def run() -> None:
        for _ in range(k):
            workload.step()

    return Measurement(_event_samples(run, config.samples, k), k)
