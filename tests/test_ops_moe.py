"""Mixture-of-experts block: spec validation and cost model, step == prefill, a dense masked
computation as an independent reference, and the uniform-routing expert-touch formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from op_checks import param_count, run_steps

from latprof.errors import InputError
from latprof.ops import build_block
from latprof.ops.base import rms_norm
from latprof.registry import build_spec, spec_from_key
from latprof.specs import dtype_bytes
from latprof.specs.moe import expected_experts_touched

WIDTH = 320  # awkward: not a power of two, not a multiple of 128

CONFIGS = [
    dict(experts=8, top_k=2, expert_dim=96),
    dict(experts=6, top_k=3, expert_dim=80, shared_expert_dim=112),
    dict(experts=5, top_k=2, expert_dim=72, activation="relu2"),
    dict(experts=4, top_k=4, expert_dim=64, shared_expert_dim=48, activation="relu2"),
]
CONFIG_IDS = ["swiglu", "swiglu-shared", "relu2", "relu2-shared-dense"]


def make_block(seed: int = 0, **overrides):
    spec = build_spec("moe", WIDTH, **overrides)
    return build_block(spec, dtype=torch.float32, seed=seed)


def dense_reference(block, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by a routing mask built without topk: expert e is
    chosen for a token iff fewer than top_k experts have a strictly larger probability."""
    spec = block.spec
    h = rms_norm(x, block.norm).double()  # (..., width)
    probs = torch.softmax(h @ block.router.double().T, dim=-1)  # (..., experts)
    larger = (probs.unsqueeze(-1) < probs.unsqueeze(-2)).sum(-1)  # (..., experts)
    chosen = larger < spec.top_k
    assert (chosen.sum(-1) == spec.top_k).all(), "a routing tie: reseed the test"
    gates = torch.where(chosen, probs, 0.0)
    gates = gates / gates.sum(-1, keepdim=True)  # (..., experts)
    out = torch.zeros_like(h)
    for e in range(spec.experts):
        u = h @ block.w_up[e].double().T
        if spec.activation == "swiglu":
            a = F.silu(h @ block.w_gate[e].double().T) * u
        else:
            a = F.relu(u) ** 2
        out += gates[..., e : e + 1] * (a @ block.w_down[e].double().T)
    if spec.shared_expert_dim:
        u = h @ block.shared_up.double().T
        if spec.activation == "swiglu":
            a = F.silu(h @ block.shared_gate.double().T) * u
        else:
            a = F.relu(u) ** 2
        out += a @ block.shared_down.double().T
    return (x.double() + out).to(x.dtype)


# ---- spec ------------------------------------------------------------------------------------
def test_defaults_and_key_round_trip():
    spec = build_spec("moe", 2048)
    assert (spec.experts, spec.top_k, spec.expert_dim) == (8, 2, 2048)
    assert (spec.shared_expert_dim, spec.activation) == (0, "swiglu")
    assert spec.op == "moe" and not spec.context_dependent
    assert build_spec("moe", 300).expert_dim == 256
    other = build_spec("moe", WIDTH, experts=64, top_k=6, shared_expert_dim=512)
    assert spec_from_key(other.key) == other
    assert other.overrides() == {"experts": 64, "top_k": 6, "shared_expert_dim": 512}


@pytest.mark.parametrize(
    "overrides",
    [
        dict(experts=4, top_k=5),
        dict(experts=0),
        dict(top_k=0),
        dict(expert_dim=-128),
        dict(shared_expert_dim=-1),
        dict(shared_expert_dim=False),
        dict(activation="gelu"),
        dict(experts=2.5),
    ],
)
def test_bad_shapes_raise_input_error(overrides):
    with pytest.raises(InputError, match="moe"):
        build_spec("moe", WIDTH, **overrides)


def test_param_count_formula():
    spec = build_spec("moe", 512, experts=16, top_k=4, expert_dim=256, shared_expert_dim=384)
    expected = 512 + 512 * 16 + 16 * 3 * 512 * 256 + 3 * 512 * 384
    assert spec.param_count() == expected
    relu2 = build_spec("moe", 512, experts=16, top_k=4, expert_dim=256, activation="relu2")
    assert relu2.param_count() == 512 + 512 * 16 + 16 * 2 * 512 * 256


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bytes_and_flops_count_only_the_experts_used(dtype):
    spec = build_spec("moe", 512, experts=16, top_k=4, expert_dim=256, shared_expert_dim=384)
    nb = dtype_bytes(dtype)
    always = 512 + 512 * 16 + 3 * 512 * 384
    expert = 3 * 512 * 256
    # batch 1 reads exactly its top_k experts
    assert spec.bytes_per_step(1, 100, dtype) == (always + 4 * expert) * nb + 2 * 512 * nb
    # a huge batch touches every expert: all weights, like a dense block
    big = spec.bytes_per_step(4096, 100, dtype)
    assert big == spec.param_count() * nb + 2 * 4096 * 512 * nb
    # in between: strictly between the two, growing with batch, independent of context
    mids = [spec.bytes_per_step(b, 0, dtype) for b in (1, 2, 4, 8)]
    assert mids == sorted(set(mids))
    assert spec.bytes_per_step(8, 0, dtype) == spec.bytes_per_step(8, 4000, dtype)
    # FLOPs: every token runs top_k experts, the router, the shared expert and the norm
    assert spec.flops_per_step(3, 10) == 2 * 3 * (always + 4 * expert)


