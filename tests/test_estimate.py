"""The estimator: curves, interpolation, extrapolation, missing specs, LUT refusal, throughput.

LUTs are synthetic (tests/test_estimate_support.py): latency = intercept + slope * context."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from test_estimate_support import (
    BANDWIDTH_GBPS,
    model_specs,
    small_model,
    synthetic_latency,
    synthetic_rows,
    write_lut,
)

from latprof.errors import InputError
from latprof.estimate import (
    Curve,
    EstimateRequest,
    Estimator,
    MissingSpecs,
    run_estimate,
)
from latprof.lut import ANY_CONTEXT, LUT, append_rows
from latprof.model import ModelSpec
from latprof.registry import build_spec
from latprof.settings import BackendRequest, Settings


def brute_force_decode_us(model: ModelSpec, lut: LUT, batch: int, prompt: int, generate: int):
    """Sum of the LUT values, step by step, for a model whose specs are all measured exactly at
    every context used (rows read back from the CSV, so rounding matches)."""
    total = 0.0
    for c in range(prompt, prompt + generate):
        for spec in [model.embedding, *model.layers, model.lm_head]:
            ctx = c + model.meta_tokens if spec.context_dependent else ANY_CONTEXT
            row = next(
                r
                for r in lut.rows
                if r["spec"] == spec.key and r["batch"] == batch and r["context"] == ctx
            )
            total += row["latency_us_median"]
    return total


# ---- curves --------------------------------------------------------------------------------------
def test_curve_sum_range_equals_step_by_step_sum():
    rng = random.Random(0)
    for _ in range(50):
        xs = sorted(rng.sample(range(1, 400), rng.randint(1, 6)))
        curve = Curve(xs, [rng.uniform(1, 50) for _ in xs])
        a = rng.randint(0, 420)
        b = a + rng.randint(0, 300)
        expected = sum(curve.at(c) for c in range(a, b + 1))
        assert curve.sum_range(a, b) == pytest.approx(expected, rel=1e-12)


def test_curve_interpolates_and_flags_range():
    curve = Curve((100, 200), (10.0, 20.0))
    assert curve.at(150) == pytest.approx(15.0)
    assert curve.at(300) == pytest.approx(30.0)  # extrapolated along the last segment
    assert curve.covers(100, 200) and not curve.covers(99, 150) and not curve.covers(150, 201)
    assert curve.measured_at(200) and not curve.measured_at(150)
    constant = Curve.const(7.0)
    assert constant.at(10**6) == 7.0 and constant.covers(0, 10**6)
    assert constant.sum_range(5, 14) == pytest.approx(70.0)


def test_curve_blend_is_exact_linear_combination():
    c0, c1 = Curve((100, 1000), (10.0, 19.0)), Curve((500, 2000), (40.0, 55.0))
    blended = c0.blend(c1, 0.25)
    for c in (50, 100, 300, 500, 999, 1500, 2500):
        assert blended.at(c) == pytest.approx(0.75 * c0.at(c) + 0.25 * c1.at(c))
    assert (blended.lo, blended.hi) == (500, 1000)  # measured by both
    mixed = Curve.const(4.0).blend(c0, 0.5)
    assert mixed.at(550) == pytest.approx(0.5 * 4.0 + 0.5 * c0.at(550))


# ---- estimates against synthetic LUTs ------------------------------------------------------------
@pytest.fixture
def model():
    return small_model(width=256)


@pytest.fixture
def lut_path(tmp_path, model):
    return write_lut(tmp_path / "lut.csv", model)


def test_exact_rows_give_exact_sums(tmp_path, model):
    path = write_lut(tmp_path / "lut.csv", model, contexts=tuple(range(120, 131)))
    lut = LUT.load(path)
    est = Estimator(lut)
    e = est.estimate(model, batch=1, prompt=120, generate=11)
    assert e.decode_us == pytest.approx(brute_force_decode_us(model, lut, 1, 120, 11), rel=1e-12)
    assert e.decode_us == pytest.approx(est.decode_latency_us(model, 1, 120, 11), rel=1e-12)
    step = est.step_latency_us(model, 1, 125)
    assert step == pytest.approx(brute_force_decode_us(model, lut, 1, 125, 1), rel=1e-12)
    first = next(r for r in e.layers if r.spec.op == "attention")
    assert first.interpolation == "context"  # a range of contexts, though every one measured
    single = est.estimate(model, batch=1, prompt=125, generate=1)
    assert single.interpolated == [] and single.extrapolated == []


def test_interpolation_in_context_is_linear(model, lut_path):
    est = Estimator(lut_path)
    e = est.estimate(model, batch=4, prompt=1500, generate=2000)
    attention = next(r for r in e.layers if r.spec.op == "attention")
    # the synthetic latency is linear in context, so interpolation reproduces it
    assert attention.latency_us_first == pytest.approx(
        synthetic_latency(attention.spec, 4, 1500), rel=1e-5
    )
    assert attention.latency_us_last == pytest.approx(
        synthetic_latency(attention.spec, 4, 3499), rel=1e-5
    )
    expected = sum(
        n * sum(synthetic_latency(s, 4, c) for c in range(1500, 3500))
        for s, n in [(model.embedding, 1), *model.counts.items(), (model.lm_head, 1)]
    )
    assert e.decode_us == pytest.approx(expected, rel=1e-5)
    assert attention.spec.key in e.interpolated
    assert e.tokens_per_s == pytest.approx(4 * 2000 / (e.decode_us * 1e-6))
    assert e.step_us_last > e.step_us_first  # attention grows with context
    share = sum(r.count * r.latency_us_last for r in e.layers) / e.step_us_last
    assert share == pytest.approx(1.0)


def test_meta_tokens_shift_attention_context(tmp_path):
    plain, meta = small_model(meta_tokens=0), small_model(meta_tokens=300)
    path = write_lut(tmp_path / "lut.csv", plain)
    est = Estimator(path)
    a = est.estimate(plain, 1, 1300, 1)
    b = est.estimate(meta, 1, 1000, 1)
    assert a.step_us_first == pytest.approx(b.step_us_first)


def test_roofline_floor_from_bandwidth(model, lut_path):
    e = Estimator(lut_path).estimate(model, 1, 1000, 10)
    for r in e.layers:
        shift = model.meta_tokens if r.spec.context_dependent else 0
        floor = r.spec.bytes_per_step(1, 1009 + shift, "float32") / (BANDWIDTH_GBPS * 1e3)
        assert r.roofline_us_last == pytest.approx(floor)
    assert e.roofline_step_us_last == pytest.approx(
        sum(r.count * r.roofline_us_last for r in e.layers)
    )


def test_width_interpolation_within_a_family(tmp_path):
    """ffn at width 384 (defaults derived from the width, like 256 and 512) is interpolated."""
    measured = [build_spec("ffn", w) for w in (256, 512)]
    path = tmp_path / "lut.csv"
    append_rows(path, synthetic_rows(measured))
    est = Estimator(path)
    spec = build_spec("ffn", 384)
    lookup = est.lookup(spec, "decode", 1)
    assert lookup.method == "width-interpolated" and lookup.widths == (256, 512)
    # synthetic latency is affine in the parameter count, and so is the interpolation
    assert lookup.curve.at(0) == pytest.approx(synthetic_latency(spec, 1, 0), rel=1e-5)
    # a spec with a different override (non-default ffn_dim) is another family: no answer
    assert est.lookup(build_spec("ffn", 384, ffn_dim=4096), "decode", 1) is None
    # outside the measured widths: extrapolation, refused unless allowed
    wide = build_spec("ffn", 1024)
    assert est.lookup(wide, "decode", 1).method == "width-extrapolated"
    model = ModelSpec("w", 1024, 100, (wide,))
    append_rows(path, synthetic_rows([model.embedding, model.lm_head]))
    with pytest.raises(InputError, match="width 1024 outside the measured widths 256..512"):
        Estimator(path).estimate(model, 1, 10, 1)
    e = Estimator(path, allow_extrapolation=True).estimate(model, 1, 10, 1)
    assert e.extrapolated == [wide.key]
    row = next(r for r in e.layers if r.spec == wide)
    assert row.interpolation == "width" and "width 1024" in row.extrapolated


def test_context_extrapolation_is_an_error_unless_allowed(model, lut_path):
    with pytest.raises(
        InputError,
        match=r"context 16000..16499 outside the measured contexts "
        r"128..16384.*--allow-extrapolation",
    ):
        Estimator(lut_path).estimate(model, 1, 16000, 500)
    e = Estimator(lut_path, allow_extrapolation=True).estimate(model, 1, 16000, 500)
    attention = next(r for r in e.layers if r.spec.op == "attention")
    assert attention.extrapolated and e.extrapolated == [attention.spec.key]
    assert attention.latency_us_last == pytest.approx(
        synthetic_latency(attention.spec, 1, 16499), rel=1e-5
    )


def test_missing_spec_names_spec_and_sweep_command(tmp_path, model):
    path = tmp_path / "lut.csv"
    specs = [s for s in model_specs(model) if s.op not in ("mamba2", "attention")]
    append_rows(path, synthetic_rows(specs))
    # one other width per family: the backend is known, nothing to interpolate from
    append_rows(path, synthetic_rows([build_spec("mamba2", 512), build_spec("attention", 512)]))
    with pytest.raises(MissingSpecs) as info:
        Estimator(path).estimate(model, batch=4, prompt=1000, generate=100)
    mamba2 = next(s for s in model.layers if s.op == "mamba2")
    attention = next(s for s in model.layers if s.op == "attention")
    message = str(info.value)
    assert mamba2.key in message and attention.key in message
    assert (
        f"latprof sweep --op-spec '{attention.key}' --op-spec '{mamba2.key}' --batch 4 "
        f"--context 1000,1099 --dtype float32 --device cpu --backend torch --mode eager "
        f"--out {path}"
    ) in message
    assert [m.spec for m in info.value.missing] == [attention, mamba2]
    # the fast path raises the same error
    with pytest.raises(MissingSpecs, match="mamba2"):
        Estimator(path).decode_latency_us(model, 4, 1000, 100)


def test_missing_batch_and_missing_operator(tmp_path, model, lut_path):
    with pytest.raises(MissingSpecs, match="no decode rows at batch 2"):
        Estimator(lut_path).estimate(model, batch=2, prompt=1000, generate=1)
    path = tmp_path / "no-attention.csv"
    append_rows(path, synthetic_rows([s for s in model_specs(model) if s.op != "attention"]))
    with pytest.raises(MissingSpecs, match="--backend BACKEND.*no rows for attention"):
        Estimator(path).estimate(model, 1, 1000, 1)


def test_missing_points_for_measure_missing(tmp_path, model):
    path = tmp_path / "lut.csv"
    append_rows(path, synthetic_rows([s for s in model_specs(model) if s.op != "attention"]))
    append_rows(path, synthetic_rows([build_spec("attention", 128)]))  # contexts of the LUT
    est = Estimator(path, backend="attention=torch")
    with pytest.raises(MissingSpecs) as info:
        est.estimate(model, 1, 1000, 4000)
    points = est.missing_points(info.value.missing)
    attention = next(s for s in model.layers if s.op == "attention")
    assert {p[0] for p in points} == {attention}
    assert [p[1].context for p in points] == [1000, 1024, 4096, 4999]
    assert all(p[1].phase == "decode" and p[1].backend == "torch" for p in points)


# ---- backends and LUT refusal --------------------------------------------------------------------
def two_backend_lut(tmp_path, model) -> Path:
    path = tmp_path / "lut.csv"
    append_rows(path, synthetic_rows(model_specs(model)))
    attention = [s for s in model_specs(model) if s.op == "attention"]
    append_rows(path, synthetic_rows(attention, backend="sdpa"))
    return path


def test_several_backends_require_a_choice(tmp_path, model):
    path = two_backend_lut(tmp_path, model)
    with pytest.raises(InputError, match=r"several backends \(sdpa, torch\).*--backend attention"):
        Estimator(path).estimate(model, 1, 1000, 1)
    e = Estimator(path, backend="attention=sdpa").estimate(model, 1, 1000, 1)
    assert {r.spec.op: r.backend for r in e.layers}["attention"] == "sdpa"
    # a bare name applies to every operator that has it; the others keep their only backend
    e = Estimator(path, backend="sdpa").estimate(model, 1, 1000, 1)
    backends = {r.spec.op: r.backend for r in e.layers}
    assert backends["attention"] == "sdpa" and backends["ffn"] == "torch"


def test_backend_not_in_lut_is_refused_unless_forced(model, lut_path):
    with pytest.raises(InputError, match="no attention rows measured with triton.*--force"):
        Estimator(lut_path, backend="attention=triton").estimate(model, 1, 1000, 1)
    with pytest.raises(InputError, match="no rows measured with flash"):
        Estimator(lut_path, backend="flash")
    est = Estimator(lut_path, backend="attention=triton", force=True)
    est.estimate(model, 1, 1000, 1)
    assert any("forced" in n for n in est.notes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "bf16"}, "measured with dtype float32, not bfloat16"),
        ({"device": "cuda"}, "measured with device cpu, not cuda"),
        ({"mode": "graph"}, "measured with mode eager, not graph"),
        ({"device": "NVIDIA H100 80GB HBM3"}, "measured on synthetic-cpu"),
    ],
)
def test_lut_of_other_setting_is_refused_unless_forced(lut_path, model, kwargs, message):
    with pytest.raises(InputError, match=message + ".*--force"):
        Estimator(lut_path, **kwargs)
    est = Estimator(lut_path, force=True, **kwargs)
    assert any(n.startswith("forced") for n in est.notes)
    est.estimate(model, 1, 1000, 1)


def test_matching_settings_are_accepted(lut_path):
    est = Estimator(lut_path, dtype="fp32", device="synthetic-CPU", mode="eager")
    assert (est.settings.dtype, est.settings.device, est.settings.mode) == (
        "float32",
        "cpu",
        "eager",
    )
    assert not est.notes


def test_lut_with_two_dtypes_needs_a_choice(tmp_path, model):
    path = tmp_path / "lut.csv"
    append_rows(path, synthetic_rows(model_specs(model)))
    append_rows(path, synthetic_rows(model_specs(model), dtype="bfloat16"))
    with pytest.raises(InputError, match="several dtypes.*--dtype"):
        Estimator(path)
    assert Estimator(path, dtype="bf16").settings.dtype == "bfloat16"


def test_not_a_lut_and_empty_lut(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a latprof LUT"):
        Estimator(bad)
    failed = tmp_path / "failed.csv"
    rows = synthetic_rows([build_spec("ffn", 64)])
    append_rows(failed, [{**r, "status": "oom", "latency_us_median": None} for r in rows])
    with pytest.raises(InputError, match="no successful measurements"):
        Estimator(failed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("triton", ("triton", {})),
        ("attention=triton, ffn=torch", (None, {"attention": "triton", "ffn": "torch"})),
        ("triton,ffn=torch", ("triton", {"ffn": "torch"})),
    ],
)
def test_parse_backends(text, expected):
    assert BackendRequest.parse(text).single() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("atention=x", "unknown operator"), ("a,b", "two backends"), ("ffn=", "give a")],
)
def test_parse_backends_errors(text, message):
    with pytest.raises(InputError, match=message):
        BackendRequest.parse(text).single()


# ---- prefill and throughput ----------------------------------------------------------------------
def test_prefill_from_prefill_rows(tmp_path, model):
    path = write_lut(tmp_path / "lut.csv", model)
    e = Estimator(path).estimate(model, 1, 1000, 1)
    assert e.prefill_us is None and "no prefill rows" in e.prefill_note
    append_rows(path, synthetic_rows(model_specs(model), phase="prefill", contexts=(512, 2048)))
    e = Estimator(path).estimate(model, 1, 1024, 1)

    def row(spec, c):  # the synthetic prefill row at prompt length c
        return synthetic_latency(spec, 1, c) * c / 8

    # linear interpolation between the measured prompt lengths 512 and 2048
    expected = sum(
        n * (row(s, 512) + (row(s, 2048) - row(s, 512)) * (1024 - 512) / (2048 - 512))
        for s, n in [(model.embedding, 1), *model.counts.items(), (model.lm_head, 1)]
    )
    assert e.prefill_us == pytest.approx(expected, rel=1e-5)
    assert e.prefill_note == "interpolated"
    exact = Estimator(path).estimate(model, 1, 512, 1)
    assert exact.prefill_note is None


def test_throughput_interpolates_in_batch(model, lut_path):
    est = Estimator(lut_path)
    tps, how = est.throughput_at(model, 2, 1000, 10)
    lat = [est.decode_latency_us(model, b, 1000, 10) for b in (1, 4)]
    expected_us = lat[0] + (lat[1] - lat[0]) / 3
    assert tps == pytest.approx(2 * 10 / (expected_us * 1e-6))
    assert how == "interpolated in batch between 1 and 4"
    tps, how = est.throughput_at(model, 9, 1000, 10)
    assert tps is None and "outside the LUT's batches" in how
    tps, how = Estimator(lut_path, allow_extrapolation=True).throughput_at(model, 9, 1000, 10)
    assert tps is not None and how.startswith("extrapolated in batch")


# ---- the CLI's library entry point ---------------------------------------------------------------
def yaml_for(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text("""
width: 256
vocab_size: 1000
tied_embeddings: true
defaults:
  attention: {heads: 4, kv_heads: 2, head_dim: 64}
  deltanet: {heads: 4, head_dim: 64}
