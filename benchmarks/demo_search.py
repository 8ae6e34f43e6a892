"""The search demonstration of BENCHMARKS.md: search a Flash-like space on a CPU LUT, then check
end to end whether the LUT's ranking holds for what the search picked.

    .venv/bin/python benchmarks/demo_search.py [--lut luts/cpu-intel-xeon-2core.csv]

Runs the same search as `latprof search configs/search/flash-cpu.yaml --budget-s 2.2 --seed 0
--generations 20`, writes the three best candidates and the two rejected ones closest above the
budget to benchmarks/results/search-demo/picked/, and runs `latprof compare` on those five
(contexts 128 and 256, with the same-session control), printing both rankings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from latprof.config_yaml import model_to_yaml
from latprof.estimate import Estimator
from latprof.search import Search, Space

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks/results/search-demo"
BUDGET_S = 2.2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lut", default=str(ROOT / "luts/cpu-intel-xeon-2core.csv"))
    lut = parser.parse_args().lut
    space = Space.load(ROOT / "configs/search/flash-cpu.yaml")
    search = Search(space, Estimator(lut), budget_s=BUDGET_S, prompt=128, generate=128, seed=0)
    result = search.run(20)
    rejected = sorted(
        (c for c in search.seen.values() if c.status == "over_budget"), key=lambda c: c.latency_s
    )[:2]
    picked = OUT / "picked"
    picked.mkdir(parents=True, exist_ok=True)
    for old in picked.glob("*.yaml"):
        old.unlink()
    for tag, cands in (("best", result.top[:3]), ("rejected", rejected)):
        for i, c in enumerate(cands, 1):
            model = c.genome.model(space)
            (picked / f"{tag}{i}-{model.name}.yaml").write_text(
                model_to_yaml(
                    model, f"search demo {tag} {i}: {c.key}, LUT {c.latency_s:.4g} s, {c.status}"
                )
            )
            print(
                f"{tag} {i}: {c.key} LUT {c.latency_s:.4g} s for 128 tokens, "
                f"{c.params / 1e6:.1f} M params"
            )
    cmd = [
        sys.executable,
        "-m",
        "latprof.cli",
        "compare",
        *map(str, sorted(picked.glob("*.yaml"))),
        "--device",
        "cpu",
        "--lut",
        lut,
        "--context",
        "128,256",
        "--same-session",
        "--json",
    ]
    doc = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    (OUT / "compare.json").write_text(json.dumps(doc, indent=2) + "\n")
    for p in doc["points"]:
        print(
            f"{p['model']} @ {p['context']}: LUT {p['estimate_us'] / 1e3:.2f} ms, measured "
            f"{p['measured_us'] / 1e3:.2f} ms ({p['error_pct']:+.1f}%), same-session rows "
            f"{p['same_session_estimate_us'] / 1e3:.2f} ms"
        )
    s = doc["summary"]["all"]
    print(
        f"all: median |err| {s['median_abs_error_pct']:.1f}%, Kendall tau "
        f"{s['kendall_tau']:.3f}, flipped pairs {s['discordant_pairs']}/{s['pairs']}"
    )


if __name__ == "__main__":
    main()
