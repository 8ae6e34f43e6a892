"""How evenly `--shard I/N` splits a sweep grid, by predicted cost (bytes per step x copies, the
figure shards are balanced on), against splitting the same points by count.  Prints, per spec
file and N, the heaviest shard's predicted cost over the mean (by cost, as --shard does; by
count dealt round-robin; by count in contiguous runs of the key order) and the points per
shard.  These are predictions, not timings.

    .venv/bin/python benchmarks/bench_shard_balance.py [--spec luts/default.yaml --device cuda]
"""

from __future__ import annotations

import argparse

from latprof import grid, shard


def _points(spec: str, device: str) -> list:
    request = grid.request_from_file(
        grid.load_spec_file(spec), device=device, dtype=None, mode=None, path=spec
    )
    return grid.dedupe(grid.expand(request))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", action="append")
    parser.add_argument("--device", action="append")
    args = parser.parse_args()
    cases = list(zip(args.spec, args.device or [], strict=True)) if args.spec else [
        ("luts/default.yaml", "cuda"),
        ("luts/quick.yaml", "cpu"),
    ]  # fmt: skip
    print(f"{'spec':<20} {'device':<6} {'points':>6} {'N':>3} {'by cost':>8} {'dealt':>6} "
          f"{'runs':>6} {'points per shard':>17}")  # fmt: skip
    for spec, device in cases:
        points = sorted(_points(spec, device), key=shard.canonical_key)
        for n in (2, 4, 8):
            parts = shard.partition(points, n)
            mean = sum(shard.predicted_cost(p) for p in points) / n
            by_cost = max(sum(map(shard.predicted_cost, part)) for part in parts) / mean
            dealt = [points[i::n] for i in range(n)]  # by count, dealt round-robin
            by_count = max(sum(map(shard.predicted_cost, c)) for c in dealt) / mean
            size = -(-len(points) // n)  # by count, in contiguous runs of the key order
            runs = [points[i : i + size] for i in range(0, len(points), size)]
            by_run = max(sum(map(shard.predicted_cost, c)) for c in runs) / mean
            sizes = sorted(len(part) for part in parts)
            print(f"{spec:<20} {device:<6} {len(points):>6} {n:>3} {by_cost:>8.4f} "
                  f"{by_count:>6.3f} {by_run:>6.3f} {sizes[0]:>8}-{sizes[-1]}")  # fmt: skip


if __name__ == "__main__":
    main()
