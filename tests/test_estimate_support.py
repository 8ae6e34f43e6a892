"""Synthetic LUTs for the estimate tests (imported by test_estimate*.py, test_cli_estimate.py).

The rows are clearly synthetic: latency = intercept + slope * context with round coefficients, so
that expected estimates can be computed by hand.  Nothing here was measured."""

from __future__ import annotations

from pathlib import Path

from latprof.lut import ANY_CONTEXT, Setting, append_rows, spec_columns
from latprof.model import ModelSpec
from latprof.registry import build_spec
from latprof.specs import OpSpec

CONTEXTS = (128, 1024, 4096, 16384)
BANDWIDTH_GBPS = 100.0


def intercept_us(spec: OpSpec, batch: int) -> float:
    """Synthetic step latency at context 0: 3 µs launch + 1 µs per million parameters + batch."""
    return 3.0 + spec.param_count() / 1e6 + 0.5 * batch


def slope_us(spec: OpSpec, batch: int) -> float:
    """Synthetic µs per context token: only context-dependent operators grow."""
    if not spec.context_dependent:
        return 0.0
    return 1e-5 * batch * spec.kv_dim  # type: ignore[attr-defined]


def synthetic_latency(spec: OpSpec, batch: int, context: int) -> float:
    return intercept_us(spec, batch) + slope_us(spec, batch) * context


def synthetic_rows(
    specs: list[OpSpec],
    *,
    batches: tuple[int, ...] = (1, 4),
    contexts: tuple[int, ...] = CONTEXTS,
    phase: str = "decode",
    dtype: str = "float32",
    device: str = "cpu",
    backend: str = "torch",
    mode: str = "eager",
    device_name: str = "synthetic-cpu",
) -> list[dict]:
    rows = []
    for spec in dict.fromkeys(specs):
        const = phase == "decode" and not spec.context_dependent
        for batch in batches:
            for context in (ANY_CONTEXT,) if const else contexts:
                setting = Setting(phase, batch, context, dtype, device, backend, mode)
                latency = synthetic_latency(spec, batch, context)
                if phase == "prefill":
                    latency *= context / 8
                rows.append(
                    {
                        **spec_columns(spec),
                        **setting.as_dict(),
                        "status": "ok",
                        "latency_us_median": latency,
                        "latency_us_p10": latency * 0.95,
                        "latency_us_p90": latency * 1.05,
                        "bandwidth_gbps": BANDWIDTH_GBPS,
                        "device_name": device_name,
                    }
                )
    return rows


def model_specs(model: ModelSpec) -> list[OpSpec]:
    return [model.embedding, *model.counts, model.lm_head]


def write_lut(path: Path, model: ModelSpec, **kwargs) -> Path:
    append_rows(path, synthetic_rows(model_specs(model), **kwargs))
    return path


def small_model(width: int = 256, meta_tokens: int = 0, name: str = "small") -> ModelSpec:
    """attention ffn mamba2 ffn deltanet ffn, at a small width."""
    attention = build_spec("attention", width, heads=4, kv_heads=2, head_dim=64)
    ffn = build_spec("ffn", width)
    mamba2 = build_spec("mamba2", width)
    deltanet = build_spec("deltanet", width, heads=4, head_dim=64)
    layers = (attention, ffn, mamba2, ffn, deltanet, ffn)
    return ModelSpec(name, width, 1000, layers, tied_embeddings=True, meta_tokens=meta_tokens)


def test_synthetic_rows_are_one_per_point(tmp_path):
    model = small_model()
    path = write_lut(tmp_path / "lut.csv", model)
    from latprof.lut import LUT

    lut = LUT.load(path)
    # attention: 2 batches x 4 contexts; 5 other specs (embedding, ffn, mamba2, deltanet, lm_head):
    # 2 batches x ANY_CONTEXT
    assert len(lut.rows) == 2 * 4 + 5 * 2
    assert {r["context"] for r in lut.rows if r["op"] == "ffn"} == {ANY_CONTEXT}
