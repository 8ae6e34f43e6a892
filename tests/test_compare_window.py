"""Whole models with sliding-window attention, LFM2's short conv and the attention variants of
published models: `latprof compare` measures their rows, builds them end to end and decodes
past the window."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from latprof.cli import _register, app

_register()
runner = CliRunner()

TINY_WINDOW = (
    "name: tiny-window\nwidth: 128\nvocab_size: 512\n"
    "pattern: 'attention_window ffn short_conv ffn attention ffn'\n"
    "defaults:\n"
    "  attention_window: {heads: 2, kv_heads: 1, head_dim: 64, window: 8, qk_norm: true,"
    " post_norm: true}\n"
    "  attention: {heads: 2, kv_heads: 1, head_dim: 64, out_gate: true, qkv_bias: true}\n"
    "  ffn: {post_norm: true}\n"
)


@pytest.mark.slow  # measures its LUT rows first: about a minute on a free 2-core CPU
def test_compare_runs_a_windowed_model_past_its_window(tmp_path):
    config = tmp_path / "tiny-window.yaml"
    config.write_text(TINY_WINDOW)
    lut = tmp_path / "lut.csv"
    args = [
        "compare",
        str(config),
        "--device",
        "cpu",
        "--lut",
        str(lut),
        "--context",
        "16,64",
        "--samples",
        "3",
        "--measure-missing",
        "--generate",
        "4",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(p["context"] for p in report["points"]) == [16, 64]  # past the window of 8
    assert all(p["estimate_us"] > 0 and p["measured_us"] > 0 for p in report["points"])
    assert report["generations"][0]["measured_s"] > 0
    rows = lut.read_text()
    assert "attention_window(width=128" in rows and "window=8" in rows
    assert "out_gate=true" in rows and "qkv_bias=true" in rows and "short_conv(width=128" in rows


TINY_KIMI = (
    "name: tiny-kimi\nwidth: 128\nvocab_size: 512\n"
    "pattern: '(kda ffn kda moe mla moe)'\n"
    "defaults:\n"
    "  kda: {heads: 2, head_dim: 32, gate_rank: 32}\n"
    "  mla: {heads: 2, kv_lora_rank: 64, qk_nope_head_dim: 32, qk_rope_head_dim: 16,"
    " v_head_dim: 32, rope: false}\n"
    "  moe: {experts: 4, top_k: 2, expert_dim: 64, shared_expert_dim: 64}\n"
)


@pytest.mark.slow  # measures its LUT rows first
def test_compare_runs_a_kimi_linear_shaped_model(tmp_path):
    """KDA, MLA and a MoE with a shared expert, end to end against their LUT rows."""
    config = tmp_path / "tiny-kimi.yaml"
    config.write_text(TINY_KIMI)
    lut = tmp_path / "lut.csv"
    args = ["compare", str(config), "--device", "cpu", "--lut", str(lut), "--context", "16,64",
            "--samples", "3", "--measure-missing", "--generate", "4", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(p["estimate_us"] > 0 and p["measured_us"] > 0 for p in report["points"])
    rows = lut.read_text()
    assert "kda(width=128" in rows and "mla(width=128" in rows and "rope=false" in rows
