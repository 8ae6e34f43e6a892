"""Kimi Delta Attention block: decode steps against prefill (from zero and from a random state),
the torch recurrence and decay gate against fla-core's naive references and transformers' PyTorch
recurrence, the whole block against transformers' KimiLinearDeltaAttention (its PyTorch chunked
path) with latprof's weights copied in, the fla backend against the torch backend (under Triton's
interpreter on CPU), parameter counts (against transformers too), state bytes, bfloat16, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from op_checks import (
    LA_TOL,
    assert_state_bytes_match_spec,
    check_bfloat16_keeps_state_dtype_and_tracks_prefill,
    check_fla_refused_without_interpreter,
    check_fla_step_equals_torch_step,
    check_prefill_continues_from_state,
    check_steps_from_random_state_equal_prefill,
    check_steps_from_zero_state_equal_prefill,
    check_unknown_backend_refused,
    param_count,
    run_steps,
)

from latprof.errors import InputError
from latprof.ops import build_block
from latprof.ops.base import rms_norm
from latprof.ops.kda import KDABlock, kda_log_decay, kda_recurrence
from latprof.ops.linear_attention import l2_normalize
from latprof.registry import build_spec

SMALL = {"heads": 2, "head_dim": 16}  # width 32: fast under the interpreter
#: width 100, heads x head_dim = 120 (not the width), head_dim no power of two, gate_rank 7
AWKWARD = {"heads": 5, "head_dim": 24, "gate_rank": 7}
WIDE = {"heads": 5, "head_dim": 64}  # width 320
SHAPES = [(32, SMALL), (100, AWKWARD), (320, WIDE)]

pytestmark = pytest.mark.usefixtures("no_grad", "one_thread")


def spec_of(width: int, **kw):
    return build_spec("kda", width, **kw)


def random_kda_inputs(batch, seq, heads, dk, dv, seed):
    """q, k (L2-normalised), v, g (log decay per key channel, < 0), beta, h0: fresh N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    q = l2_normalize(torch.randn(batch, seq, heads, dk, generator=gen))
    k = l2_normalize(torch.randn(batch, seq, heads, dk, generator=gen))
    v = torch.randn(batch, seq, heads, dv, generator=gen)
    g = -torch.rand(batch, seq, heads, dk, generator=gen)  # in (-1, 0]: per channel
    beta = torch.rand(batch, seq, heads, generator=gen)
    h0 = torch.randn(batch, heads, dk, dv, generator=gen)
    return q, k, v, g, beta, h0


# ---- the recurrence and the decay gate against independent references --------------------------
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_kda_recurrence_matches_fla_naive(seq):
    naive = pytest.importorskip("fla.ops.kda.naive")
    q, k, v, g, beta, h0 = random_kda_inputs(3, seq, 5, 24, 20, seed=seq)
    scale = 0.3
    o, ht = kda_recurrence(q, k, v, beta, g, h0, scale)
    o_ref, ht_ref = naive.naive_recurrent_kda(
        q, k, v, g, beta, scale=scale, initial_state=h0.clone(), output_final_state=True
    )
    torch.testing.assert_close(o, o_ref, **LA_TOL[torch.float32])
    torch.testing.assert_close(ht, ht_ref, **LA_TOL[torch.float32])


