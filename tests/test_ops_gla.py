"""GLA block: decode steps against prefill, the torch GLA recurrence against fla-core's
independent naive recurrence, the fla backend against the torch backend (under Triton's
interpreter on CPU), parameter counts, backend errors."""

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
from latprof.ops.gla import GATE_LOGIT_NORMALIZER, GLABlock
from latprof.ops.linear_attention import gla_recurrence
from latprof.registry import build_spec

SMALL = {"heads": 2, "head_dim": 16}  # width 32: fast under the interpreter
AWKWARD = {"heads": 5, "head_dim": 64}  # width 320

pytestmark = pytest.mark.usefixtures("no_grad", "one_thread")


def spec_of(width: int, **kw):
    return build_spec("gla", width, **kw)


@pytest.mark.parametrize("seq", [1, 7, 63])
def test_gla_recurrence_matches_fla_naive(seq):
    naive = pytest.importorskip("fla.ops.gla.naive")
    gen = torch.Generator().manual_seed(seq)
    batch, heads, dk, dv = 2, 3, 16, 24
    q = torch.randn(batch, seq, heads, dk, generator=gen)
    k = torch.randn(batch, seq, heads, dk, generator=gen)
    v = torch.randn(batch, seq, heads, dv, generator=gen)
    gk = F.logsigmoid(torch.randn(batch, seq, heads, dk, generator=gen))
    h0 = torch.randn(batch, heads, dk, dv, generator=gen)
    o, ht = gla_recurrence(q, k, v, gk, h0, dk**-0.5)
    # fla's reference builds in the scale dk^-0.5
    o_ref, ht_ref = naive.naive_recurrent_gla(
        q, k, v, gk, initial_state=h0.clone(), output_final_state=True
    )
    torch.testing.assert_close(o, o_ref, **LA_TOL[torch.float32])
    torch.testing.assert_close(ht, ht_ref, **LA_TOL[torch.float32])


def test_decay_is_normalised_log_sigmoid():
    block = GLABlock(spec_of(32, **SMALL))
    x = block.example_input(3, torch.Generator().manual_seed(0))
    gk = block._project(x)[4]  # (batch, heads, head_dim)
    assert gk.dtype == torch.float32 and gk.shape == (3, 2, 16)
    assert (gk < 0).all() and (gk > -torch.inf).all()
    # logsigmoid(z) / 16 >= log(1/2) / 16 exactly when z >= 0: both signs must occur
    boundary = torch.tensor(0.5).log() / GATE_LOGIT_NORMALIZER
    assert (gk > boundary).any() and (gk < boundary).any()


@pytest.mark.parametrize(
    ("width", "kw"), [(32, SMALL), (320, AWKWARD), (256, {}), (2048, {"gate_rank": 32})]
)
def test_param_count_matches_spec(width, kw):
    spec = spec_of(width, **kw)
    block = GLABlock(spec)
    assert param_count(block) == spec.param_count()


@pytest.mark.parametrize("batch", [1, 3])
def test_state_shapes_match_spec_bytes(batch):
    spec = spec_of(320, **AWKWARD)
    state = GLABlock(spec).allocate_state(batch, 128)
    assert set(state) == {"recurrent"}
    assert state["recurrent"].shape == (batch, 5, 64, 64)
    assert_state_bytes_match_spec(state, spec, batch, 128)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
@pytest.mark.parametrize(("width", "kw"), [(32, SMALL), (320, AWKWARD)])
def test_steps_from_zero_state_equal_prefill(width, kw, seq, batch):
    block = GLABlock(spec_of(width, **kw), seed=seq)
    check_steps_from_zero_state_equal_prefill(block, batch, seq)


def test_prefill_continues_from_state():
    check_prefill_continues_from_state(GLABlock(spec_of(32, **SMALL)))


def test_bfloat16_keeps_state_dtype_and_tracks_prefill():
    block = GLABlock(spec_of(32, **SMALL), dtype=torch.bfloat16)
    check_bfloat16_keeps_state_dtype_and_tracks_prefill(block)


def test_unknown_backend_is_an_input_error():
    check_unknown_backend_refused(GLABlock, spec_of(32, **SMALL))


def test_fla_on_cpu_without_interpreter_is_unavailable(monkeypatch):
    check_fla_refused_without_interpreter(GLABlock, spec_of(32, **SMALL), monkeypatch)


@pytest.mark.parametrize(
    ("width", "kw", "batch", "steps"),
    [(32, SMALL, 1, 3), (32, SMALL, 3, 3), (320, AWKWARD, 3, 2)],
)
def test_fla_step_equals_torch_step(device, nan_poison, width, kw, batch, steps):
    check_fla_step_equals_torch_step(GLABlock, spec_of(width, **kw), device, batch, steps)


def test_build_block_finds_gla():
    assert isinstance(build_block(spec_of(32, **SMALL)), GLABlock)
