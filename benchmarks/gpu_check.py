"""All of latprof's GPU work in one command, for a node with a GPU, no network and a short slot.

    python3 benchmarks/gpu_check.py --wheelhouse wheelhouse --out gpu-check-out [--device cpu]

(`make gpu-check` runs it.)  Standard library only: latprof is not installed when it starts.
Stages, in order, each under its own time budget (a stage past its budget is killed and marked
so; the next one starts), each writing into `--out` as it goes, so a run cut short keeps every
stage it finished (at most 7 files):

  install     pip --no-index --no-deps of every wheel in the wheelhouse into a fresh target
              folder (PYTHONPATH); torch and triton are never touched: the wheelhouse may not
              hold them, and their versions are compared before and after  -> summary.log
  gpu-tests   pytest -m gpu                               -> gpu-tests.log, gpu-tests.xml
  smoke-graph latprof sweep luts/gpu-smoke.yaml, graph mode -> smoke.csv (+ smoke.json sidecar,
              smoke.csv.lock), its output in summary.log
  smoke-eager the same rows at batch 1 in eager mode, appended to smoke.csv
  compare     latprof compare on four compare-set configs with that LUT  -> e2e.log
  decode      latprof decode at the paper's protocol (prompt 128, 8000 tokens) -> e2e.log

`--device cpu` is the dry run CI does: GPU-only stages say "skipped: no GPU", the others run on
tiny shapes.  Every stage runs the *installed* latprof (python -P, from a folder outside the
repository), so the run also checks the wheelhouse.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the four compare-set configs: softmax attention, Mamba2, gated DeltaNet and a hybrid
COMPARE_SET = (
    "attention-w1024-d6.yaml",
    "mamba2-w1024-d24.yaml",
    "gated-deltanet-w1024-d12.yaml",
    "hybrid-flash-w1024-d12.yaml",
)
#: the dry run's four (CPU, tiny shapes): the smallest of the same kinds
COMPARE_SET_CPU = (
    "attention-w256-d12.yaml",
    "mamba2-w512-d12.yaml",
    "gated-deltanet-w256-d36.yaml",
    "hybrid-w256-d36.yaml",
)
#: seconds per stage on a GPU: 8 minutes in all
BUDGET_S = {
    "install": 30,
    "gpu-tests": 90,
    "smoke-graph": 220,  # ~3 min estimated for 96 rows (luts/gpu-smoke.yaml's header)
    "smoke-eager": 40,
    "compare": 50,
    "decode": 50,
}
NEVER_INSTALLED = ("torch", "triton")
#: the CPU dry run's sweep: one tiny row per family
TINY_SPEC = """name: gpu-check-dry-run
widths: [256]
batch: [1]
context: [128]
backends: [torch]
ops:
  attention: {}
  ffn: {}
  moe: {mode: eager}
  mamba: {}
  mamba2: {}
  deltanet: {}
  gated_deltanet: {}
  gla: {}
  kda: {}
  embedding: {params: {vocab_size: [1024]}}
  lm_head: {params: {vocab_size: [1024]}}
