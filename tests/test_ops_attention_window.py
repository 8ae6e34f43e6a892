"""Sliding-window attention (ring-buffer KV cache) and the attention variants of published
models (q/k/v bias, output gate, full-width q/k norm, post-norm): decode steps against prefill,
device-tensor positions against int positions, an explicit per-query reference, the cost model
capped at the window, parameters against the block's tensors."""

from __future__ import annotations

import pytest
import torch
from op_checks import param_count, run_steps

from latprof.ops.attention import AttentionBlock, apply_rope
from latprof.ops.attention_window import WindowAttentionBlock
from latprof.registry import build_spec, spec_from_key

ATOL = 1e-4
VARIANTS = [
    {},
    {"qkv_bias": True},
    {"out_gate": True, "qk_norm": True},
    {"qk_norm": True, "qk_norm_full": True},
    {"post_norm": True, "qk_norm": True},
]
SHAPE = {"heads": 4, "kv_heads": 2, "head_dim": 16}


def window_spec(window: int, **variant):
    return build_spec("attention_window", 64, window=window, **SHAPE, **variant)


def naive_window_reference(block: WindowAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """Every query attends to keys max(0, t - window + 1) .. t, one query at a time, with the
    block's own projections: independent of the ring buffer and of the mask construction."""
    s = block.spec
    seq = x.shape[1]
    q, k, v = block._project(x)  # (batch, seq, heads, hd), (batch, seq, kv, hd)
    state = block.allocate_state(x.shape[0], seq)
    cos, sin = state["cos"][:seq, None], state["sin"][:seq, None]
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    group = s.heads // s.kv_heads
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    outs = []
    for t in range(seq):
        lo = max(0, t - s.window + 1)
        scores = torch.einsum("bhd,bjhd->bhj", q[:, t], k[:, lo : t + 1]) * block.scale
        outs.append(torch.einsum("bhj,bjhd->bhd", scores.softmax(-1), v[:, lo : t + 1]))
    return block._output(x, torch.stack(outs, dim=1))


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_attention_variants_steps_match_prefill_and_count_params(variant):
    spec = build_spec("attention", 64, **SHAPE, **variant)
    block = AttentionBlock(spec, seed=3)
    assert param_count(block) == spec.param_count()
    x = block.example_sequence(2, 9, torch.Generator().manual_seed(1))
    ref = block.prefill(x, block.allocate_state(2, 12))
    torch.testing.assert_close(
        run_steps(block, x, block.allocate_state(2, 12)), ref, atol=ATOL, rtol=1e-4
    )


def test_out_gate_doubles_the_query_projection_and_changes_the_output():
    plain, gated = (build_spec("attention", 64, **SHAPE, out_gate=g) for g in (False, True))
    assert gated.param_count() - plain.param_count() == 64 * 4 * 16
    assert gated.flops_per_step(1, 100) > plain.flops_per_step(1, 100)
    assert "out_gate=true" in gated.key and "out_gate" not in plain.key
    assert spec_from_key(gated.key) == gated


@pytest.mark.parametrize("backend", ["torch", "sdpa"])
@pytest.mark.parametrize(("window", "seq"), [(4, 11), (5, 5), (16, 7), (1, 3)])
@pytest.mark.parametrize("variant", VARIANTS[:3], ids=str)
def test_window_steps_match_prefill_and_reference(backend, window, seq, variant):
    block = WindowAttentionBlock(window_spec(window, **variant), backend=backend, seed=2)
    x = block.example_sequence(3, seq, torch.Generator().manual_seed(seq))
    prefill_state = block.allocate_state(3, seq + 4)
    ref = block.prefill(x, prefill_state)
    state = block.allocate_state(3, seq + 4)
    torch.testing.assert_close(run_steps(block, x, state), ref, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(naive_window_reference(block, x), ref, atol=ATOL, rtol=1e-4)
    for name in ("k", "v"):  # the ring buffer holds the same positions in the same slots
        filled = min(seq, state[name].shape[1])
        torch.testing.assert_close(
            state[name][:, :filled], prefill_state[name][:, :filled], atol=ATOL, rtol=0
        )


@pytest.mark.parametrize("backend", ["torch", "sdpa"])
def test_window_tensor_positions_equal_int_positions(backend):
    block = WindowAttentionBlock(window_spec(4), backend=backend, seed=5)
    x = block.example_sequence(2, 10, torch.Generator().manual_seed(0))
    by_int, by_tensor = block.allocate_state(2, 10), block.allocate_state(2, 10)
    for t in range(10):
        a = block.step(x[:, t], by_int, t)
        b = block.step(x[:, t], by_tensor, torch.full((2,), t, dtype=torch.int32))
        torch.testing.assert_close(b, a, atol=ATOL, rtol=1e-4)


def test_window_wider_than_the_sequence_is_full_attention():
    full = AttentionBlock(build_spec("attention", 64, **SHAPE), seed=7)
    windowed = WindowAttentionBlock(window_spec(64), seed=7)
    x = full.example_sequence(2, 9, torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        windowed.prefill(x, windowed.allocate_state(2, 9)),
        full.prefill(x, full.allocate_state(2, 9)),
        atol=ATOL,
        rtol=1e-4,
    )
    assert param_count(windowed) == windowed.spec.param_count() == full.spec.param_count()


def test_window_cost_model_stops_growing_at_the_window():
    spec, full = window_spec(512), build_spec("attention", 64, **SHAPE)
    kv_per_position = 2 * 2 * 16 * 2  # K and V, kv_heads x head_dim, bf16
    assert spec.state_bytes(1, 8000, "bf16").kv_cache == 512 * kv_per_position
    assert spec.state_bytes(1, 100, "bf16").kv_cache == 100 * kv_per_position
    assert spec.bytes_per_step(1, 100, "bf16") == full.bytes_per_step(1, 100, "bf16")
    assert spec.bytes_per_step(1, 5000, "bf16") == spec.bytes_per_step(1, 511, "bf16")
    assert spec.flops_per_step(1, 5000) == spec.flops_per_step(1, 10**6)
    assert spec.flops_per_step(1, 5000) < full.flops_per_step(1, 5000)
    state = WindowAttentionBlock(spec).allocate_state(1, 8000)
    assert state["k"].shape[1] == 512
    assert spec_from_key(spec.key) == spec
