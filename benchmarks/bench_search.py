"""How fast `latprof search` evaluates candidates' latency from a LUT (the built-in score).

    .venv/bin/python benchmarks/bench_search.py [--lut luts/cpu-intel-xeon-2core.csv]

Draws distinct random candidates of configs/search/small-cpu.yaml and times `Search.latency` on
each (model built from the genome, rules and constraints checked, LUT decode latency of 128 tokens
after 128): candidates per second over 5 passes (a fresh candidate cache each).  Then a whole
search (20 generations x 32) with its wall time.  Figures: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from latprof.estimate import Estimator
from latprof.search import Search, Space, random_genome

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lut", default=str(ROOT / "luts/cpu-intel-xeon-2core.csv"))
    parser.add_argument("--candidates", type=int, default=20000)
    args = parser.parse_args()
    space = Space.load(ROOT / "configs/search/small-cpu.yaml")
    est = Estimator(args.lut)
    rng = random.Random(0)
    genomes = {}
    while len(genomes) < args.candidates:
        g = random_genome(space, rng)
        genomes[g.key] = g
    rates = []
    for _ in range(5):
        search = Search(space, est, budget_s=3.0, prompt=128, generate=128)  # fresh candidate cache
        t0 = time.perf_counter()
        for g in genomes.values():
            search.latency(g)
        rates.append(len(genomes) / (time.perf_counter() - t0))
    print(
        f"{len(genomes)} distinct candidates, 5 passes: median {statistics.median(rates):,.0f} "
        f"latency evaluations/s (min {min(rates):,.0f}, max {max(rates):,.0f})"
    )
    search = Search(space, est, budget_s=3.0, prompt=128, generate=128, seed=0)
    t0 = time.perf_counter()
    result = search.run(20)
    print(
        f"search 20 generations x 32: {time.perf_counter() - t0:.2f} s, "
        f"{result.evaluated} distinct candidates, front of {len(result.front)}"
    )


if __name__ == "__main__":
    main()
