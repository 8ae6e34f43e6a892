"""Split a sweep grid into N shards that engines already run (Slurm arrays, Ray, one GPU each).

The partition is a pure function of the grid and N: the same on every machine and Python version.

- points are deduplicated and put in canonical order: `lut.row_key` (spec key, then the setting
  columns), a tuple of str and int compared field by field; no `hash()`, no set order;
- each point has a predicted cost in bytes, `bytes_per_step x copies` (the copies a sweep rotates,
  `measure.copies_needed`), taken at a fixed nominal last-level cache per device kind, not this
  machine's, so that every machine computes the same costs; a prefill step is costed per prompt
  token;
- points go, most expensive first (ties by canonical key), to the shard with the least cost so
  far (ties to the lowest index): greedy longest-processing-time scheduling.  Its bound, tested:
  no shard's cost exceeds total / N + the largest single point's cost.

Each shard keeps its points in the grid's order, so a shard is measured (and grouped) like the
corresponding stretch of the unsharded sweep.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latprof.errors import InputError
from latprof.grid import Point, dedupe
from latprof.lut import row_key

#: the last-level cache the cost model assumes (bytes): fixed, so costs never depend on the host
NOMINAL_LLC_BYTES = {"cpu": 32 * 1024**2, "cuda": 50 * 1024**2}
#: identifies the cost model and assignment rule in provenance; change it when either changes
METHOD = "lpt/bytes_per_step*copies@nominal_llc/v1"

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` with 0 <= I < N (Slurm: `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`)."""
        match = _SHARD_RE.match(text or "")
        if not match:
            raise InputError(f"--shard: expected I/N (e.g. 0/4), got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1:
            raise InputError(f"--shard {text}: the shard count N must be at least 1")
        if index >= count:
            raise InputError(
                f"--shard {text}: the shard index is 0-based, so it must be below {count} "
                f"(0/{count} ... {count - 1}/{count})"
            )
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def canonical_key(point: Point) -> tuple:
    spec, setting = point
    return row_key(spec.key, setting)


def predicted_cost(point: Point) -> int:
    """Bytes a sweep moves to time one step of every copy of this point (integer, so sums and
    comparisons are exact everywhere)."""
    from latprof.measure import OperatorTarget, copies_needed

    spec, setting = point
    target = OperatorTarget(spec, setting)
    copies = copies_needed(target, NOMINAL_LLC_BYTES[setting.device])
    if setting.phase == "prefill":
        per_step = spec.bytes_per_step(setting.batch, 1, setting.dtype) * max(setting.context, 1)
    else:
        per_step = spec.bytes_per_step(setting.batch, setting.context, setting.dtype)
    return max(1, int(per_step)) * copies


def partition(points: Sequence[Point], count: int) -> list[list[Point]]:
    """The grid's points in `count` disjoint shards covering it, balanced by predicted cost."""
    if count < 1:
        raise InputError(f"the shard count must be at least 1, got {count}")
    unique = dedupe(points)
    position = {canonical_key(p): i for i, p in enumerate(unique)}
    costed = sorted(
        ((predicted_cost(p), canonical_key(p), p) for p in unique), key=lambda c: (-c[0], c[1])
    )
    heap = [(0, i) for i in range(count)]  # (cost so far, shard index): least, then lowest
    shards: list[list[Point]] = [[] for _ in range(count)]
    for cost, _, point in costed:
        load, index = heapq.heappop(heap)
        shards[index].append(point)
        heapq.heappush(heap, (load + cost, index))
    return [sorted(s, key=lambda p: position[canonical_key(p)]) for s in shards]


def select(points: Sequence[Point], shard: Shard) -> list[Point]:
    """The points of one shard, in grid order."""
    return partition(points, shard.count)[shard.index]


def provenance(points: Sequence[Point], shard: Shard) -> dict[str, Any]:
    """What the sidecar records of a sharded run: which shard, of what, by which rule."""
    shards = partition(points, shard.count)
    costs = [sum(predicted_cost(p) for p in s) for s in shards]
    return {
        "index": shard.index,
        "count": shard.count,
        "method": METHOD,
        "points": len(shards[shard.index]),
        "grid_points": sum(len(s) for s in shards),
        "predicted_cost_bytes": costs[shard.index],
        "grid_predicted_cost_bytes": sum(costs),
    }