@pytest.mark.parametrize("seq", [1, 9])
def test_kda_recurrence_matches_transformers_recurrent_path(seq):
    """transformers' PyTorch recurrence (the function its fla kernel replaces), which L2-normalises
    q and k and scales q by head_dim^-0.5 itself, from a random state."""
    kimi = pytest.importorskip("transformers.models.kimi_linear.modeling_kimi_linear")
    torch_path = kimi.recurrent_kimi_delta_attention.__wrapped__
    gen = torch.Generator().manual_seed(seq)
    batch, heads, dk = 3, 5, 24
    q_raw, k_raw = (torch.randn(batch, seq, heads, dk, generator=gen) for _ in range(2))
    _, _, v, g, beta, h0 = random_kda_inputs(batch, seq, heads, dk, dk, seed=seq + 100)
    o, ht = kda_recurrence(l2_normalize(q_raw), l2_normalize(k_raw), v, beta, g, h0, dk**-0.5)
    o_ref, ht_ref = torch_path(
        q_raw, k_raw, v, g=g, beta=beta, initial_state=h0.clone(), output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    torch.testing.assert_close(o, o_ref, **LA_TOL[torch.float32])
    torch.testing.assert_close(ht, ht_ref, **LA_TOL[torch.float32])


def test_decay_is_per_channel_and_matches_fla_gate():
    gate = pytest.importorskip("fla.ops.kda.gate")
    gen = torch.Generator().manual_seed(0)
    heads, dk = 3, 24
    f = 4 * torch.randn(2, 7, heads * dk, generator=gen)  # softplus at both ends
    a_log = torch.randn(heads, generator=gen)
    dt_bias = torch.randn(heads * dk, generator=gen)
    g = kda_log_decay(f, a_log, dt_bias)
    assert g.shape == (2, 7, heads, dk) and g.dtype == torch.float32 and (g <= 0).all()
    expected = gate.naive_kda_gate(f.unflatten(-1, (heads, dk)), a_log, dt_bias)
    torch.testing.assert_close(g, expected)
    assert g[..., 0, :].std(-1).min() > 0  # channels of one head decay differently


# ---- the block against transformers' KimiLinearDeltaAttention ----------------------------------
def kimi_peer(block: KDABlock, monkeypatch):
    """transformers' KimiLinearDeltaAttention of `block`'s shape, holding `block`'s weights.

    With fla installed transformers binds fla's Triton chunk kernel (`chunk_kda`) in place of its
    PyTorch `chunk_kimi_delta_attention`; the PyTorch function (kept as `__wrapped__`) is put back
    for the test, and likewise for the conv, so the peer runs its own PyTorch path on the CPU."""
    kimi = pytest.importorskip("transformers.models.kimi_linear.modeling_kimi_linear")
    from transformers import KimiLinearConfig

    for name in ("chunk_kimi_delta_attention", "causal_conv1d_fn"):
        monkeypatch.setattr(kimi, name, getattr(kimi, name).__wrapped__)
    s = block.spec
    assert s.gate_rank == s.head_dim, "transformers fixes gate_rank = head_dim"
    config = KimiLinearConfig(
        hidden_size=s.width,
        num_hidden_layers=1,
        layer_types=["linear_attention"],
        linear_num_heads=s.heads,
        linear_head_dim=s.head_dim,
        linear_conv_kernel_dim=s.d_conv,
        hidden_act="silu",
        rms_norm_eps=1e-6,  # latprof's
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = kimi.KimiLinearDeltaAttention(config, layer_idx=0).eval()
    d, r = s.key_dim, s.gate_rank
    q, k, v, f_a, g_a, b = block.w_in.split([d, d, d, r, r, s.heads])
    with torch.no_grad():
        for module, weight in (
            (peer.q_proj, q), (peer.k_proj, k), (peer.v_proj, v), (peer.b_proj, b),
            (peer.forget_gate.f_a_proj, f_a), (peer.forget_gate.f_b_proj, block.w_f),
            (peer.g_a_proj, g_a), (peer.g_b_proj, block.w_g), (peer.o_norm, block.o_norm),
            (peer.o_proj, block.w_out),
        ):  # fmt: skip
            module.weight.copy_(weight)
        peer.conv1d.weight.copy_(block.conv_weight.unsqueeze(1))  # (3 d, 1, d_conv)
        peer.forget_gate.dt_bias.copy_(block.dt_bias)
        peer.forget_gate.A_log.copy_(block.a_log.view(1, 1, -1, 1))
    return peer


@pytest.mark.parametrize("seq", [1, 7, 70])  # 70: more than one of transformers' 64-token chunks
@pytest.mark.parametrize(
    ("width", "kw"), [(32, SMALL), (100, {"heads": 5, "head_dim": 24}), (96, {"heads": 3})]
)
def test_block_matches_transformers_kimi_linear_delta_attention(width, kw, seq, monkeypatch):
    """The mixer (prefill minus the residual) against transformers' module on the pre-normed x:
    its chunked PyTorch algorithm, not a token-by-token recurrence, and its own conv, forget
    gate and sigmoid-gated norm."""
    block = KDABlock(spec_of(width, **kw), seed=seq)
    peer = kimi_peer(block, monkeypatch)
    x = block.example_sequence(3, seq, torch.Generator().manual_seed(1))
    ours = block.prefill(x, block.allocate_state(3, seq)) - x
    theirs = peer(rms_norm(x, block.norm))
    assert ours.abs().max() > 1e-2  # the mixer added something
    torch.testing.assert_close(ours, theirs, atol=5e-5, rtol=5e-5)


# ---- costs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("width", "kw"), [*SHAPES, (256, {}), (2304, {"heads": 32, "head_dim": 128})]
)
def test_param_count_matches_the_block(width, kw):
    spec = spec_of(width, **kw)
    assert param_count(KDABlock(spec)) == spec.param_count()


@pytest.mark.parametrize(
    ("width", "kw"),
    [(32, SMALL), (100, {"heads": 5, "head_dim": 24}), (2304, {"heads": 32, "head_dim": 128})],
)
def test_param_count_matches_transformers_plus_the_pre_norm(width, kw):
    """The last shape is transformers' default KimiLinearConfig (Kimi-Linear-48B-A3B's KDA
    layers: width 2304, 32 heads of 128); the peer is built on the meta device."""
    kimi = pytest.importorskip("transformers.models.kimi_linear.modeling_kimi_linear")
    from transformers import KimiLinearConfig

    spec = spec_of(width, **kw)
    config = KimiLinearConfig(
        hidden_size=width,
        num_hidden_layers=1,
        layer_types=["linear_attention"],
        linear_num_heads=spec.heads,
        linear_head_dim=spec.head_dim,
    )
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        peer = kimi.KimiLinearDeltaAttention(config, layer_idx=0)
    assert spec.param_count() == param_count(peer) + width


@pytest.mark.parametrize("batch", [1, 3])
def test_state_shapes_match_spec_bytes(batch):
    spec = spec_of(100, **AWKWARD)
    state = KDABlock(spec).allocate_state(batch, 128)
    assert state["recurrent"].shape == (batch, 5, 24, 24)
    assert state["conv"].shape == (batch, 3 * 120, 4)
    assert_state_bytes_match_spec(state, spec, batch, 128)
    assert spec.state_bytes(batch, 8000, "bf16").recurrent == batch * 5 * 24 * 24 * 2


def test_flops_count_the_recurrence_beyond_the_matmuls():
    spec = spec_of(320, **WIDE)
    recurrence = 3 * 5 * (7 * 64 * 64 + 2 * 64 + 64)
    assert spec.flops_per_step(3, 0) == 2 * 3 * spec.param_count() + recurrence


# ---- decode steps against prefill --------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
@pytest.mark.parametrize(("width", "kw"), SHAPES)
def test_steps_from_zero_state_equal_prefill(width, kw, seq, batch):
    block = KDABlock(spec_of(width, **kw), seed=seq)
    check_steps_from_zero_state_equal_prefill(block, batch, seq)


@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (3, 7), (2, 33)])
@pytest.mark.parametrize(("width", "kw"), SHAPES)
def test_steps_from_random_state_equal_prefill(width, kw, batch, seq):
    block = KDABlock(spec_of(width, **kw), seed=batch)
    check_steps_from_random_state_equal_prefill(block, batch, seq)


