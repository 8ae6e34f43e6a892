"""`latprof estimate` through typer's CliRunner: tables, JSON, memory-only, every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_estimate_support import model_specs, synthetic_rows, write_lut
from typer.testing import CliRunner

import latprof.cli.estimate  # noqa: F401  (registers the command)
from latprof.cli import _register, app
from latprof.lut import append_rows
from latprof.model import load_model
from latprof.settings import Settings

_register()  # the other commands: a one-command typer app would drop the command name
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "hf-configs"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["estimate", *map(str, args)])


def ok_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fails(*args: str, message: str) -> str:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in " ".join(result.output.split()), result.output
    return result.output


@pytest.fixture(scope="module")
def flash(tmp_path_factory):
    """configs/nemotron-flash-1b.yaml and a synthetic LUT holding all of its specs."""
    config = ROOT / "configs" / "nemotron-flash-1b.yaml"
    path = tmp_path_factory.mktemp("lut") / "synthetic-cpu.csv"
    write_lut(path, load_model(config), batches=(1, 8))
    return config, path


# ---- memory without a LUT ------------------------------------------------------------------------
def test_llama_kv_cache_bytes():
    doc = ok_json(
        FIXTURES / "llama-3.2-1b.json",
        "--memory-only",
        "--batch",
        "1",
        "--context",
        "8000",
        "--dtype",
        "bf16",
    )
    assert doc["memory"]["kv_cache_bytes"] == 262_144_000
    assert doc["lut"] is None and doc["layers"] is None and doc["totals"] is None


@pytest.mark.parametrize(
    "name",
    [
        "llama-3.2-1b.json",
        "qwen3-0.6b.json",
        "mamba2-130m-hf.json",
        "nemotron-h-8b-base-8k.json",
        "nemotron-flash-1b.json",
    ],
)
def test_memory_only_json_matches_formula(name):
    doc = ok_json(
        FIXTURES / name, "--memory-only", "--batch", "1", "--context", "8000", "--dtype", "bf16"
    )
    model = load_model(FIXTURES / name)
    kv = sum(
        2 * s.kv_heads * s.head_dim * (8000 + model.meta_tokens) * 2
        for s in model.layers
        if s.op == "attention"
    )
    mem = doc["memory"]
    assert mem["kv_cache_bytes"] == kv
    for key in (
        "weights_bytes",
        "kv_cache_bytes",
        "recurrent_state_bytes",
        "conv_state_bytes",
        "total_bytes",
    ):
        assert type(mem[key]) is int  # plain integers, never floats or strings
    assert mem["total_bytes"] == (
        mem["weights_bytes"]
        + mem["kv_cache_bytes"]
        + mem["recurrent_state_bytes"]
        + mem["conv_state_bytes"]
    )


def test_memory_only_device_memory_adds_max_batch():
    doc = ok_json(
        FIXTURES / "llama-3.2-1b.json",
        "--memory-only",
        "--context",
        "8000",
        "--dtype",
        "bf16",
        "--device-memory",
        "80",
    )
    fit = doc["max_batch"]
    one = doc["memory"]
    assert fit["max_batch"] == (80 * 10**9 - one["weights_bytes"]) // one["state_bytes"]
    assert fit["tokens_per_s"] is None and "--lut" in fit["throughput_note"]


def test_memory_only_table():
    result = run(FIXTURES / "mamba2-130m-hf.json", "--memory-only", "--context", "8k")
    assert result.exit_code == 0, result.output
    assert "recurrent state" in result.stdout
    # without --dtype: the default of the device `--device auto` resolves to, as every command
    auto = Settings.resolve(device="auto").dtype
    assert auto in result.stdout
    for device, dtype in (("cpu", "float32"), ("cuda", "bfloat16")):
        args = ("--memory-only", "--context", "8k", "--device", device)
        result = run(FIXTURES / "mamba2-130m-hf.json", *args)
        assert result.exit_code == 0, result.output
        assert f"Memory: {dtype}" in result.stdout, (device, result.stdout)


# ---- estimates -----------------------------------------------------------------------------------
def test_estimate_json(flash):
    config, lut = flash
    doc = ok_json(config, "--lut", lut, "--prompt", "1000", "--generate", "8000")
    assert doc["lut"]["device"] == "cpu" and doc["lut"]["dtype"] == "float32"
    assert doc["query"] == {
        "batch": 1,
        "prompt": 1000,
        "generate": 8000,
        "first_context": 1000,
        "last_context": 8999,
    }
    layers = doc["layers"]
    assert [r["op"] for r in layers] == [
        "embedding",
        "deltanet",
        "ffn",
        "mamba2",
        "attention",
        "lm_head",
    ]
    assert sum(r["count"] for r in layers) == 24 + 2
    assert sum(r["share_of_step"] for r in layers) == pytest.approx(1.0)
    totals = doc["totals"]
    assert totals["step_us_last"] > totals["step_us_first"]  # attention grows with context
    assert totals["step_us_first"] * 8000 < totals["decode_us"] < totals["step_us_last"] * 8000
    assert totals["tokens_per_s"] == pytest.approx(8000 / (totals["decode_us"] * 1e-6))
    assert totals["prefill_us"] is None and "prefill" in totals["prefill_note"]
    assert all(r["roofline_us_last"] > 0 for r in layers)
    attention = next(r for r in layers if r["op"] == "attention")
    assert attention["positions"] == [4, 12] and attention["interpolation"] == "context"
    assert doc["interpolated"] == [attention["spec"]] and doc["extrapolated"] == []
    assert doc["memory"]["context"] == 9000 and doc["memory"]["meta_tokens"] == 256


def test_estimate_table(flash):
    config, lut = flash
    result = run(config, "--lut", lut, "--generate", "8000")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in (
        "nemotron-flash-1b",
        "Decode step",
        "deltanet",
        "mamba2",
        "Totals",
        "decode 8000 tokens",
        "tokens/s",
        "KV cache",
        "interpolated",
    ):
        assert text in out, text


def test_device_memory_throughput_with_lut(flash):
    config, lut = flash
    # float32 weights take 3.86 GB; a little more memory holds a few sequences
    doc = ok_json(config, "--lut", lut, "--generate", "100", "--device-memory", "3.95")
    fit = doc["max_batch"]
    assert 1 < fit["max_batch"] < 8
    assert fit["tokens_per_s"] > 0
    assert fit["throughput_note"] == "interpolated in batch between 1 and 8"
    doc = ok_json(config, "--lut", lut, "--generate", "100", "--device-memory", "10")
    fit = doc["max_batch"]
    assert fit["max_batch"] > 8
    assert fit["tokens_per_s"] is None and "outside the LUT's batches" in fit["throughput_note"]
    doc = ok_json(
        config, "--lut", lut, "--generate", "100", "--device-memory", "10", "--allow-extrapolation"
    )
    assert doc["max_batch"]["tokens_per_s"] > 0
    assert doc["max_batch"]["throughput_note"].startswith("extrapolated in batch")


def test_help_has_examples():
    result = run("--help")
    assert result.exit_code == 0
    assert "--memory-only" in result.output and "latprof estimate configs/" in result.output


# ---- bad input: exit 2 and a one-paragraph message -----------------------------------------------
def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("width: 64\nvocab_size: 10\npattern: [ffn\n")
    fails(path, "--memory-only", message=f"{path}:4:1: malformed YAML")


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama",\n  "hidden_size": 64\n  "x": 1}')
    fails(path, "--memory-only", message=f"{path}:3:3: malformed JSON")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("width: 64\nvocab_size: 10\npattern: ffn atention\n", "unknown operator 'atention'"),
        ("vocab_size: 10\npattern: ffn\n", "required field 'width' is missing"),
        (
            "width: 96\nvocab_size: 10\ndefaults: {attention: {heads: 5}}\npattern: attention\n",
            "heads=5 does not divide width=96",
        ),
        ("width: 64\nvocab_size: 10\nlayers: []\n", "the layer list is empty"),
    ],
)
def test_bad_yaml_models(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    fails(path, "--memory-only", message=message)


def test_unknown_model_type_lists_supported(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "gpt_neox", "hidden_size": 64}')
    fails(path, "--memory-only", message="unsupported model_type 'gpt_neox'; supported: bamba,")


def test_lut_that_is_not_a_lut(tmp_path, flash):
    config, _ = flash
    bad = tmp_path / "notes.csv"
    bad.write_text("name,value\nx,1\n")
    fails(config, "--lut", bad, message="is not a latprof LUT")
    fails(config, "--lut", tmp_path / "absent.csv", message="does not exist")


def test_missing_spec_prints_sweep_command(tmp_path):
    config = ROOT / "configs" / "llama-24-blocks.yaml"
    model = load_model(config)
    path = tmp_path / "lut.csv"
    append_rows(path, synthetic_rows([s for s in model_specs(model) if s.op != "ffn"]))
    ffn = next(s for s in model.layers if s.op == "ffn")
    out = fails(config, "--lut", path, message=f"latprof sweep --op-spec '{ffn.key}' --batch 1")
    assert "--measure-missing" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dtype", "bf16"], "measured with dtype float32, not bfloat16"),
        (["--device", "cuda"], "measured with device cpu, not cuda"),
        (["--mode", "graph"], "measured with mode eager, not graph"),
        (["--backend", "attention=triton"], "no attention rows measured with triton"),
    ],
)
def test_lut_of_another_setting_is_refused(flash, flags, message):
    config, lut = flash
    fails(config, "--lut", lut, *flags, message=message)
    result = run(config, "--lut", lut, *flags, "--force", "--json")
    assert result.exit_code == 0, result.output
    assert any(n.startswith("forced") for n in json.loads(result.stdout)["notes"])


def test_extrapolation_is_refused_then_flagged(flash):
    config, lut = flash
    fails(
        config,
        "--lut",
        lut,
        "--prompt",
        "16000",
        "--generate",
        "1000",
        message="outside the measured contexts 128..16384",
    )
    doc = ok_json(
        config, "--lut", lut, "--prompt", "16000", "--generate", "1000", "--allow-extrapolation"
    )
    assert len(doc["extrapolated"]) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "give --lut LUT for latency, or --memory-only"),
        (["--memory-only", "--batch", "0"], "--batch: must be >= 1"),
        (["--memory-only", "--batch", "1,8"], "is not one integer"),
        (["--memory-only", "--dtype", "int3"], "unknown dtype 'int3'"),
        (["--memory-only", "--device-memory", "-1"], "--device-memory: must be positive"),
    ],
)
def test_bad_flags(flash, flags, message):
    config, _ = flash
    fails(config, *flags, message=message)
