"""`latprof sweep --ray [ADDRESS]`: one Ray task per shard, collected and merged into the LUT.

Each task (one GPU, `num_gpus=1`; or `num_cpus=threads` for `--device cpu`) sweeps its shard into
a LUT of its own in a temporary folder on whichever node runs it, and returns that LUT's CSV and
sidecar.  The driver keeps each returned shard under `<OUT stem>.shards/` beside OUT and merges
OUT (when it exists) and every shard into OUT with `latprof.merge` (same device, dtype and
versions, or refused).  A task that fails is retried once by Ray (`max_retries=1`,
`retry_exceptions=True`); one that fails again is reported with its shard and the command that
re-runs it; the shards that succeeded are merged all the same.  Points already in OUT are not
sent.  Ray is an optional extra: `pip install 'latprof[ray]'`; every node needs latprof and the
backends installed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.grid import Point
from latprof.shard import Shard


@dataclass
class RaySummary:
    lut_path: str
    shards: int
    measured: int = 0
    errors: int = 0
    oom: int = 0
    skipped_existing: int = 0
    merged_rows: int = 0
    shard_summaries: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(
            "--ray needs Ray, an optional extra: pip install 'latprof[ray]' (on every node)"
        ) from None
    return ray


def sweep_shard(
    points: list[Point], run_info: dict[str, Any], threads: int | None, config, command: str
) -> dict[str, Any]:
    """Run in a Ray worker: sweep these points into a fresh LUT; return its CSV and sidecar."""
    from latprof import lut
    from latprof.sweep import run_sweep
    from latprof.workers import pinning

    run_info = {**run_info, "pinning": pinning()}  # what Ray gave this task

    with tempfile.TemporaryDirectory(prefix="latprof-ray-") as tmp:
        path = Path(tmp) / "shard.csv"
        summary = run_sweep(
            points, path, threads=threads, config=config, command=command, run_info=run_info
        )
        return {
            "csv": path.read_text(),
            "json": lut.sidecar_path(path).read_text(),
            "summary": summary.as_dict(),
        }


def shard_folder(out: Path) -> Path:
    return out.with_name(out.stem + ".shards")


def run_on_ray(
    shards: Sequence[tuple[Shard, list[Point], dict[str, Any]]],
    out: Path,
    *,
    address: str | None,
    threads: int | None,
    config,
    command: str,
    rerun: Callable[[Shard], str],
    on_progress: Callable[[int, int, str], None] | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> RaySummary:
    """Submit one task per (shard, its points, its provenance), wait, write and merge."""
    from latprof.merge import merge_luts

    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, **(init_kwargs or {}))
    summary = RaySummary(str(out), len(shards))
    device = next((s.device for _, pts, _ in shards for _, s in pts), "cpu")
    if device == "cpu" and threads is None:
        threads = 1  # a CPU task's threads are the CPUs it asks Ray for (and are recorded)
    resources = {"num_gpus": 1} if device == "cuda" else {"num_cpus": threads}
    task = ray.remote(sweep_shard).options(max_retries=1, retry_exceptions=True, **resources)
    pending = {}
    for shard, points, info in shards:
        if points:
            pending[task.remote(points, info, threads, config, command)] = shard
    folder = shard_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    total, done = len(pending), 0
    while pending:
        if on_progress:
            on_progress(done, total, f"{len(pending)} Ray tasks running")
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(ready[0])
        done += 1
        try:
            result = ray.get(ready[0])
        except Exception as exc:  # the task failed twice (Ray retried it once)
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            summary.failed.append(
                f"shard {shard} failed twice on Ray ({type(exc).__name__}: {first[:300]}); "
                f"re-run it with: {rerun(shard)}"
            )
            continue
        path = folder / f"shard-{shard.index}-of-{shard.count}.csv"
        path.write_text(result["csv"])
        path.with_suffix(".json").write_text(result["json"])
        written.append(path)
        s = result["summary"]
        summary.shard_summaries.append({"shard": str(shard), **s})
        for key in ("measured", "errors", "oom", "skipped_existing"):
            summary.__dict__[key] += int(s.get(key) or 0)
    if on_progress:
        on_progress(total, total, "merging")
    if written:
        inputs = [out, *written] if out.exists() else written
        summary.merged_rows = merge_luts(inputs, out).rows_out
    return summary
