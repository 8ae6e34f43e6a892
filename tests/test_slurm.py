"""docs/slurm: the job-array script's commands run locally with the array variables set, then
the merge job; the merged LUT equals one unsharded sweep of the same tiny CPU grid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from latprof import lut

ROOT = Path(__file__).resolve().parent.parent
SLURM = ROOT / "docs" / "slurm"
SPEC = """name: tiny
widths: [128]
batch: [1]
context: [16, 32]
ops: {ffn: {}, attention: {}, embedding: {params: {vocab_size: [1000]}}}
"""
FLAGS = "--device cpu --samples 3 --threads 1"

pytestmark = pytest.mark.slow  # three sweep processes and a merge, ~30 s on 2 cores


def _run(script: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "LATPROF": f"{sys.executable} -m latprof.cli",
        "SPEC": str(tmp / "tiny.yaml"),
        "SHARDS": str(tmp / "shards"),
        "OUT": str(tmp / "merged.csv"),
        "SWEEP_ARGS": FLAGS,
        **env,
    }
    return subprocess.run(
        ["bash", str(SLURM / script)],
        cwd=tmp,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_array_tasks_then_merge_equal_one_unsharded_sweep(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SPEC)
    assert "#SBATCH --array=0-" in (SLURM / "sweep-array.sbatch").read_text()
    for task in range(2):
        done = _run(
            "sweep-array.sbatch",
            tmp_path,
            SLURM_ARRAY_TASK_ID=str(task),
            SLURM_ARRAY_TASK_COUNT="2",
        )
        assert done.returncode == 0, done.stderr
    merged = _run("merge.sbatch", tmp_path)
    assert merged.returncode == 0, merged.stderr
    whole = tmp_path / "whole.csv"
    cmd = [
        sys.executable,
        "-m",
        "latprof.cli",
        "sweep",
        "--spec",
        str(tmp_path / "tiny.yaml"),
        *FLAGS.split(),
        "--out",
        str(whole),
        "--json",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    a, b = lut.LUT.load(tmp_path / "merged.csv"), lut.LUT.load(whole)
    assert len(a.rows) == len(b.rows) == 4 and set(a.index) == set(b.index)
    header = lambda p: p.read_text().splitlines()[0]  # noqa: E731
    assert header(tmp_path / "merged.csv") == header(whole)
    for key, row in b.index.items():
        assert set(a.index[key]) == set(row) and a.index[key]["status"] == row["status"] == "ok"
    prov = a.provenance
    assert sorted(str(r["shard"]["index"]) for r in prov["runs"]) == ["0", "1"]
    assert all("--shard" in r["command"] for r in prov["runs"])


def test_merge_job_refuses_a_missing_shard(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SPEC)
    done = _run("sweep-array.sbatch", tmp_path, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="3")
    assert done.returncode == 0, done.stderr
    merged = _run("merge.sbatch", tmp_path)
    assert merged.returncode == 2 and "shard 0 of 3 is missing" in merged.stderr
    assert "sbatch --array=0" in merged.stderr and not (tmp_path / "merged.csv").exists()


def test_array_script_outside_slurm_says_so(tmp_path):
    done = _run("sweep-array.sbatch", tmp_path)
    assert done.returncode != 0 and "run as a Slurm array task" in done.stderr
