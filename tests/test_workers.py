"""One machine's GPUs or cores sweeping one LUT: `latprof sweep --gpus` / `--workers`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from latprof import lut, workers
from latprof.cli import _register, app
from latprof.errors import InputError
from latprof.grid import GridRequest, expand
from latprof.settings import BackendRequest, Settings
from latprof.shard import Shard, canonical_key

_register()
runner = CliRunner()
TINY = ["--device", "cpu", "--ops", "ffn,attention", "--widths", "128", "--context", "16,32"]


def test_gpus_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(
        app, ["sweep", "--ops", "ffn", "--gpus", "all", "--out", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "no CUDA GPU" in " ".join(result.output.split())
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--gpus", "0", "--shard", "0/2"], "cannot be combined"),
        (["--workers", "2", "--ray", "local"], "cannot be combined"),
        (["--shards", "2"], "--shards is for --ray"),
        (["--workers", "0"], "at least 1"),
        (["--workers", "64"], "each worker needs at least one"),
        (["--shard", "2/2"], "0-based"),
    ],
)
def test_bad_fleet_flags_exit_2(tmp_path, flags, message):
    result = runner.invoke(app, ["sweep", *TINY, *flags, "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in " ".join(result.output.split())


def test_gpu_lists():
    assert workers.parse_gpus("all", 4) == [0, 1, 2, 3]
    assert workers.parse_gpus("2, 0", 4) == [2, 0]
    for bad in ("4", "0,0", "x", ""):
        with pytest.raises(InputError, match="--gpus"):
            workers.parse_gpus(bad, 4)
    with pytest.raises(InputError, match="no CUDA GPU"):
        workers.parse_gpus("0", 0)


def test_gpu_workers_pin_one_visible_gpu_each(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    plan = workers.gpu_workers([1, 3], ["--spec", "s.yaml", "--out", "o.csv"])
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in plan] == ["5", "7"]
    assert [str(w.shard) for w in plan] == ["0/2", "1/2"]
    assert plan[1].rerun_command == (
        "CUDA_VISIBLE_DEVICES=7 latprof sweep --spec s.yaml --out o.csv --device cuda --shard 1/2"
    )


def test_core_groups_are_disjoint_and_cover():
    assert workers.core_groups(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert workers.core_groups(3, [5, 1, 3]) == [[1], [3], [5]]
    with pytest.raises(InputError, match="at least one"):
        workers.core_groups(3, [0, 1])


FAKE_WORKER = """
import os, sys, signal, json
args = sys.argv[1:]
progress = args[args.index("--progress-file") + 1]
shard = args[args.index("--shard") + 1]
open(progress, "w").write("3 4\\n")
if shard.startswith("1/"):
    print("CUDA error: an illegal memory access", file=sys.stderr)
    os.kill(os.getpid(), signal.SIGKILL)
print(json.dumps({"points_total": 4, "measured": 3, "skipped_existing": 1}))
"""


def test_a_dead_worker_is_reported_with_its_shard_and_rerun_command():
    plan = [
        workers.Worker(Shard(i, 2), f"core {i}", ["--out", "x.csv", "--shard", f"{i}/2"])
        for i in range(2)
    ]
    seen = []
    outcomes = workers.run_workers(
        plan, lambda d, t, label: seen.append((d, t)), [sys.executable, "-c", FAKE_WORKER]
    )
    assert [o.failed for o in outcomes] == [False, True]
    report = outcomes[1].report()
    assert "shard 1/2 (core 1) was killed by SIGKILL" in report
    assert "latprof sweep --out x.csv --shard 1/2" in report and "illegal memory access" in report
    total = workers.totals(outcomes)
    assert total["measured"] == 3 and total["failed"] == [report]
    assert total["workers"][1]["rerun"] and total["workers"][0]["rerun"] is None
    assert seen[-1] == (6, 8)  # both workers' progress, summed


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin two workers")
def test_two_pinned_cpu_workers_fill_one_lut(tmp_path):
    out = tmp_path / "lut.csv"
    cmd = [
        sys.executable,
        "-m",
        "latprof.cli",
        "sweep",
        *TINY,
        "--samples",
        "3",
        "--workers",
        "2",
        "--out",
        str(out),
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    settings = Settings("cpu", "float32", "eager", (1,), (16, 32), BackendRequest.parse(("torch",)))
    grid = expand(GridRequest(ops=("ffn", "attention"), widths=(128,), settings=settings))
    keys = [lut.key_of_row(r) for r in lut.read_rows(out)]
    assert sorted(keys) == sorted(canonical_key(p) for p in grid)  # every point, once
    assert summary["measured"] == len(grid) and summary["failed"] == []
    runs = lut.read_provenance(out)["runs"]
    assert sorted(r["shard"]["index"] for r in runs) == [0, 1]
    cores = [set(r["pinning"]["cpu_affinity"]) for r in runs]
    assert not cores[0] & cores[1], "each worker on its own cores"
    assert all(r["threads"] == len(c) for r, c in zip(runs, cores, strict=True))
