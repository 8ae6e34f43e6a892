"""Gated DeltaNet block: decode steps against prefill, the torch gated delta rule against
fla-core's independent naive recurrence, the fla backend against the torch backend (under
Triton's interpreter on CPU), parameter counts, backend errors."""

from __future__ import annotations

import pytest
import torch
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
from latprof.ops.gated_deltanet import GatedDeltaNetBlock, log_decay
from latprof.ops.linear_attention import gated_delta_rule_recurrence, l2_normalize
from latprof.registry import build_spec

SMALL = {"heads": 2, "head_dim": 16, "expand_v": 2}  # width 32: fast under the interpreter
AWKWARD = {"heads": 5, "head_dim": 64, "expand_v": 2}  # width 320
GROUPED = {"heads": 2, "head_dim": 16, "expand_v": 2, "v_heads": 4}  # Qwen3-Next's layout

pytestmark = pytest.mark.usefixtures("no_grad", "one_thread")


def spec_of(width: int, **kw):
    return build_spec("gated_deltanet", width, **kw)


@pytest.mark.parametrize("seq", [1, 7, 63])
def test_gated_delta_rule_matches_fla_naive(seq):
    naive = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    gen = torch.Generator().manual_seed(seq)
    batch, heads, dk, dv = 2, 3, 16, 32
    q = l2_normalize(torch.randn(batch, seq, heads, dk, generator=gen))
    k = l2_normalize(torch.randn(batch, seq, heads, dk, generator=gen))
    v = torch.randn(batch, seq, heads, dv, generator=gen)
    beta = torch.rand(batch, seq, heads, generator=gen)
    g = -torch.rand(batch, seq, heads, generator=gen)  # log decay in (-1, 0]
    h0 = torch.randn(batch, heads, dk, dv, generator=gen)
    scale = 0.3
    o, ht = gated_delta_rule_recurrence(q, k, v, beta, g, h0, scale)
    o_ref, ht_ref = naive.naive_recurrent_gated_delta_rule(
        q, k, v, beta, g, scale=scale, initial_state=h0.clone(), output_final_state=True
    )
    torch.testing.assert_close(o, o_ref, **LA_TOL[torch.float32])
    torch.testing.assert_close(ht, ht_ref, **LA_TOL[torch.float32])


def test_log_decay_is_mamba2_parameterisation():
    alpha = torch.tensor([[-30.0, 0.0, 3.0]])
    a_log = torch.tensor([0.0, 1.0, 2.0])
    dt_bias = torch.tensor([0.5, -0.5, 0.0])
    expected = -a_log.exp() * torch.log1p((alpha + dt_bias).exp())
    torch.testing.assert_close(log_decay(alpha, a_log, dt_bias), expected)
    assert (log_decay(alpha, a_log, dt_bias) <= 0).all()


@pytest.mark.parametrize(
    ("width", "kw"),
    [
        (32, SMALL),
        (320, AWKWARD),
        (256, {}),
        (2048, {"expand_v": 2, "head_dim": 256}),
        (32, GROUPED),
    ],
)
def test_param_count_matches_spec(width, kw):
    spec = spec_of(width, **kw)
    block = GatedDeltaNetBlock(spec)
    assert param_count(block) == spec.param_count()


@pytest.mark.parametrize("batch", [1, 3])
def test_state_shapes_match_spec_bytes(batch):
    spec = spec_of(320, **AWKWARD)
    state = GatedDeltaNetBlock(spec).allocate_state(batch, 128)
    assert state["recurrent"].shape == (batch, 5, 64, 128)
    assert state["conv"].shape == (batch, spec.conv_channels, spec.d_conv)
    assert_state_bytes_match_spec(state, spec, batch, 128)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
@pytest.mark.parametrize(("width", "kw"), [(32, SMALL), (320, AWKWARD), (32, GROUPED)])
def test_steps_from_zero_state_equal_prefill(width, kw, seq, batch):
    block = GatedDeltaNetBlock(spec_of(width, **kw), seed=seq)
    check_steps_from_zero_state_equal_prefill(block, batch, seq)


def test_grouped_value_heads_share_key_heads():
    """v_heads 4 over 2 key heads: value heads 0, 1 read key head 0, and 2, 3 key head 1."""
    spec = spec_of(32, **GROUPED)
    assert (spec.value_heads, spec.head_v_dim, spec.value_dim) == (4, 16, 64)
    block = GatedDeltaNetBlock(spec)
    qkv = torch.randn(3, spec.conv_channels)
    q, k, v = block._split_heads(qkv)
    assert q.shape == k.shape == v.shape == (3, 4, 16)
    torch.testing.assert_close(q[:, 0], q[:, 1])
    torch.testing.assert_close(k[:, 2], k[:, 3])
    assert block.allocate_state(1, 8)["recurrent"].shape == (1, 4, 16, 16)


def test_prefill_continues_from_state():
    check_prefill_continues_from_state(GatedDeltaNetBlock(spec_of(32, **SMALL)))


def test_bfloat16_keeps_state_dtype_and_tracks_prefill():
    block = GatedDeltaNetBlock(spec_of(32, **SMALL), dtype=torch.bfloat16)
    check_bfloat16_keeps_state_dtype_and_tracks_prefill(block)


def test_unknown_backend_is_an_input_error():
    check_unknown_backend_refused(GatedDeltaNetBlock, spec_of(32, **SMALL))


def test_fla_on_cpu_without_interpreter_is_unavailable(monkeypatch):
    check_fla_refused_without_interpreter(GatedDeltaNetBlock, spec_of(32, **SMALL), monkeypatch)


@pytest.mark.parametrize(
    ("width", "kw", "batch", "steps"),
    [
        (32, SMALL, 1, 3),
        (32, SMALL, 3, 3),
        (32, {"heads": 2}, 3, 2),
        (320, AWKWARD, 1, 1),
        (32, GROUPED, 2, 2),
    ],
)
def test_fla_step_equals_torch_step(device, nan_poison, width, kw, batch, steps):
    check_fla_step_equals_torch_step(GatedDeltaNetBlock, spec_of(width, **kw), device, batch, steps)


def test_build_block_finds_gated_deltanet():
    assert isinstance(build_block(spec_of(32, **SMALL)), GatedDeltaNetBlock)
