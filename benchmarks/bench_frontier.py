"""How fast `latprof frontier` answers: 6 depths x 60 widths x 10 budgets from an existing LUT.

    .venv/bin/python benchmarks/bench_frontier.py [--lut luts/cpu-intel-xeon-2core-llama.csv]

Times the whole CLI call (a fresh process each, `--json`, median of 5) and the Python API on a
loaded LUT; checks that torch was never imported.  Widths beyond the LUT's are extrapolated
(`--allow-extrapolation`), so both of the frontier's estimators do work.  Figures: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPTHS = "4,8,12,16,24,32"
WIDTHS = "256:7808:128"  # 60 widths
BUDGETS = "0.6,1,2,3,5,7,10,15,20,30"


def cli_seconds(lut: str) -> tuple[float, dict]:
    args = ["--lut", lut, "--depths", DEPTHS, "--widths", WIDTHS, "--budgets", BUDGETS]
    code = (
        "import sys; from latprof.cli import _register, app; _register(); "
        f"sys.argv = ['latprof', 'frontier', *{args!r}, '--allow-extrapolation', '--json'];\n"
        "try:\n    app()\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout)


def api_seconds(lut: str) -> float:
    from latprof import frontier as fr
    from latprof.estimate import Estimator

    strict = Estimator(lut)
    loose = Estimator(strict.lut, allow_extrapolation=True)
    depths = [int(d) for d in DEPTHS.split(",")]
    t0 = time.perf_counter()
    fr.frontier(
        fr.llama_family(),
        depths,
        fr.parse_widths(WIDTHS),
        strict,
        prompt=128,
        generate=128,
        budgets=fr.parse_budgets(BUDGETS),
        extrapolating=loose,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lut", default=str(ROOT / "luts/cpu-intel-xeon-2core-llama.csv"))
    lut = parser.parse_args().lut
    runs = [cli_seconds(lut) for _ in range(5)]
    doc = runs[0][1]
    print(
        f"grid: {len(doc['depths'])} depths x {len(doc['widths'])} widths = "
        f"{len(doc['points'])} models, {len(doc['budgets'])} budgets"
    )
    walls = [w for w, _ in runs]
    print(
        f"CLI wall (fresh process, --json): median {statistics.median(walls):.2f} s, "
        f"min {min(walls):.2f} s, max {max(walls):.2f} s; torch never imported"
    )
    api = [api_seconds(lut) for _ in range(5)]
    print(f"Python API on a loaded LUT: median {statistics.median(api) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
