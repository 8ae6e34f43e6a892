"""One measurement path for everything latprof times (DESIGN.md, "One measurement path").

A *target* is anything with a decode step to time: an operator at a setting (`OperatorTarget`,
one LUT row) or a whole model at a setting (`latprof.e2e.ModelTarget`).  A target says how many
bytes one copy holds, builds one copy's step, and checks that it can run here.  `measure` then
does the same for every target, so both sides of a comparison are timed alike:

- copies: enough independent copies (weights and state) that their bytes exceed twice the
  last-level cache, within a memory budget (`copies_needed`);
- CPU: targets grouped (`plan_groups`) and timed together in interleaved rounds;
- CUDA: one target at a time, one CUDA graph of K steps (mode graph) or K eager launches, with
  SM clock and temperature before and after (NVML) and a throttle flag;
- one re-measure and flag policy (`latprof.timing`): a sample set whose coefficient of variation
  exceeds the threshold is measured again (up to `max_remeasure` times, keeping the steadier) and
  flagged `remeasured`, and `noisy` if it stays above;
- failures per target: out of memory -> status `oom`, anything else -> `error`, never the end of
  the run; an `InputError` (a user mistake) propagates.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from latprof import device_info, gpu_clocks
from latprof.errors import InputError
from latprof.lut import Setting
from latprof.ops import backend_unavailable, build_block, torch_dtype
from latprof.registry import operator
from latprof.specs import OpSpec, dtype_bytes
from latprof.timing import (
    Measurement,
    TimerConfig,
    Workload,
    copies_for,
    interleave_groups,
    remeasured_if_noisy,
    time_cpu,
    time_cuda_eager,
    time_cuda_graph,
)

#: total bytes of copies one target may allocate
COPY_BUDGET_BYTES = {"cpu": 2 * 1024**3, "cuda": 16 * 1024**3}
MAX_COPIES = 256
#: CPU targets timed together in interleaved rounds: a group's samples spread over its whole
#: duration, so a burst of machine noise costs each target a sample or two instead of biasing
#: the ones that happened to run during it.  Bigger groups dilute bursts better; a killed sweep
#: loses the group in flight, and every copy of a group is held in memory at once.
CPU_GROUP_MAX_TARGETS = 24
CPU_GROUP_MAX_BYTES = 6 * 1024**3


class Target(Protocol):
    """What `measure` needs of anything it times."""

    device: str
    mode: str

    @property
    def label(self) -> str: ...

    def bytes_per_copy(self) -> int: ...

    def check(self) -> None:
        """Raise InputError if this target cannot run here (backend, graph capture)."""

    def build_step(self, copy: int) -> Callable[[], object]:
        """Copy number `copy` (its own weights and state), as one decode step per call."""


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


def check_runnable(op: str, backend: str, device: str, mode: str, what: str) -> None:
    """`backend` of `op` can run on `device`, and in a CUDA graph when `mode` is graph; else an
    InputError saying why (`what` names the target: an operator, a model)."""
    reason = backend_unavailable(op, backend, device)
    if reason:
        raise InputError(f"{op}: backend {backend!r} cannot run here: {reason}")
    if mode == "graph" and not operator(op).backend(backend).graph_capturable:
        raise InputError(
            f"{what}: its {op} step ({backend}) synchronises with the host, so it cannot be "
            "captured in a CUDA graph; measure it with --mode eager (in a sweep spec: "
            f"`ops: {{{op}: {{mode: eager}}}}`)"
        )


def max_context_for(context: int) -> int:
    """Cache length a decode step at `context` needs: exactly the context (+1 for the new token),
    so a cache-length dependent kernel does the work of this context and no more."""
    return max(context, 1) + 1


@dataclass(frozen=True)
class OperatorTarget:
    """One operator spec at one setting: a LUT row."""

    spec: OpSpec
    setting: Setting

    @property
    def device(self) -> str:
        return self.setting.device

    @property
    def mode(self) -> str:
        return self.setting.mode

    @property
    def label(self) -> str:
        return f"{self.spec.op} w{self.spec.width}"

    def bytes_per_copy(self) -> int:
        s = self.setting
        state = self.spec.state_bytes(s.batch, max_context_for(s.context), s.dtype)
        return self.spec.param_count() * dtype_bytes(s.dtype) + state.total

    def touched_bytes(self) -> int:
        """Bytes of a copy one step reads: all of it, except for a spec that reads a part of its
        weights per step (`OpSpec.sparse_reads`: an MoE step reads the experts its fixed input
        routes to), whose copies are sized on that part, so that the rotation really leaves L2."""
        if not self.spec.sparse_reads:
            return self.bytes_per_copy()
        s = self.setting
        state = self.spec.state_bytes(s.batch, max_context_for(s.context), s.dtype).total
        return min(
            self.bytes_per_copy(), self.spec.bytes_per_step(s.batch, s.context, s.dtype) + state
        )

    def check(self) -> None:
        s = self.setting
        check_runnable(self.spec.op, s.backend, s.device, s.mode, self.spec.op)

    def build_step(self, copy: int) -> Callable[[], object]:
        s = self.setting
        block = build_block(
            self.spec, backend=s.backend, device=s.device, dtype=torch_dtype(s.dtype), seed=copy
        )
        block.eval()
        gen = torch.Generator().manual_seed(copy)
        # a block that reads the embedding output (shared attention) gets a random one of the
        # hidden state's shape as its second input
        if s.phase == "prefill":
            state = block.allocate_state(s.batch, s.context)
            x = block.example_sequence(s.batch, s.context, gen)
            if self.spec.reads_embedding:
                e = block.example_sequence(s.batch, s.context, gen)
                return lambda: block.prefill(x, state, e)
            return lambda: block.prefill(x, state)
        state = block.allocate_state(s.batch, max_context_for(s.context))
        x = block.example_input(s.batch, gen)
        block.randomize_state(state, torch.Generator().manual_seed(1234))
        pos = s.context
        if self.spec.reads_embedding:
            e = block.example_input(s.batch, gen)
            return lambda: block.step(x, state, pos, e)
        return lambda: block.step(x, state, pos)


@dataclass
class Result:
    """What measuring one target gave: a measurement (status ok), or why not (oom, error)."""

    target: Target
    copies: int
    measurement: Measurement | None
    status: str = "ok"
    error: str = ""
    #: (SM clock MHz, temperature C) before and after, CUDA with NVML only
    clocks: tuple = (None, None, None, None)


def copies_needed(target: Target, llc_bytes: int) -> int:
    """Copies whose *touched* bytes exceed twice the LLC (a target without `touched_bytes`
    touches all of a copy), as many as the memory budget for whole copies allows."""
    touched = getattr(target, "touched_bytes", target.bytes_per_copy)()
    wanted = copies_for(touched, llc_bytes, COPY_BUDGET_BYTES[target.device], MAX_COPIES)
    affordable = max(1, COPY_BUDGET_BYTES[target.device] // max(1, target.bytes_per_copy()))
    return min(wanted, affordable)


def held_bytes(target: Target, llc_bytes: int) -> int:
    """Bytes of all the copies a target holds while it is timed."""
    return target.bytes_per_copy() * copies_needed(target, llc_bytes)


def build_workload(target: Target, copies: int) -> Workload:
    """`copies` independent copies of the target, one decode step per call."""
    return Workload([target.build_step(c) for c in range(copies)])


def plan_groups(targets: Sequence[Target], llc_bytes: int) -> list[list[Target]]:
    """CPU targets in groups timed together (interleaved), bounded in count and in the bytes of
    their copies; CUDA targets one by one (a GPU does not drift like a shared CPU)."""
    if targets and targets[0].device != "cpu":
        return [[t] for t in targets]
    return interleave_groups(
        targets, lambda t: held_bytes(t, llc_bytes), CPU_GROUP_MAX_TARGETS, CPU_GROUP_MAX_BYTES
    )


#: how allocators word an out-of-memory RuntimeError (CUDA's, and the CPU allocator's)
OOM_MESSAGES = ("out of memory", "can't allocate memory", "defaultcpuallocator")


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM (torch.cuda.OutOfMemoryError), a MemoryError, or the CPU allocator's
    RuntimeError ("DefaultCPUAllocator: can't allocate memory: you tried to allocate ...")."""
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in OOM_MESSAGES)