def test_top_k_equal_experts_costs_like_a_dense_block():
    spec = build_spec("moe", WIDTH, experts=4, top_k=4, expert_dim=64)
    for batch in (1, 5):
        nb = dtype_bytes("float32")
        dense = spec.param_count() * nb + 2 * batch * WIDTH * nb
        assert spec.bytes_per_step(batch, 0, "float32") == dense
        assert spec.flops_per_step(batch, 0) == 2 * batch * spec.param_count()


@pytest.mark.parametrize("experts,top_k,batch", [(8, 2, 1), (8, 2, 4), (64, 6, 16), (16, 1, 7)])
def test_expected_experts_touched_matches_monte_carlo(experts, top_k, batch):
    gen = torch.Generator().manual_seed(1234 + experts + batch)
    trials = 4000
    # each token picks top_k distinct experts uniformly: the top_k of i.i.d. uniform scores
    picks = torch.rand(trials, batch, experts, generator=gen).topk(top_k, dim=-1).indices
    touched = torch.zeros(trials, experts, dtype=torch.bool)
    touched.scatter_(1, picks.reshape(trials, -1), True)
    measured = touched.sum(-1).double().mean().item()
    assert measured == pytest.approx(expected_experts_touched(experts, top_k, batch), rel=0.03)


# ---- block -----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", CONFIGS, ids=CONFIG_IDS)
def test_param_count_equals_spec(overrides):
    block = make_block(**overrides)
    assert param_count(block) == block.spec.param_count()


@pytest.mark.parametrize("overrides", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_step_equals_prefill(overrides, seq):
    block = make_block(seed=seq, **overrides)
    x = block.example_sequence(2, seq, torch.Generator().manual_seed(seq))  # (2, seq, width)
    state = block.allocate_state(2, seq)
    assert state == {}
    full = block.prefill(x, state)
    assert full.shape == x.shape
    steps = run_steps(block, x, state)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 7)])
def test_matches_dense_masked_reference(overrides, shape):
    block = make_block(seed=7, **overrides)
    gen = torch.Generator().manual_seed(99)
    x = torch.randn(*shape, WIDTH, generator=gen)  # (*shape, width)
    with torch.no_grad():
        out = block(x)
        ref = dense_reference(block, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x, atol=1e-3), "the block did nothing"
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_unrouted_experts_are_never_read():
    """Poison the experts no token chose with NaN: a block that ran them (densely, or masked
    after the fact) would produce NaN; the routed block must not notice."""
    block = make_block(seed=3, experts=8, top_k=2, expert_dim=96)
    x = block.example_input(1, torch.Generator().manual_seed(5))  # (1, width)
    with torch.no_grad():
        before = block.step(x, {}, 0)
        _, chosen = block.route(rms_norm(x, block.norm))
        unused = sorted(set(range(8)) - set(chosen.flatten().tolist()))
        assert len(unused) == 6
        for e in unused:
            block.w_gate[e] = float("nan")
            block.w_up[e] = float("nan")
            block.w_down[e] = float("nan")
        after = block.step(x, {}, 0)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_routing_weights_renormalised():
    block = make_block(seed=11, experts=8, top_k=3, expert_dim=64)
    h = torch.randn(10, WIDTH, generator=torch.Generator().manual_seed(2))
    weights, experts = block.route(h)
    assert weights.shape == experts.shape == (10, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))
    assert (weights > 0).all()
    assert all(len(set(row)) == 3 for row in experts.tolist())


def test_bfloat16_runs_and_stays_close_to_float32():
    spec = build_spec("moe", WIDTH, experts=8, top_k=2, expert_dim=96, shared_expert_dim=64)
    b32 = build_block(spec, dtype=torch.float32, seed=4)
    b16 = build_block(spec, dtype=torch.bfloat16, seed=4)
    x = b32.example_input(4, torch.Generator().manual_seed(8))  # (4, width)
    with torch.no_grad():
        out16 = b16.step(x.bfloat16(), {}, 0)
        out32 = b32.step(x, {}, 0)
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16).all()
    # routing may flip on a near tie in bf16: compare the tokens whose routing agrees
    with torch.no_grad():
        r16 = b16.route(rms_norm(x.bfloat16(), b16.norm))[1].sort(-1).values
        r32 = b32.route(rms_norm(x, b32.norm))[1].sort(-1).values
    same = (r16 == r32).all(-1)
    assert same.any()
    torch.testing.assert_close(out16[same].float(), out32[same], rtol=2e-2, atol=5e-2)
