"""Window-aware LUT rows: a sliding-window layer is swept only up to its window, and the
estimator reads its cost as flat beyond, so long contexts need no extrapolation."""

from __future__ import annotations

import pytest
from test_estimate_support import model_specs, synthetic_latency, synthetic_rows

from latprof.estimate import Estimator
from latprof.estimate.curve import Curve
from latprof.grid import points_for
from latprof.lut import append_rows
from latprof.model_spec import ModelSpec
from latprof.registry import build_spec


def windowed_model(window: int = 512) -> ModelSpec:
    local = build_spec("attention_window", 256, heads=4, kv_heads=2, head_dim=64, window=window)
    ffn = build_spec("ffn", 256)
    return ModelSpec("windowed", 256, 1000, (local, ffn, local, ffn), tied_embeddings=True)


def test_grid_measures_a_windowed_layer_only_up_to_its_window():
    spec = windowed_model().layers[0]
    common = dict(batches=(1,), dtype="float32", device="cpu", backend="torch", mode="eager")
    decode = points_for(spec, phase="decode", contexts=(128, 1024, 4096), **common)
    assert [s.context for _, s in decode] == [128, 511]
    prefill = points_for(spec, phase="prefill", contexts=(128, 1024), **common)
    assert [s.context for _, s in prefill] == [128, 1024]  # a prompt's cost keeps growing


def test_estimate_past_the_window_reads_the_cost_at_the_window(tmp_path):
    model = windowed_model()
    local = model.layers[0]
    lut = tmp_path / "lut.csv"
    append_rows(lut, synthetic_rows(model_specs(model), batches=(1,), contexts=(128, 511)))
    est = Estimator(lut)
    flat = synthetic_latency(local, 1, 511)
    at_window = est.step_latency_us(model, batch=1, context=511)
    assert est.step_latency_us(model, batch=1, context=8000) == pytest.approx(at_window)
    # decode of 1000 tokens after 200: the windowed layers grow until 511, then stay flat
    whole = est.decode_latency_us(model, batch=1, prompt=200, generate=1000)
    rest = sum(synthetic_latency(s, 1, 0) for s in (model.embedding, model.lm_head))
    rest += 2 * synthetic_latency(model.layers[1], 1, 0)
    per_context = [synthetic_latency(local, 1, min(c, 511)) for c in range(200, 1200)]
    assert whole == pytest.approx(
        1000 * rest + 2 * sum(per_context), rel=1e-6
    )  # the LUT stores rounded latencies
    assert flat == pytest.approx(per_context[-1])


def test_capped_curve_sums_exactly():
    base = Curve((10, 20), (1.0, 3.0))
    capped = base.capped(20)
    brute = sum(base.at(min(c, 20)) for c in range(12, 40))
    assert capped.sum_range(12, 39) == pytest.approx(brute)
    assert capped.sum_range(25, 30) == pytest.approx(6 * 3.0)
    assert capped.covers(10, 10**6) and not base.covers(10, 10**6)
