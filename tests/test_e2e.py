"""Whole models: step-by-step greedy decoding equals the prefill forward; timing runs on CPU."""

from __future__ import annotations

import pytest
import torch

from latprof import e2e
from latprof.measure import measure
from latprof.model import ModelSpec
from latprof.registry import build_spec
from latprof.timing import TimerConfig

WIDTH = 128


def _hybrid(meta_tokens: int = 0, tied: bool = True) -> ModelSpec:
    ops = [
        build_spec("deltanet", WIDTH, heads=2, head_dim=64),
        build_spec("ffn", WIDTH),
        build_spec("mamba2", WIDTH, head_dim=32, d_state=16),
        build_spec("moe", WIDTH, experts=4, top_k=2),
        build_spec("attention", WIDTH, heads=4, kv_heads=2, head_dim=32, qk_norm=True),
        build_spec("ffn", WIDTH, activation="relu2"),
        build_spec("mamba", WIDTH),
        build_spec("gated_deltanet", WIDTH, heads=2, head_dim=64),
        build_spec("gla", WIDTH, heads=2, head_dim=64),
        build_spec("attention", WIDTH, heads=2, kv_heads=1, head_dim=64),
        build_spec("kda", WIDTH, heads=3, head_dim=24, gate_rank=8),
        build_spec(
            "mla",
            WIDTH,
            heads=2,
            kv_lora_rank=48,
            qk_nope_head_dim=24,
            qk_rope_head_dim=8,
            v_head_dim=20,
            rope=False,
        ),  # fmt: skip
        build_spec(
            "mla",
            WIDTH,
            heads=3,
            q_lora_rank=40,
            kv_lora_rank=32,
            qk_nope_head_dim=16,
            qk_rope_head_dim=16,
            v_head_dim=24,
        ),  # fmt: skip
    ]
    return ModelSpec(
        "tiny-hybrid", WIDTH, 97, tuple(ops), tied_embeddings=tied, meta_tokens=meta_tokens
    )


@pytest.mark.parametrize("steps", [1, 7, 20])
def test_greedy_steps_match_prefill_logits(steps):
    model = e2e.WholeModel(_hybrid(), seed=3)
    gen = torch.Generator().manual_seed(steps)
    ids = torch.randint(0, 97, (2, steps), generator=gen)
    with torch.inference_mode():
        full = model.prefill_logits(ids, model.allocate_state(2, steps))
        states = model.allocate_state(2, steps)
        stepped = torch.stack([model.step_logits(ids[:, t], states, t) for t in range(steps)], 1)
    assert torch.isfinite(full).all()
    torch.testing.assert_close(stepped, full, atol=2e-4, rtol=2e-4)
    assert (stepped.argmax(-1) == full.argmax(-1)).float().mean() > 0.95


def test_meta_tokens_lengthen_the_attention_cache():
    model = e2e.WholeModel(_hybrid(meta_tokens=5), seed=0)
    states = model.allocate_state(1, 10)
    attn = [s for s, b in zip(states, model.layers, strict=True) if b.spec.op == "attention"]
    assert all(s["k"].shape[1] == 15 for s in attn)


def test_weights_are_random_and_tied_when_asked():
    model = e2e.WholeModel(_hybrid(tied=True))
    assert model.head.weight is model.embedding.weight
    assert all(p.abs().sum() > 0 for p in model.parameters())
    untied = e2e.WholeModel(_hybrid(tied=False))
    assert untied.head.weight is not untied.embedding.weight


def test_cpu_measurement_gives_positive_stable_statistics():
    config = TimerConfig(warmup_steps=1, samples=5, min_sample_s=0.001, max_remeasure=0)
    model = ModelSpec(
        "two-layer",
        WIDTH,
        97,
        (
            build_spec("attention", WIDTH, heads=2, kv_heads=1, head_dim=64),
            build_spec("ffn", WIDTH),
        ),
    )
    targets = [e2e.ModelTarget(model, 1, c, "float32", "cpu", "eager") for c in (16, 64)]
    ms = e2e.model_measurements(measure(targets, llc_bytes=1024**2, config=config))
    assert len(ms) == 2 and all(m.median_us > 0 and len(m.samples_us) == 5 for m in ms)


def test_graph_mode_refuses_host_synchronising_blocks():
    from latprof.errors import InputError

    target = e2e.ModelTarget(_hybrid(), 1, 16, "bfloat16", "cuda", "graph")
    with pytest.raises(InputError, match="cannot be captured in a CUDA graph"):
        target.check()


def test_generation_runs_every_step():
    from latprof.generate import decode

    target = e2e.ModelTarget(_hybrid(meta_tokens=3), 1, 0, "float32", "cpu", "eager")
    result = decode(target, prompt=4, generate=6, keep_tokens=True)
    assert result.decode_s > 0 and len(result.tokens[0]) == 6


def test_randomized_caches_keep_the_rope_tables():
    block = e2e.WholeModel(_hybrid()).layers[4]  # attention
    state = block.allocate_state(1, 16)
    tables = {k: state[k].clone() for k in block.static_state_keys if k in state}
    block.randomize_state(state, torch.Generator().manual_seed(0))
    assert tables and all(torch.equal(state[k], v) for k, v in tables.items())
    assert state["k"].abs().sum() > 0