pattern: attention ffn mamba2 ffn deltanet ffn
""")
    return path


def test_run_estimate_with_device_memory(tmp_path, model, lut_path):
    request = EstimateRequest(
        yaml_for(tmp_path),
        lut_path,
        settings=Settings.resolve(batch=1, measure=False),
        prompt=1000,
        generate=100,
        device_memory_gb=0.1,
        allow_extrapolation=True,
    )
    report = run_estimate(request)
    doc = report.as_json()
    assert doc["totals"]["decode_us"] == pytest.approx(report.estimate.decode_us)
    assert doc["memory"]["context"] == 1100
    fit = doc["max_batch"]
    assert fit["max_batch"] >= 4 and fit["tokens_per_s"] > 0
    assert fit["throughput_note"].startswith("extrapolated in batch")


def test_run_estimate_measure_missing_calls_sweep(tmp_path, model, monkeypatch):
    """--measure-missing hands the missing points to the `measure` function it is given (the CLI
    gives latprof.sweep.run_sweep; here a fake that appends synthetic rows) and estimates again."""

    path = tmp_path / "lut.csv"
    append_rows(path, synthetic_rows([s for s in model_specs(model) if s.op != "mamba2"]))
    calls = []

    def measure_points(points, lut_path):
        calls.append(points)
        append_rows(
            lut_path,
            [
                r
                for spec, setting in points
                for r in synthetic_rows([spec], batches=(setting.batch,))
            ],
        )
        return {"measured": len(points)}

    request = EstimateRequest(yaml_for(tmp_path), path, prompt=1000, generate=10)
    with pytest.raises(MissingSpecs):
        run_estimate(request, measure=measure_points)
    assert calls == []  # without --measure-missing, nothing is measured
    with pytest.raises(InputError, match="backend is unknown.*--backend mamba2=NAME"):
        run_estimate(
            EstimateRequest(
                yaml_for(tmp_path), path, prompt=1000, generate=10, measure_missing=True
            ),
            measure=measure_points,
        )
    report = run_estimate(
        EstimateRequest(
            yaml_for(tmp_path),
            path,
            settings=Settings.resolve(backend="mamba2=torch", measure=False),
            prompt=1000,
            generate=10,
            measure_missing=True,
        ),
        measure=measure_points,
    )
    assert len(calls) == 1 and [p[0].op for p in calls[0]] == ["mamba2"]
    assert calls[0][0][1].context == ANY_CONTEXT
    assert report.measured == {"measured": 1} and report.estimate.decode_us > 0


def test_estimator_modules_never_import_torch():
    code = (
        "import sys, latprof.estimate, latprof.cli.estimate, latprof.config_hf, "
        "latprof.config_yaml, latprof.memory; "
        "bad = [m for m in ('torch', 'pandas', 'numpy') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_general_backend_names_the_backend_of_operators_without_rows(tmp_path, model):
    """`--backend torch` on a LUT without mamba2 rows: --measure-missing measures them with it."""
    path = tmp_path / "lut.csv"
    append_rows(path, synthetic_rows([s for s in model_specs(model) if s.op != "mamba2"]))
    est = Estimator(path, backend="torch")
    with pytest.raises(MissingSpecs) as info:
        est.estimate(model, 1, 1000, 10)
    points = est.missing_points(info.value.missing)
    assert {spec.op for spec, _ in points} == {"mamba2"}
    assert {s.backend for _, s in points} == {"torch"}
