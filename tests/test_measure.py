"""The one measurement path: operators and whole models sized, grouped and re-measured alike."""

from __future__ import annotations

import pytest

from latprof import device_info, e2e, measure
from latprof.control import estimates_from_rows, measure_together
from latprof.estimate import Estimator
from latprof.lut import ANY_CONTEXT, LUT, Setting
from latprof.model import ModelSpec
from latprof.registry import build_spec
from latprof.sweep import lut_row
from latprof.timing import Measurement, TimerConfig, keep_steadier, remeasured_if_noisy

FAST = TimerConfig(warmup_steps=1, samples=5, min_sample_s=0.0005, max_remeasure=0)
WIDTH = 128


def tiny_model() -> ModelSpec:
    layers = (
        build_spec("attention", WIDTH, heads=2, kv_heads=1, head_dim=64),
        build_spec("ffn", WIDTH),
    )
    return ModelSpec("tiny", WIDTH, 64, layers)


def test_operator_and_model_targets_share_copies_and_groups():
    spec = build_spec("ffn", WIDTH)
    op = measure.OperatorTarget(
        spec, Setting("decode", 1, ANY_CONTEXT, "float32", "cpu", "torch", "eager")
    )
    whole = e2e.ModelTarget(tiny_model(), 1, 16, "float32", "cpu", "eager")
    llc = 1024**2
    for t in (op, whole):
        n = measure.copies_needed(t, llc)
        assert n * t.bytes_per_copy() >= 2 * llc or n == measure.MAX_COPIES
    assert measure.plan_groups([op, whole], llc) == [[op, whole]]  # one CPU group, interleaved
    results = measure.measure([op, whole], llc, FAST)
    assert [r.status for r in results] == ["ok", "ok"]
    assert all(r.measurement.median_us > 0 and len(r.measurement.samples_us) == 5 for r in results)


def test_same_session_rows_make_an_in_memory_estimator():
    model = tiny_model()
    env = measure.environment("cpu", threads=1)
    targets = [e2e.ModelTarget(model, 1, 16, "float32", "cpu", "eager")]
    from latprof.grid import model_points

    points = model_points(
        [model],
        batches=(1,),
        contexts=(16,),
        dtype="float32",
        device="cpu",
        mode="eager",
        backends={},
    )
    assert {spec.op for spec, _ in points} == {"attention", "ffn", "embedding", "lm_head"}
    rows, ms = measure_together(points, targets, env, FAST)
    assert len(rows) == len(points) and len(ms) == 1 and ms[0].median_us > 0
    kwargs = dict(dtype="float32", device="cpu", mode="eager")
    sums = estimates_from_rows(rows, env, model, 1, (16,), kwargs)
    by_row = Estimator(LUT.from_rows(rows), **kwargs).step_latency_us(model, 1, 16)
    expected = sum(r["latency_us_median"] for r in rows)  # each spec once in this model
    assert sums[16] == pytest.approx(by_row) == pytest.approx(expected)


def test_one_remeasure_policy():
    cfg = TimerConfig(cv_threshold=0.05, max_remeasure=2)
    noisy = [Measurement([1.0, 2.0, 3.0], 1) for _ in range(3)]
    calls = iter(noisy)
    m = remeasured_if_noisy(lambda: next(calls), cfg)
    assert m.flags == ["remeasured", "noisy"]  # measured three times, still noisy
    steady = Measurement([1.0, 1.0, 1.01], 1)
    calls = iter([Measurement([1.0, 2.0, 3.0], 1), steady])
    assert remeasured_if_noisy(lambda: next(calls), cfg) is steady
    assert steady.flags == ["remeasured"]
    first = Measurement([1.0, 1.0, 1.0], 1)
    assert keep_steadier(first, Measurement([1.0, 5.0], 1)) is first


def test_failures_are_rows_not_the_end(monkeypatch):
    import torch

    spec = build_spec("ffn", WIDTH)
    setting = Setting("decode", 1, ANY_CONTEXT, "float32", "cpu", "torch", "eager")
    target = measure.OperatorTarget(spec, setting)

    def oom(*_):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(measure, "build_workload", oom)
    (result,) = measure.measure([target], 1024**2, FAST)
    assert result.status == "oom" and result.measurement is None
    env = measure.environment("cpu", threads=1)
    assert lut_row(result, env)["status"] == "oom"
    whole = e2e.ModelTarget(tiny_model(), 1, 16, "float32", "cpu", "eager")
    (model_result,) = measure.measure([whole], 1024**2, FAST)
    from latprof.errors import InputError

    with pytest.raises(InputError, match="does not fit"):
        e2e.model_measurements([model_result])


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("NVIDIA H200", "H200"),
        ("NVIDIA GH200 480GB", None),  # not an H200
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),  # not an L4
        ("NVIDIA L40", None),
        ("NVIDIA H100 80GB HBM3", "H100 80GB HBM3"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
    ],
)
def test_gpu_names_match_whole_words(name, fragment):
    found = device_info.gpu_peak_bandwidth_gbps(name)
    assert (found[0] if found else None) == fragment
