"""CPU sweep figures for BENCHMARKS.md: wall time of the quick spec, repeatability between two
sweeps in separate processes, and per-operator decode latency at width 1024, batch 1, context 1024.

    .venv/bin/python benchmarks/bench_cpu_sweep.py [--out-dir DIR] [--runs 2]

Runs `latprof sweep --spec luts/quick.yaml --device cpu` `--runs` times, each in a fresh process
writing its own LUT, then prints the figures.  Takes about a minute per run on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latprof import lut

ROOT = Path(__file__).resolve().parent.parent


def run_sweep(out: Path) -> float:
    cmd = [
        sys.executable,
        "-m",
        "latprof.cli",
        "sweep",
        "--spec",
        str(ROOT / "luts/quick.yaml"),
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def rel_diffs(a: Path, b: Path) -> list[tuple[float, str]]:
    ra = {lut.key_of_row(r): r for r in lut.read_rows(a) if r["status"] == "ok"}
    rb = {lut.key_of_row(r): r for r in lut.read_rows(b) if r["status"] == "ok"}
    out = []
    for key in ra.keys() & rb.keys():
        x, y = ra[key]["latency_us_median"], rb[key]["latency_us_median"]
        out.append((100 * abs(x - y) / ((x + y) / 2), f"{key[0]} b{key[2]} c{key[3]}"))
    return sorted(out)


def per_operator(path: Path) -> None:
    rows = [
        r
        for r in lut.read_rows(path)
        if r["width"] == 1024
        and r["batch"] == 1
        and r["context"] in (0, 1024)
        and r["status"] == "ok"
    ]
    print("\nper-operator decode latency, width 1024, batch 1, context 1024 (attention) / any:")
    print(
        f"{'operator':<16}{'median us':>12}{'p10':>10}{'p90':>10}{'cv':>7}{'floor us':>10}"
        f"{'GB/s':>8}{'% floor':>9}"
    )
    for r in sorted(rows, key=lambda r: r["op"]):
        print(
            f"{r['op']:<16}{r['latency_us_median']:>12.1f}{r['latency_us_p10']:>10.1f}"
            f"{r['latency_us_p90']:>10.1f}{100 * r['latency_cv']:>6.1f}%"
            f"{r['roofline_us']:>10.1f}{r['achieved_gbps']:>8.1f}{r['pct_of_roofline']:>8.0f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="latprof-bench-"))
    paths = []
    for i in range(args.runs):
        path = out_dir / f"quick-{i}.csv"
        path.unlink(missing_ok=True)
        wall = run_sweep(path)
        rows = lut.read_rows(path)
        print(f"run {i}: quick spec, {len(rows)} rows, wall {wall:.1f} s -> {path}")
        paths.append(path)
    for a, b in itertools.combinations(paths, 2):
        d = rel_diffs(a, b)
        values = [x for x, _ in d]
        p90 = values[int(0.9 * (len(values) - 1))]
        print(
            f"\nrepeatability {a.name} vs {b.name}: {len(d)} matching rows, median |diff| "
            f"{statistics.median(values):.1f}%, p90 {p90:.1f}%, max {values[-1]:.1f}% "
            f"({d[-1][1]})"
        )
    per_operator(paths[0])


if __name__ == "__main__":
    main()
