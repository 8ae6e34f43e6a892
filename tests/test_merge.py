"""`latprof merge`: shards back into one LUT, refusing to mix devices, dtypes and versions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_estimate_support import model_specs, synthetic_rows
from typer.testing import CliRunner

from latprof import lut, merge, shard, sweep
from latprof.cli import _register, app
from latprof.grid import GridRequest, expand
from latprof.model import load_model
from latprof.settings import BackendRequest, Settings
from latprof.timing import TimerConfig

_register()
ROOT = Path(__file__).resolve().parent.parent
FAST = TimerConfig(warmup_steps=1, samples=3, min_sample_s=0.0005, max_remeasure=0)
VERSIONS = {"latprof": "0.1.0", "torch": "2.13.0", "triton": "3.7.1", "fla": "0.6.0"}
runner = CliRunner()


def _write(
    path: Path, rows, device_name="synthetic-cpu", versions=None, at="2026-12-02T01:00:00+00:00"
):
    rows = [{**r, "device_name": device_name} for r in rows]
    lut.append_rows(path, rows)
    run = {
        "started_at": at,
        "device": "cpu",
        "device_name": device_name,
        "versions": {**VERSIONS, **(versions or {})},
        "command": f"latprof sweep --out {path}",
    }
    lut.record_run(path, run)
    return path


@pytest.fixture(scope="module")
def flash_rows():
    return synthetic_rows(model_specs(load_model(ROOT / "configs" / "nemotron-flash-1b.yaml")))


def test_two_shards_merged_equal_the_unsharded_sweep(tmp_path):
    settings = Settings("cpu", "float32", "eager", (1,), (16, 32), BackendRequest.parse(("torch",)))
    points = expand(GridRequest(ops=("attention", "ffn"), widths=(128,), settings=settings))
    whole = tmp_path / "whole.csv"
    sweep.run_sweep(points, whole, config=FAST, threads=1)
    parts = []
    for i in range(2):
        part = shard.Shard(i, 2)
        path = tmp_path / f"shard-{i}.csv"
        info = {"shard": shard.provenance(points, part)}
        sweep.run_sweep(shard.select(points, part), path, config=FAST, threads=1, run_info=info)
        parts.append(path)
    summary = merge.merge_luts(parts, tmp_path / "merged.csv")
    assert summary.rows_out == len(points) and summary.duplicates_dropped == 0
    merged, reference = lut.LUT.load(tmp_path / "merged.csv"), lut.LUT.load(whole)
    assert set(merged.index) == set(reference.index)
    assert (tmp_path / "merged.csv").read_text().splitlines()[0] == whole.read_text().splitlines()[
        0
    ]
    for key, row in reference.index.items():
        assert set(merged.index[key]) == set(row)
        same = ("op", "spec", "width", "status", "copies", "params", "bytes_per_step", "device")
        assert {c: merged.index[key][c] for c in same} == {c: row[c] for c in same}
    prov = merged.provenance
    assert sorted(r["shard"]["index"] for r in prov["runs"]) == [0, 1]
    assert {r["source"] for r in prov["runs"]} == {str(p) for p in parts}
    assert [m["path"] for m in prov["merged_from"]] == [str(p) for p in parts]
    assert prov["device_name"] == reference.provenance["device_name"]


def test_luts_of_two_devices_are_refused_naming_both(tmp_path, flash_rows):
    a = _write(tmp_path / "a.csv", flash_rows[:5], device_name="NVIDIA H100 80GB HBM3")
    b = _write(tmp_path / "b.csv", flash_rows[5:10], device_name="NVIDIA A100-SXM4-80GB")
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["merge", str(out), str(a), str(b)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "device differs" in text and "H100" in text and "A100" in text and "--force" in text
    assert not out.exists()
    forced = runner.invoke(app, ["merge", str(out), str(a), str(b), "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["forced"][0].startswith("device differs")
    assert lut.read_provenance(out)["merges"][-1]["forced"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"versions": {"torch": "2.12.0"}}, "torch version differs"),
        ({"versions": {"latprof": "0.2.0"}}, "latprof version differs"),
        ({"versions": {"fla": "0.5.1"}}, "fla version differs"),
        ({"dtype": "bfloat16"}, "dtype differs"),
    ],
)
def test_other_dtypes_and_versions_are_refused(tmp_path, flash_rows, change, message):
    a = _write(tmp_path / "a.csv", flash_rows[:4])
    rows = flash_rows[4:8]
    if "dtype" in change:
        rows = [{**r, "dtype": change["dtype"]} for r in rows]
    b = _write(tmp_path / "b.csv", rows, versions=change.get("versions"))
    with pytest.raises(merge.InputError, match=message):
        merge.merge_luts([a, b], tmp_path / "m.csv")
    assert merge.merge_luts([a, b], tmp_path / "m.csv", force=True).forced


def _latency(median_us: float) -> dict[str, float]:
    """Latency columns a loaded LUT accepts (p10 <= median <= p90)."""
    return {
        "latency_us_median": median_us,
        "latency_us_p10": 0.9 * median_us,
        "latency_us_p90": 1.1 * median_us,
    }


def test_duplicates_keep_the_lower_cv_and_are_counted(tmp_path, flash_rows):
    rows = flash_rows[:6]
    steady = [{**r, "latency_cv": 0.01, **_latency(10.0)} for r in rows[:3]]
    noisy = [{**r, "latency_cv": 0.30, **_latency(99.0)} for r in rows[:3]]
    a = _write(tmp_path / "a.csv", [*noisy, *rows[3:]])
    b = _write(tmp_path / "b.csv", steady)
    error = [{**rows[3], "status": "error", "latency_cv": None, "error": "boom"}]
    c = _write(tmp_path / "c.csv", error)
    summary = merge.merge_luts([a, b, c], tmp_path / "m.csv")
    assert summary.duplicates_dropped == 4 and summary.rows_out == 6 and summary.rows_in == 10
    merged = lut.LUT.load(tmp_path / "m.csv")
    for r in rows[:3]:
        assert merged.index[lut.key_of_row(r)]["latency_us_median"] == 10.0
    assert merged.index[lut.key_of_row(rows[3])]["status"] == "ok"  # ok beats an error row


def test_provenance_of_every_input_is_kept_through_nested_merges(tmp_path, flash_rows):
    a = _write(tmp_path / "a.csv", flash_rows[:3], at="2026-12-01T00:00:00+00:00")
    b = _write(tmp_path / "b.csv", flash_rows[3:6])
    c = _write(tmp_path / "c.csv", flash_rows[6:9])
    merge.merge_luts([a, b], tmp_path / "ab.csv")
    merge.merge_luts([tmp_path / "ab.csv", c], tmp_path / "abc.csv")
    prov = lut.read_provenance(tmp_path / "abc.csv")
    assert len(prov["runs"]) == 3 and prov["created_at"] == "2026-12-01T00:00:00+00:00"
    inner = prov["merged_from"][0]["provenance"]["merged_from"]
    assert [m["path"] for m in inner] == [str(a), str(b)]
    assert len(prov["merges"]) == 2 and len(lut.read_rows(tmp_path / "abc.csv")) == 9
    assert all(len(m["sha256"]) == 64 for m in prov["merged_from"])


def test_merge_into_one_of_its_inputs(tmp_path, flash_rows):
    a = _write(tmp_path / "a.csv", flash_rows[:3])
    b = _write(tmp_path / "b.csv", flash_rows[2:6])
    summary = merge.merge_luts([a, b], a)
    assert summary.rows_out == 6 and summary.duplicates_dropped == 1
    assert len(lut.read_rows(a)) == 6 and len(lut.read_provenance(a)["runs"]) == 2


def test_a_failed_write_leaves_out_as_it_was(tmp_path, flash_rows, monkeypatch):
    a = _write(tmp_path / "a.csv", flash_rows[:3])
    b = _write(tmp_path / "b.csv", flash_rows[3:6])
    out = _write(tmp_path / "out.csv", flash_rows[6:7])
    before = out.read_bytes(), lut.sidecar_path(out).read_bytes()

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        merge.merge_luts([a, b], out)
    assert (out.read_bytes(), lut.sidecar_path(out).read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: d / "missing.csv", "does not exist"),
        (lambda d: (d / "x.csv").write_text("a,b\n1,2\n") and d / "x.csv", "not a latprof LUT"),
        (lambda d: d / "x.txt", "a LUT is a .csv"),
    ],
    ids=["missing", "not-a-lut", "not-csv"],
)
def test_bad_inputs_exit_2(tmp_path, flash_rows, make, message):
    good = _write(tmp_path / "a.csv", flash_rows[:3])
    result = runner.invoke(app, ["merge", str(tmp_path / "m.csv"), str(good), str(make(tmp_path))])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "m.csv").exists()


def test_an_input_without_a_sidecar_is_refused(tmp_path, flash_rows):
    lut.append_rows(tmp_path / "bare.csv", flash_rows[:2])
    with pytest.raises(merge.InputError, match="no provenance sidecar"):
        merge.merge_luts([tmp_path / "bare.csv"], tmp_path / "m.csv")


def test_show_and_estimate_read_a_merged_lut_like_the_whole(tmp_path, flash_rows):
    whole = _write(tmp_path / "whole.csv", flash_rows)
    half = len(flash_rows) // 2
    a = _write(tmp_path / "a.csv", flash_rows[:half])
    b = _write(tmp_path / "b.csv", flash_rows[half:])
    out = tmp_path / "merged.csv"
    assert runner.invoke(app, ["merge", str(out), str(a), str(b)]).exit_code == 0
    config = str(ROOT / "configs" / "nemotron-flash-1b.yaml")

    def estimate(path):
        result = runner.invoke(app, ["estimate", config, "--lut", str(path), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert estimate(out)["totals"] == estimate(whole)["totals"]
    shown = runner.invoke(app, ["show", str(out), "--json"])
    assert shown.exit_code == 0 and len(json.loads(shown.stdout)["rows"]) == len(flash_rows)


def test_inputs_with_the_same_mix_of_dtypes_merge(tmp_path, flash_rows):
    mixed = [*flash_rows[:2], *[{**r, "dtype": "bfloat16"} for r in flash_rows[:2]]]
    a = _write(tmp_path / "a.csv", mixed)
    b = _write(
        tmp_path / "b.csv",
        [*flash_rows[2:4], *[{**r, "dtype": "bfloat16"} for r in flash_rows[2:4]]],
    )
    assert merge.merge_luts([a, b], tmp_path / "m.csv").rows_out == 8
    c = _write(tmp_path / "c.csv", flash_rows[4:6])  # float32 only: not a's dtypes
    with pytest.raises(merge.InputError, match="dtype differs"):
        merge.merge_luts([a, c], tmp_path / "m.csv")
