"""DeltaNet block and the shared linear-attention pieces: decode steps against prefill, the torch
delta rule against fla-core's independent naive recurrence, the fla backend against the torch
backend (under Triton's interpreter on CPU), parameter counts, backend errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from op_checks import (
    LA_TOL,
    assert_state_bytes_match_spec,
    check_bfloat16_keeps_state_dtype_and_tracks_prefill,
    check_fla_refused_without_interpreter,
    check_fla_step_equals_torch_step,
    check_prefill_continues_from_state,
    check_steps_from_zero_state_equal_prefill,
    check_unknown_backend_refused,
    param_count,
)

from latprof.ops import build_block
from latprof.ops.deltanet import DeltaNetBlock
from latprof.ops.linear_attention import (
    causal_conv,
    causal_conv_step,
    gated_delta_rule_recurrence,
    l2_normalize,
)
from latprof.registry import build_spec

SMALL = {"heads": 2, "head_dim": 16}  # width 32: fast under the interpreter
AWKWARD = {"heads": 5, "head_dim": 64}  # width 320

pytestmark = pytest.mark.usefixtures("no_grad", "one_thread")


def spec_of(width: int, **kw):
    return build_spec("deltanet", width, **kw)


# ---- shared pieces -------------------------------------------------------------------------
@pytest.mark.parametrize("seq", [1, 3, 7])
def test_causal_conv_is_a_padded_depthwise_conv(seq):
    gen = torch.Generator().manual_seed(seq)
    batch, channels, d_conv = 3, 10, 4
    x = torch.randn(batch, seq, channels, generator=gen)
    weight = torch.randn(channels, d_conv, generator=gen)
    expected = F.silu(
        F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), padding=d_conv - 1, groups=channels)
    )[:, :, :seq].transpose(1, 2)
    state = torch.zeros(batch, channels, d_conv)
    torch.testing.assert_close(causal_conv(x, state, weight), expected, **LA_TOL[torch.float32])
    step_state = torch.zeros(batch, channels, d_conv)
    steps = torch.stack([causal_conv_step(x[:, t], step_state, weight) for t in range(seq)], 1)
    torch.testing.assert_close(steps, expected, **LA_TOL[torch.float32])
    torch.testing.assert_close(step_state, state, atol=0, rtol=0)


def test_l2_normalize_gives_unit_rows():
    x = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(l2_normalize(x).norm(dim=-1), torch.ones(4, 3))


@pytest.mark.parametrize("seq", [1, 7, 63])
def test_delta_rule_matches_fla_naive(seq):
    naive = pytest.importorskip("fla.ops.delta_rule.naive")
    gen = torch.Generator().manual_seed(seq)
    batch, heads, dk, dv = 2, 3, 16, 24
    q = l2_normalize(torch.randn(batch, seq, heads, dk, generator=gen))
    k = l2_normalize(torch.randn(batch, seq, heads, dk, generator=gen))
    v = torch.randn(batch, seq, heads, dv, generator=gen)
    beta = torch.rand(batch, seq, heads, generator=gen)
    h0 = torch.randn(batch, heads, dk, dv, generator=gen)
    o, ht = gated_delta_rule_recurrence(q, k, v, beta, None, h0, dk**-0.5)
    # fla's reference is head-first, (batch, heads, seq, dim), with the scale dk^-0.5 built in
    o_ref, ht_ref = naive.delta_rule_recurrence(
        *(t.transpose(1, 2) for t in (q, k, v, beta)), initial_state=h0.clone()
    )
    torch.testing.assert_close(o, o_ref.transpose(1, 2), **LA_TOL[torch.float32])
    torch.testing.assert_close(ht, ht_ref, **LA_TOL[torch.float32])


# ---- the block -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("width", "kw"), [(32, SMALL), (320, AWKWARD), (256, {}), (2048, {"d_conv": 3})]
)
def test_param_count_matches_spec(width, kw):
    spec = spec_of(width, **kw)
    block = DeltaNetBlock(spec)
    assert param_count(block) == spec.param_count()


@pytest.mark.parametrize("batch", [1, 3])
def test_state_shapes_match_spec_bytes(batch):
    spec = spec_of(320, **AWKWARD)
    state = DeltaNetBlock(spec).allocate_state(batch, 128)
    assert state["recurrent"].shape == (batch, 5, 64, 64)
    assert state["conv"].shape == (batch, spec.conv_channels, spec.d_conv)
    assert_state_bytes_match_spec(state, spec, batch, 128)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
@pytest.mark.parametrize(("width", "kw"), [(32, SMALL), (320, AWKWARD)])
def test_steps_from_zero_state_equal_prefill(width, kw, seq, batch):
    block = DeltaNetBlock(spec_of(width, **kw), seed=seq)
    check_steps_from_zero_state_equal_prefill(block, batch, seq)


def test_prefill_continues_from_state():
    check_prefill_continues_from_state(DeltaNetBlock(spec_of(32, **SMALL)))


def test_bfloat16_keeps_state_dtype_and_tracks_prefill():
    block = DeltaNetBlock(spec_of(32, **SMALL), dtype=torch.bfloat16)
    check_bfloat16_keeps_state_dtype_and_tracks_prefill(block)


def test_unknown_backend_is_an_input_error():
    check_unknown_backend_refused(DeltaNetBlock, spec_of(32, **SMALL))


def test_fla_on_cpu_without_interpreter_is_unavailable(monkeypatch):
    check_fla_refused_without_interpreter(DeltaNetBlock, spec_of(32, **SMALL), monkeypatch)


@pytest.mark.parametrize(
    ("width", "kw", "batch", "steps"),
    [(32, SMALL, 1, 3), (32, SMALL, 3, 3), (320, AWKWARD, 1, 1)],
)
def test_fla_step_equals_torch_step(device, nan_poison, width, kw, batch, steps):
    check_fla_step_equals_torch_step(DeltaNetBlock, spec_of(width, **kw), device, batch, steps)


def test_build_block_finds_deltanet():
    assert isinstance(build_block(spec_of(32, **SMALL)), DeltaNetBlock)
