"""`latprof compare` end to end on tiny models: rows measured if asked, statistics, plot, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from latprof.cli import _register, app

_register()
runner = CliRunner()

TINY = {
    "tiny-attn.yaml": "name: tiny-attn\nwidth: 128\nvocab_size: 512\npattern: '(attention ffn)*2'\n"
    "defaults: {attention: {heads: 2, kv_heads: 1, head_dim: 64}}\n",
    "tiny-mamba2.yaml": "name: tiny-mamba2\nwidth: 128\nvocab_size: 512\npattern: 'mamba2 ffn'\n"
    "defaults: {mamba2: {head_dim: 32, d_state: 16}}\n",
}


@pytest.fixture
def configs(tmp_path):
    paths = []
    for name, text in TINY.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    return paths


def test_compare_measures_missing_rows_and_reports_statistics(configs, tmp_path):
    lut = tmp_path / "lut.csv"
    plot = tmp_path / "plot.png"
    args = [
        "compare",
        *configs,
        "--device",
        "cpu",
        "--lut",
        str(lut),
        "--context",
        "16,64",
        "--samples",
        "5",
        "--measure-missing",
        "--generate",
        "4",
        "--plot",
        str(plot),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["measured_missing_rows"] > 0 and lut.exists()
    points = report["points"]
    assert sorted((p["model"], p["context"]) for p in points) == [
        ("tiny-attn", 16),
        ("tiny-attn", 64),
        ("tiny-mamba2", 16),
        ("tiny-mamba2", 64),
    ]
    for p in points:
        assert p["estimate_us"] > 0 and p["measured_us"] > 0
        assert p["error_pct"] == pytest.approx(100 * (p["estimate_us"] / p["measured_us"] - 1))
    summary = report["summary"]["all"]
    assert summary["n"] == 4 and -1 <= summary["kendall_tau"] <= 1
    assert 0 <= summary["within_5pct"] <= summary["within_10pct"] <= 1
    generations = report["generations"]
    assert len(generations) == 2 and all(g["measured_s"] > 0 for g in generations)
    assert plot.stat().st_size > 10_000
    # the LUT now has every row: a second run measures nothing
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["measured_missing_rows"] == 0


def test_missing_lut_without_measure_missing_is_exit_2(configs, tmp_path):
    result = runner.invoke(
        app, ["compare", *configs, "--device", "cpu", "--lut", str(tmp_path / "none.csv")]
    )
    assert result.exit_code == 2 and "--measure-missing" in result.output


def test_unknown_config_format_is_exit_2(tmp_path):
    bad = tmp_path / "model.txt"
    bad.write_text("width: 1")
    result = runner.invoke(
        app, ["compare", str(bad), "--device", "cpu", "--lut", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == 2 and "unknown model config format" in result.output


def test_same_session_control_sums_rows_timed_beside_each_model(configs, tmp_path):
    lut = tmp_path / "lut.csv"
    args = [
        "compare",
        *configs,
        "--device",
        "cpu",
        "--lut",
        str(lut),
        "--context",
        "16",
        "--samples",
        "5",
        "--measure-missing",
        "--same-session",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for p in report["points"]:
        assert p["same_session_estimate_us"] > 0
        expected = 100 * (p["same_session_estimate_us"] / p["measured_us"] - 1)
        assert p["same_session_error_pct"] == pytest.approx(expected)
    assert report["summary"]["same_session"]["n"] == 2
    table = runner.invoke(app, args[:-1])
    assert table.exit_code == 0 and "same-session sum" in table.output


def test_graph_mode_skips_models_that_cannot_be_captured():
    from latprof.compare import _graph_capturable
    from latprof.model_spec import ModelSpec
    from latprof.registry import build_spec

    dense = ModelSpec("dense", 128, 97, (build_spec("ffn", 128),))
    moe = ModelSpec("moe", 128, 97, (build_spec("moe", 128, experts=4, top_k=2),))
    configs, models, notes = _graph_capturable(["a.yaml", "b.yaml"], [dense, moe], {})
    assert configs == ["a.yaml"] and models == [dense]
    assert len(notes) == 1 and notes[0].startswith("moe skipped: its moe step synchronises")
