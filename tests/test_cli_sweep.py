"""`latprof sweep` and `latprof show` through the CLI: exit codes, messages, JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from latprof.cli import _register, app

_register()
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args))


BAD_INPUTS = [
    (
        ["sweep", "--device", "cpu", "--ops", "ffn,warp_drive", "--out", "X.csv"],
        "unknown operator 'warp_drive'",
    ),
    (
        ["sweep", "--device", "cpu", "--ops", "ffn", "--batch", "1,x", "--out", "X.csv"],
        "not an integer",
    ),
    (["sweep", "--device", "cpu", "--ops", "ffn", "--batch", "0", "--out", "X.csv"], "positive"),
    (
        ["sweep", "--device", "cpu", "--ops", "ffn", "--mode", "graph", "--out", "X.csv"],
        "CUDA graphs",
    ),
    (["sweep", "--device", "cpu", "--out", "X.csv"], "say what to measure"),
    (
        ["sweep", "--device", "cpu", "--ops", "ffn", "--dtype", "fp8", "--out", "X.csv"],
        "unknown dtype",
    ),
    (
        ["sweep", "--device", "cpu", "--ops", "ffn", "--phase", "train", "--out", "X.csv"],
        "unknown phase",
    ),
    (
        ["sweep", "--device", "cpu", "--ops", "ffn", "--backend", "fla", "--out", "X.csv"],
        "ffn has no backend",
    ),
    (
        [
            "sweep",
            "--device",
            "cpu",
            "--ops",
            "attention",
            "--backend",
            "attention=flash_attn",
            "--out",
            "X.csv",
        ],
        "cannot run here",
    ),
    (
        [
            "sweep",
            "--device",
            "cpu",
            "--op-spec",
            "ffn(width=64,ffn_dim=-1,activation=swiglu)",
            "--out",
            "X.csv",
        ],
        "positive integer",
    ),
    (
        ["sweep", "--device", "cpu", "--ops", "attention", "--widths", "100", "--out", "X.csv"],
        "smaller than",
    ),
    (["show", "does-not-exist.csv"], "does not exist"),
]


@pytest.mark.parametrize(
    "args,message", BAD_INPUTS, ids=[a[1][-1] + ":" + m for a, m in BAD_INPUTS]
)
def test_bad_input_exits_2_with_a_message(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "X.csv").exists()


def test_cuda_without_a_gpu_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _invoke("sweep", "--device", "cuda", "--ops", "ffn", "--out", str(tmp_path / "X.csv"))
    assert result.exit_code == 2 and "no CUDA device" in result.output


def test_malformed_spec_file_names_file_and_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("widths: [256, 512\nops: [ffn]\n")
    result = _invoke(
        "sweep", "--spec", str(spec), "--device", "cpu", "--out", str(tmp_path / "X.csv")
    )
    assert result.exit_code == 2 and "bad.yaml:2:" in result.output


def test_sweep_json_then_show_filters(tmp_path):
    out = tmp_path / "lut.csv"
    args = [
        "sweep",
        "--device",
        "cpu",
        "--ops",
        "ffn,attention",
        "--widths",
        "128",
        "--context",
        "16,32",
        "--samples",
        "3",
        "--threads",
        "1",
        "--out",
        str(out),
        "--json",
    ]
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["measured"] == 3 and summary["errors"] == 0
    again = json.loads(_invoke(*args).stdout)
    assert again["measured"] == 0 and again["skipped_existing"] == 3
    shown = json.loads(
        _invoke("show", str(out), "--ops", "attention", "--context", "32", "--json").stdout
    )
    assert [(r["op"], r["context"]) for r in shown["rows"]] == [("attention", 32)]
    assert shown["provenance"]["device"] == "cpu"
    table = _invoke("show", str(out))
    assert table.exit_code == 0 and "% floor" in table.output