"""


class Run:
    """Stage bookkeeping: every line goes to summary.log at once (flushed)."""

    def __init__(self, out: Path, device: str, site: Path) -> None:
        self.out, self.device, self.site = out, device, site
        self.summary = (out / "summary.log").open("a", buffering=1)
        self.results: dict[str, str] = {}

    def log(self, line: str) -> None:
        print(line, flush=True)
        self.summary.write(line + "\n")

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(self.site), PYTHONUNBUFFERED="1")
        env.pop("TRITON_INTERPRET", None)
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def stage(
        self,
        name: str,
        cmd: list[str],
        log_name: str,
        *,
        gpu_only: bool = False,
        cwd: Path | None = None,
        budget_s: float | None = None,
    ) -> str:
        if gpu_only and self.device != "cuda":
            return self._done(name, "skipped: no GPU", 0.0)
        budget = budget_s or BUDGET_S[name]
        self.log(f"[{name}] budget {budget:.0f} s: {' '.join(cmd)}")
        start = time.monotonic()
        with (self.out / log_name).open("a", buffering=1) as log:
            log.write(f"==== {name}: {' '.join(cmd)}\n")
            log.flush()
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    cwd=cwd or self.out,
                    timeout=budget,
                )
                status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            except subprocess.TimeoutExpired:
                status = f"killed: over its {budget:.0f} s budget"
        return self._done(name, status, time.monotonic() - start)

    def _done(self, name: str, status: str, seconds: float) -> str:
        self.results[name] = status
        self.log(f"[{name}] {status} ({seconds:.1f} s)")
        return status


def _versions(python: str, env: dict[str, str]) -> str:
    code = "import torch, triton; print(torch.__version__, triton.__version__)"
    proc = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, env=env)
    return proc.stdout.strip() or proc.stderr.strip()[-300:]


def install(run: Run, wheelhouse: Path) -> bool:
    wheels = sorted(wheelhouse.glob("*.whl"))
    bad = [w.name for w in wheels if w.name.split("-")[0].lower() in NEVER_INSTALLED]
    if not wheels or bad:
        why = f"refusing torch/triton wheels {bad}" if bad else f"no wheels in {wheelhouse}"
        run._done("install", f"failed: {why}", 0.0)
        return False
    before = _versions(sys.executable, dict(os.environ, PYTHONPATH=""))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--target",
        str(run.site),
        *map(str, wheels),
    ]
    status = run.stage("install", cmd, "summary.log")
    after = _versions(sys.executable, run.env())
    run.log(f"[install] torch, triton before: {before}; after: {after}")
    if after != before:
        run._done("install", "failed: torch or triton changed", 0.0)
        return False
    return status == "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheelhouse", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check-out")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--site", type=Path, help="install folder (default: a fresh temp dir)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    site = (args.site or Path(tempfile.mkdtemp(prefix="latprof-gpu-check-"))).resolve()
    run = Run(out, args.device, site)
    run.log(f"latprof gpu-check on {args.device}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    if not install(run, args.wheelhouse.resolve()):
        return 1
    py = [sys.executable, "-P"]  # -P: never the repository's sources, only what was installed
    latprof = [*py, "-m", "latprof.cli"]
    gpu = args.device == "cuda"
    run.stage(
        "gpu-tests",
        [
            *py,
            "-m",
            "pytest",
            "-q",
            "-m",
            "gpu",
            "-p",
            "no:cacheprovider",
            f"--junitxml={out / 'gpu-tests.xml'}",
            str(ROOT / "tests"),
        ],
        "gpu-tests.log",
        gpu_only=True,
        cwd=ROOT,
    )
    lut = out / "smoke.csv"
    smoke = ROOT / "luts" / "gpu-smoke.yaml"
    run.stage(
        "smoke-graph",
        [
            *latprof,
            "sweep",
            "--spec",
            str(smoke),
            "--out",
            str(lut),
            "--device",
            "cuda",
            "--samples",
            "15",
        ],
        "summary.log",
        gpu_only=True,
    )
    eager_spec = site / "smoke-eager.yaml"
    eager_spec.write_text(_eager_batch1(smoke) if gpu else TINY_SPEC)
    run.stage(
        "smoke-eager",
        [
            *latprof,
            "sweep",
            "--spec",
            str(eager_spec),
            "--out",
            str(lut),
            "--device",
            args.device,
            "--mode",
            "eager",
            *(["--samples", "15"] if gpu else ["--samples", "3"]),
        ],
        "summary.log",
        budget_s=None if gpu else 600,
    )
    configs = [
        str(ROOT / "configs" / "compare-set" / c) for c in (COMPARE_SET if gpu else COMPARE_SET_CPU)
    ]
    shape = ["--context", "1024,8192"] if gpu else ["--context", "64", "--samples", "3"]
    run.stage(
        "compare",
        [
            *latprof,
            "compare",
            *configs,
            "--lut",
            str(lut),
            "--measure-missing",
            "--device",
            args.device,
            "--batch",
            "1",
            *shape,
        ],
        "e2e.log",
        budget_s=None if gpu else 900,
    )
    protocol = ["--prompt", "128", "--generate", "8000"] if gpu else ["--prompt", "8"]
    protocol += [] if gpu else ["--generate", "4"]
    model = ROOT / "configs" / "nemotron-flash-1b.yaml"
    if not gpu:
        model = ROOT / "configs" / "compare-set" / "hybrid-w256-d36.yaml"
    run.stage(
        "decode",
        [*latprof, "decode", str(model), *protocol, "--device", args.device],
        "e2e.log",
        budget_s=None if gpu else 300,
    )
    run.log("summary: " + json.dumps(run.results))
    (out / "smoke.csv.lock").unlink(missing_ok=True)
    files = sorted(p.name for p in out.iterdir())
    run.log(f"files in {out}: {files}")
    if args.site is None:
        shutil.rmtree(site, ignore_errors=True)
    failed = [k for k, v in run.results.items() if not (v == "ok" or v.startswith("skipped"))]
    return 1 if failed else 0


def _eager_batch1(spec: Path) -> str:
    """gpu-smoke.yaml with batch 1 only and eager mode for every row."""
    lines = []
    for line in spec.read_text().splitlines():
        if line.startswith("batch:"):
            line = "batch: [1]"
        elif line.startswith("mode:"):
            line = "mode: eager"
        elif line.startswith("name:"):
            line = "name: gpu-smoke-eager-batch1"
        lines.append(line)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
