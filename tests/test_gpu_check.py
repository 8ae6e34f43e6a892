"""`make gpu-check`'s script without a GPU (the dry run CI does): latprof is installed from a
wheelhouse into a fresh folder with no index, the GPU-only stages say "skipped: no GPU", the rest
runs on tiny shapes with the installed latprof, and the output folder stays within its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import check_wheelhouse  # noqa: E402
import gpu_check  # noqa: E402


def _latprof_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
           "--no-index", "-w", str(folder), str(ROOT)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (wheel,) = folder.glob("latprof-*.whl")
    return wheel


def test_wheelhouse_check_refuses_torch_and_names_what_is_missing(tmp_path):
    (tmp_path / "torch-2.11.0-cp312-cp312-linux_x86_64.whl").write_bytes(b"x")
    (tmp_path / "latprof-0.1.0-py3-none-any.whl").write_bytes(b"x")
    found = check_wheelhouse.problems(tmp_path)
    assert "holds torch (never installed)" in found
    assert "missing fla_core" in found and "missing latprof" not in found


def test_eager_spec_keeps_the_rows_at_batch_one():
    text = gpu_check._eager_batch1(ROOT / "luts" / "gpu-smoke.yaml")
    assert "batch: [1]\n" in text and "mode: eager\n" in text and "widths: [1024, 2048]" in text
    assert sum(gpu_check.BUDGET_S.values()) <= 8 * 60


def test_the_smoke_spec_covers_every_operator_family():
    import yaml

    from latprof.registry import OPERATOR_NAMES

    spec = yaml.safe_load((ROOT / "luts" / "gpu-smoke.yaml").read_text())
    assert set(spec["ops"]) == set(OPERATOR_NAMES)


@pytest.mark.slow
def test_cpu_dry_run_installs_from_the_wheelhouse_and_runs_every_stage(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheel = _latprof_wheel(wheelhouse)
    out, site = tmp_path / "out", tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
           "--wheelhouse", str(wheelhouse), "--out", str(out), "--site", str(site)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    summary = (out / "summary.log").read_text()
    assert proc.returncode == 0, summary[-4000:]
    results = json.loads(summary.split("summary: ", 1)[1].splitlines()[0])
    assert results == {
        "install": "ok",
        "gpu-tests": "skipped: no GPU",
        "smoke-graph": "skipped: no GPU",
        "smoke-eager": "ok",
        "compare": "ok",
        "decode": "ok",
    }
    # the stages ran the wheel's latprof, from the install folder, not the repository
    assert (site / "latprof" / "kernels" / "decode_attention.py").exists()
    assert wheel.name.startswith("latprof-")
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"smoke.csv", "smoke.json", "e2e.log"} <= set(files), files
    code = "import latprof, sys; print(latprof.__file__)"
    where = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                           env=dict(env, PYTHONPATH=str(site)), cwd=tmp_path)  # fmt: skip
    assert where.stdout.strip().startswith(str(site)), where
