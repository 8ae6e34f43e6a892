"""Speed of `latprof estimate`: the figures behind the goals in issue 3.

    python benchmarks/bench_estimate.py [--models 5000] [--cli-runs 5] [--rows 6000]

- **CLI wall time**: `latprof estimate configs/nemotron-flash-1b.yaml --lut LUT --generate 8000`
  as a fresh process (interpreter start, imports, LUT load, estimate, table), median of
  --cli-runs runs; goal <= 1 s on a 2-core CPU.  The same with `--json`.
- **Python API**: one `Estimator` per LUT, then `decode_latency_us(model, ...)` for many
  candidate models of a search loop; goal >= 10,000 specs/s.  Reported cold (first pass: every
  distinct layer spec looked up once) and warm (second pass, per-spec sums cached), plus the full
  per-layer `estimate(...)` and building the candidate ModelSpec too.

The LUT is synthetic (latency = a + b * context, like the tests') but shaped like a real sweep:
every operator family at several widths, batches and contexts, --rows rows in all.  Timings are of
the arithmetic and parsing, which do not depend on the numbers in it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_estimate_support import model_specs, synthetic_rows  # noqa: E402

from latprof.estimate import Estimator  # noqa: E402
from latprof.lut import append_rows  # noqa: E402
from latprof.model import ModelSpec, load_model  # noqa: E402
from latprof.registry import build_spec  # noqa: E402

CONFIG = ROOT / "configs" / "nemotron-flash-1b.yaml"
WIDTHS = (1024, 1536, 2048, 2560, 3072)
MIXERS = ("attention", "mamba2", "deltanet", "gated_deltanet", "gla", "mamba")
CLI = (
    "import sys; from latprof.cli import _register, app; import latprof.cli.estimate; "
    "_register(); app(sys.argv[1:])"
)


def palette(width: int) -> dict[str, object]:
    specs = {op: build_spec(op, width) for op in MIXERS}
    specs["ffn"] = build_spec("ffn", width)
    return specs


def write_lut(path: Path, rows_wanted: int) -> None:
    """The flash model's specs, then every family at WIDTHS, batches and contexts, until about
    `rows_wanted` rows."""
    rows = synthetic_rows(model_specs(load_model(CONFIG)), batches=(1, 8, 32))
    specs = [s for w in WIDTHS for s in palette(w).values()]
    specs += [
        build_spec(op, w, vocab_size=32000) for op in ("embedding", "lm_head") for w in WIDTHS
    ]
    batches = (1, 2, 4, 8, 16, 32, 64, 128)
    contexts = (128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    rows += synthetic_rows(specs, batches=batches, contexts=contexts)
    while len(rows) < rows_wanted:  # more modes of the same grid, as a long-lived LUT holds
        rows += synthetic_rows(specs, batches=batches, contexts=contexts, mode=f"graph{len(rows)}")
    append_rows(path, rows[: max(rows_wanted, 1)])


def candidates(n: int, seed: int = 0) -> list[ModelSpec]:
    """Random hybrids of a search loop: 8-40 blocks of (mixer, ffn) at one of WIDTHS."""
    rng = random.Random(seed)
    palettes = {w: palette(w) for w in WIDTHS}
    models = []
    for i in range(n):
        width = rng.choice(WIDTHS)
        p = palettes[width]
        layers: list = []
        for _ in range(rng.randint(8, 40)):
            layers += [p[rng.choice(MIXERS)], p["ffn"]]
        models.append(ModelSpec(f"c{i}", width, 32000, tuple(layers), True, rng.choice((0, 256))))
    return models


def bench_cli(lut: Path, runs: int, extra: list[str]) -> float:
    args = [
        sys.executable,
        "-c",
        CLI,
        "estimate",
        str(CONFIG),
        "--lut",
        str(lut),
        "--generate",
        "8000",
        "--mode",
        "eager",
        *extra,
    ]
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def rate(fn, models: list[ModelSpec]) -> float:
    t0 = time.perf_counter()
    for m in models:
        fn(m)
    return len(models) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=6000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lut = Path(tmp) / "synthetic.csv"
        write_lut(lut, args.rows)
        print(f"LUT: {args.rows:,} synthetic rows; model: {CONFIG.relative_to(ROOT)}")
        for extra in ([], ["--json"]):
            wall = bench_cli(lut, args.cli_runs, extra)
            label = " ".join(["latprof estimate", *extra])
            print(
                f"CLI  {label:<28} median wall {wall:.3f} s over {args.cli_runs} runs"
                f"  (goal <= 1 s)"
            )

        t0 = time.perf_counter()
        est = Estimator(lut, mode="eager")
        load_s = time.perf_counter() - t0
        models = candidates(args.models)
        query = {"batch": 1, "prompt": 1024, "generate": 1024}
        cold = rate(lambda m: est.decode_latency_us(m, **query), models)
        warm = rate(lambda m: est.decode_latency_us(m, **query), models)
        full = rate(lambda m: est.estimate(m, **query), models)
        layers = [m.layers for m in models]

        def build_and_estimate(i: int) -> float:
            m = models[i]
            fresh = ModelSpec(m.name, m.width, m.vocab_size, layers[i], True, m.meta_tokens)
            return est.decode_latency_us(fresh, **query)

        t0 = time.perf_counter()
        for i in range(len(models)):
            build_and_estimate(i)
        built = len(models) / (time.perf_counter() - t0)
        blocks = statistics.mean(len(m.layers) for m in models)
        print(f"API  Estimator(LUT) load + index: {load_s * 1e3:.0f} ms")
        print(f"API  decode_latency_us, {len(models):,} models of {blocks:.0f} layers on average:")
        print(f"       cold {cold:>10,.0f} specs/s   warm {warm:>10,.0f} specs/s  (goal >= 10,000)")
        print(f"API  ModelSpec(...) + decode_latency_us: {built:>10,.0f} specs/s")
        print(f"API  estimate() with per-layer rows:    {full:>10,.0f} specs/s")


if __name__ == "__main__":
    main()