def test_prefill_continues_from_state():
    check_prefill_continues_from_state(KDABlock(spec_of(100, **AWKWARD)))


def test_bfloat16_keeps_state_dtype_and_tracks_prefill():
    block = KDABlock(spec_of(100, **AWKWARD), dtype=torch.bfloat16)
    check_bfloat16_keeps_state_dtype_and_tracks_prefill(block)


def test_bfloat16_steps_stay_close_to_float32():
    """The same weights (float32 rounded to bfloat16 from one seed) and inputs: 7 bfloat16
    steps track the float32 block's."""
    spec = spec_of(100, **AWKWARD)
    f32, bf16 = KDABlock(spec, seed=3), KDABlock(spec, dtype=torch.bfloat16, seed=3)
    x = bf16.example_sequence(3, 7, torch.Generator().manual_seed(4))  # (3, 7, 100) bfloat16
    ours = run_steps(bf16, x, bf16.allocate_state(3, 7))
    expected = run_steps(f32, x.float(), f32.allocate_state(3, 7))
    assert ours.dtype == torch.bfloat16 and torch.isfinite(ours.float()).all()
    torch.testing.assert_close(ours.float(), expected, **LA_TOL[torch.bfloat16])


# ---- backends ---------------------------------------------------------------------------------
def test_unknown_backend_is_an_input_error():
    check_unknown_backend_refused(KDABlock, spec_of(32, **SMALL))


def test_fla_on_cpu_without_interpreter_is_unavailable(monkeypatch):
    check_fla_refused_without_interpreter(KDABlock, spec_of(32, **SMALL), monkeypatch)


@pytest.mark.parametrize(
    ("width", "kw", "batch", "steps"),
    [
        (32, SMALL, 1, 3),
        (32, SMALL, 3, 3),
        (100, AWKWARD, 3, 2),
        (320, WIDE, 1, 1),
    ],
)
def test_fla_step_equals_torch_step(device, nan_poison, width, kw, batch, steps):
    check_fla_step_equals_torch_step(KDABlock, spec_of(width, **kw), device, batch, steps)


# ---- spec --------------------------------------------------------------------------------------
def test_defaults_follow_the_width_and_transformers():
    spec = spec_of(2048)
    assert (spec.heads, spec.head_dim, spec.d_conv, spec.gate_rank) == (16, 128, 4, 128)
    assert spec_of(96, heads=3).gate_rank == 32  # gate_rank follows head_dim
    assert spec_of(96, heads=3, gate_rank=5).gate_rank == 5


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"heads": 5}, "heads"),  # does not divide 256
        ({"heads": 0}, "heads"),
        ({"head_dim": -8}, "head_dim"),
        ({"d_conv": 0}, "d_conv"),
        ({"gate_rank": 0}, "gate_rank"),
        ({"gate_rank": 2.5}, "gate_rank"),
    ],
)
def test_impossible_shapes_are_input_errors_naming_the_field(kw, field):
    with pytest.raises(InputError, match=f"kda: .*{field}"):
        spec_of(256, **kw)


def test_build_block_finds_kda():
    assert isinstance(build_block(spec_of(32, **SMALL)), KDABlock)
