"""`latprof sweep --ray`: one Ray task per shard on a local Ray instance (CPU tasks), merged.

Ray is an optional extra; without it these tests skip, except where LATPROF_REQUIRE_RAY=1 (CI
sets it, so there they run or fail)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from latprof import lut, ray_sweep, shard
from latprof.cli import _register, app
from latprof.grid import GridRequest, expand
from latprof.lut import Setting
from latprof.registry import build_spec
from latprof.settings import BackendRequest, Settings
from latprof.timing import TimerConfig

if os.environ.get("LATPROF_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="Ray is the optional extra latprof[ray]; not installed")
import ray  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray instance takes ~10 s to start on a small machine
_register()
runner = CliRunner()
TINY = ["--device", "cpu", "--ops", "ffn,attention", "--widths", "128", "--context", "16,32"]
FAST = TimerConfig(warmup_steps=1, samples=3, min_sample_s=0.0005, max_remeasure=0)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _grid():
    settings = Settings("cpu", "float32", "eager", (1,), (16, 32), BackendRequest.parse(("torch",)))
    return expand(GridRequest(ops=("ffn", "attention"), widths=(128,), settings=settings))


def test_two_shards_on_ray_make_the_whole_lut(local_ray, tmp_path):
    out = tmp_path / "lut.csv"
    args = ["sweep", *TINY, "--samples", "3", "--threads", "1", "--ray", "local", "--shards", "2"]
    result = runner.invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    grid = _grid()
    assert summary["failed"] == [] and summary["measured"] == len(grid)
    keys = [lut.key_of_row(r) for r in lut.read_rows(out)]
    assert sorted(keys) == sorted(shard.canonical_key(p) for p in grid)
    prov = lut.read_provenance(out)
    assert sorted(r["shard"]["index"] for r in prov["runs"]) == [0, 1]
    assert {r["shard"]["count"] for r in prov["runs"]} == {2}
    shards = sorted(p.name for p in ray_sweep.shard_folder(out).glob("*.csv"))
    assert shards == ["shard-0-of-2.csv", "shard-1-of-2.csv"]
    again = json.loads(runner.invoke(app, [*args, "--out", str(out), "--json"]).stdout)
    assert again["measured"] == 0 and len(lut.read_rows(out)) == len(grid)  # nothing re-sent


def test_a_failing_shard_is_retried_then_reported_and_the_rest_merged(local_ray, tmp_path):
    good = _grid()[:1]
    spec = build_spec("attention", 128)
    bad = [(spec, Setting("decode", 1, 16, "float32", "cpu", "flash_attn", "eager"))]
    plan = [(shard.Shard(0, 2), good, {}), (shard.Shard(1, 2), bad, {})]
    out = tmp_path / "lut.csv"
    summary = ray_sweep.run_on_ray(
        plan,
        out,
        address=None,
        threads=1,
        config=FAST,
        command="test",
        rerun=lambda s: f"latprof sweep ... --shard {s}",
    )
    assert len(summary.failed) == 1
    assert "shard 1/2 failed twice" in summary.failed[0]
    assert "cannot run here" in summary.failed[0] and "--shard 1/2" in summary.failed[0]
    assert [r["spec"] for r in lut.read_rows(out)] == [good[0][0].key]