def _failed(target: Target, copies: int, exc: BaseException) -> Result:
    status = "oom" if is_oom(exc) else "error"
    return Result(target, copies, None, status, f"{type(exc).__name__}: {exc}")


def time_gpu(workload: Workload, mode: str, config: TimerConfig) -> Measurement:
    """One CUDA target: a graph of K steps (mode graph) or K eager launches, re-measured by the
    shared policy."""
    timer = time_cuda_graph if mode == "graph" else time_cuda_eager
    return remeasured_if_noisy(lambda: timer(workload, config), config)


def _measure_gpu(target: Target, copies: int, config: TimerConfig) -> Result:
    workload = build_workload(target, copies)
    # clocks, temperature and throttle reasons before / after; re-timed after a pause when
    # throttled (latprof.gpu_clocks)
    m, before, after, flags = gpu_clocks.measure_watched(
        lambda: time_gpu(workload, target.mode, config), gpu_clocks.telemetry_for()
    )
    m.flags.extend(f for f in flags if f not in m.flags)
    clocks = (before.sm_clock_mhz, before.temp_c, after.sm_clock_mhz, after.temp_c)
    return Result(target, copies, m, clocks=clocks)


def measure(targets: Sequence[Target], llc_bytes: int, config: TimerConfig) -> list[Result]:
    """Measure one group of targets of one device (CPU: together, in interleaved rounds; CUDA:
    one after another) -> one Result per target, in order."""
    if not targets:
        return []
    devices = {t.device for t in targets}
    if len(devices) != 1:
        raise InputError(f"one measurement group is of one device, got {sorted(devices)}")
    for t in targets:
        t.check()
    results: list[Result | None] = [None] * len(targets)
    ready: list[tuple[int, Workload, int]] = []
    memory = device_info.device_memory_bytes(targets[0].device)
    for i, target in enumerate(targets):
        copies = copies_needed(target, llc_bytes)
        needed = target.bytes_per_copy() * copies
        if memory is not None and needed > memory:  # oom without trying to allocate it
            too_big = (
                f"OutOfMemory: needs {needed / 1e9:,.1f} GB for its copies, more than the "
                f"{memory / 1e9:,.1f} GB this {target.device} has; not attempted"
            )
            results[i] = Result(target, copies, None, "oom", too_big)
            continue
        try:
            if target.device == "cuda":
                results[i] = _measure_gpu(target, copies, config)
            else:
                ready.append((i, build_workload(target, copies), copies))
        except InputError:
            raise
        except Exception as exc:  # recorded per target: one bad target must not end the run
            results[i] = _failed(target, copies, exc)
        finally:
            if target.device == "cuda":
                torch.cuda.empty_cache()
    if ready:
        try:
            ms = time_cpu([w for _, w, _ in ready], config)
            for (i, _, copies), m in zip(ready, ms, strict=True):
                results[i] = Result(targets[i], copies, m)
        except Exception as exc:
            for i, _, copies in ready:
                results[i] = _failed(targets[i], copies, exc)
    ready.clear()
    gc.collect()
    return [r for r in results if r is not None]
