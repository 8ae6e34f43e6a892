"""One machine's GPUs (or CPU cores) sweeping one LUT together: one worker process per shard.

`latprof sweep --gpus 0,1,2,3` starts one `latprof sweep --shard I/N` process per GPU, pinned
with CUDA_VISIBLE_DEVICES; `--workers N` on a CPU pins each to its own cores
(`os.sched_setaffinity`, threads = cores / N).  All append to the one LUT under its lock (the
sweep's own locking).  Each worker writes its progress to a small file the parent sums into one
bar; a worker that dies is reported with its shard, its log's last lines and the command that
re-runs it (which measures only what the shard still lacks).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.shard import Shard

POLL_S = 0.5
LOG_TAIL_LINES = 8


@dataclass
class Worker:
    """One worker process: the shard it sweeps and how it is started."""

    shard: Shard
    label: str  # "GPU 3", "cores 0-1"
    args: list[str]  # `latprof sweep ...` arguments, --shard included
    env: dict[str, str] = field(default_factory=dict)  # added to the parent's environment
    cores: list[int] | None = None

    @property
    def rerun_command(self) -> str:
        prefix = " ".join(
            f"{k}={shlex.quote(v)}" for k, v in self.env.items() if k.startswith("CUDA")
        )
        return (prefix + " " if prefix else "") + shlex.join(["latprof", "sweep", *self.args])


@dataclass
class WorkerOutcome:
    worker: Worker
    returncode: int
    summary: dict[str, Any] | None
    log_tail: str

    @property
    def failed(self) -> bool:
        return self.returncode != 0

    def report(self) -> str:
        code = self.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        tail = f" Its last output: {self.log_tail.strip()}" if self.log_tail.strip() else ""
        return (
            f"the worker of shard {self.worker.shard} ({self.worker.label}) {how}; rows it "
            f"measured are kept. Re-run its shard (it measures only what is missing) with: "
            f"{self.worker.rerun_command}.{tail}"
        )


# ---- planning ----------------------------------------------------------------------------------
def parse_gpus(text: str, available: int) -> list[int]:
    """`all` or a comma list of GPU indices (as this process sees them)."""
    if available == 0:
        raise InputError(
            "--gpus: this machine has no CUDA GPU visible to torch (torch.cuda.device_count() is "
            "0); on a CPU use --workers N to run one pinned worker per group of cores"
        )
    if text.strip() == "all":
        return list(range(available))
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(
            f"--gpus: expected `all` or GPU indices like 0,1,2,3, got {text!r}"
        ) from None
    if not gpus:
        raise InputError("--gpus: name at least one GPU (or `all`)")
    bad = [g for g in gpus if not 0 <= g < available]
    if bad or len(set(gpus)) != len(gpus):
        raise InputError(
            f"--gpus {text}: each GPU once, among the {available} visible (0-{available - 1})"
        )
    return gpus


def _visible_id(index: int) -> str:
    """The CUDA_VISIBLE_DEVICES entry of visible GPU `index` (respecting the parent's own)."""
    parent = [x for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    return parent[index] if index < len(parent) else str(index)


def gpu_workers(gpus: Sequence[int], sweep_args: Sequence[str]) -> list[Worker]:
    n = len(gpus)
    return [
        Worker(
            Shard(i, n),
            f"GPU {g}",
            [*sweep_args, "--device", "cuda", "--shard", f"{i}/{n}"],
            env={"CUDA_VISIBLE_DEVICES": _visible_id(g)},
        )
        for i, g in enumerate(gpus)
    ]


def core_groups(count: int, cores: Sequence[int]) -> list[list[int]]:
    """`cores` split into `count` contiguous groups as even as possible (first ones larger)."""
    cores = sorted(cores)
    if count < 1 or count > len(cores):
        raise InputError(
            f"--workers {count}: this process may run on {len(cores)} core(s) "
            f"({', '.join(map(str, cores))}); each worker needs at least one"
        )
    size, extra = divmod(len(cores), count)
    groups, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        groups.append(cores[start:end])
        start = end
    return groups


def cpu_workers(count: int, sweep_args: Sequence[str], threads: int | None) -> list[Worker]:
    groups = core_groups(count, sorted(os.sched_getaffinity(0)))
    workers = []
    for i, cores in enumerate(groups):
        n = threads or len(cores)
        if n > len(cores):
            raise InputError(
                f"--threads {n} with --workers {count}: each worker has {len(cores)} core(s)"
            )
        label = f"cores {cores[0]}-{cores[-1]}" if len(cores) > 1 else f"core {cores[0]}"
        args = [*sweep_args, "--device", "cpu", "--threads", str(n), "--shard", f"{i}/{count}"]
        env = {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        workers.append(Worker(Shard(i, count), label, args, env=env, cores=cores))
    return workers


def pinning() -> dict[str, Any]:
    """Where this process may run: recorded in a shard's provenance."""
    return {
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


# ---- running -----------------------------------------------------------------------------------
def read_progress(path: Path) -> tuple[int, int]:
    try:
        done, total = path.read_text().split()[:2]
        return int(done), int(total)
    except (OSError, ValueError):
        return 0, 0


def write_progress(path: Path, done: int, total: int) -> None:
    """Called by a worker: its progress, replaced atomically so the parent never reads half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{done} {total}\n")
    tmp.replace(path)


def _start(worker: Worker, folder: Path, executable: Sequence[str]) -> subprocess.Popen:
    i = worker.shard.index
    progress = folder / f"worker-{i}.progress"
    argv = [*executable, "sweep", *worker.args, "--json", "--progress-file", str(progress)]
    cores = worker.cores

    def pin() -> None:  # in the child, before exec: the affinity carries over
        if cores:
            os.sched_setaffinity(0, cores)

    with (
        open(folder / f"worker-{i}.json", "w") as out,
        open(folder / f"worker-{i}.log", "w") as log,
    ):
        return subprocess.Popen(
            argv, stdout=out, stderr=log, env={**os.environ, **worker.env}, preexec_fn=pin
        )


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-LOG_TAIL_LINES:])


def run_workers(
    workers: Sequence[Worker],
    on_progress: Callable[[int, int, str], None] | None = None,
    executable: Sequence[str] | None = None,
) -> list[WorkerOutcome]:
    """Start every worker, sum their progress until all have ended, and say how each ended."""
    executable = list(executable or [sys.executable, "-m", "latprof.cli"])
    with tempfile.TemporaryDirectory(prefix="latprof-workers-") as tmp:
        folder = Path(tmp)
        procs = [_start(w, folder, executable) for w in workers]
        while True:
            running = sum(p.poll() is None for p in procs)
            if on_progress:
                counts = [
                    read_progress(folder / f"worker-{w.shard.index}.progress") for w in workers
                ]
                label = f"{running}/{len(procs)} workers running"
                on_progress(sum(d for d, _ in counts), sum(t for _, t in counts), label)
            if not running:
                break
            time.sleep(POLL_S)
        outcomes = []
        for w, p in zip(workers, procs, strict=True):
            i = w.shard.index
            try:
                summary = json.loads((folder / f"worker-{i}.json").read_text())
            except (OSError, ValueError):
                summary = None
            outcomes.append(
                WorkerOutcome(w, p.returncode, summary, _tail(folder / f"worker-{i}.log"))
            )
        return outcomes


def totals(outcomes: Sequence[WorkerOutcome]) -> dict[str, Any]:
    """The workers' sweep summaries added up, plus one entry per worker."""
    keys = ("points_total", "skipped_existing", "measured", "oom", "errors", "noisy")
    out: dict[str, Any] = {k: 0 for k in keys}
    out["workers"] = []
    for o in outcomes:
        s = o.summary or {}
        for k in keys:
            out[k] += int(s.get(k) or 0)
        out["workers"].append(
            {
                "shard": str(o.worker.shard),
                "where": o.worker.label,
                "returncode": o.returncode,
                "summary": o.summary,
                "rerun": o.worker.rerun_command if o.failed else None,
            }
        )
    out["failed"] = [o.report() for o in outcomes if o.failed]
    return out
