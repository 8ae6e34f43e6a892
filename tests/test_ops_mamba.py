"""MambaBlock: decode steps against prefill, the SSM step against mamba-ssm's reference, the block's
wiring against an independent composition, backends (mamba-ssm's and our Triton kernels)."""

from __future__ import annotations

import pytest
import torch
from op_checks import (
    assert_rel_close,
    check_fast_backend_bf16_on_gpu,
    check_fast_backend_steps_match_torch,
    check_ssm_init_ranges,
    check_ssm_prefill_equals_steps,
    check_state_kept_in_block_dtype,
    check_step_composition,
    composition_inputs,
    conv_window_step,
    mamba_ssm_peer,
    param_count,
)

from latprof.errors import BackendUnavailable
from latprof.ops import mamba_ssm_compat
from latprof.ops.base import rms_norm
from latprof.ops.mamba import MambaBlock
from latprof.ops.ssm_reference import selective_state_update_ref
from latprof.specs.mamba import MambaSpec

pytestmark = pytest.mark.usefixtures("no_grad", "one_thread")


@pytest.mark.parametrize("width", [64, 100, 320])
def test_param_count_matches_spec(width):
    spec = MambaSpec.resolve(width)
    block = MambaBlock(spec)
    assert param_count(block) == spec.param_count()
    assert all(p.abs().max() > 0 for p in block.parameters())


def test_init_ranges():
    block = MambaBlock(MambaSpec.resolve(128), seed=3)
    check_ssm_init_ranges(block, block.dt_proj_bias)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_prefill_equals_decode_steps(batch, seq):
    spec = MambaSpec.resolve(100, d_state=16, d_conv=4)  # d_inner 200, dt_rank 7
    block = MambaBlock(spec, seed=seq)
    g = torch.Generator().manual_seed(100 + seq)
    x = block.example_sequence(batch, seq, generator=g)
    check_ssm_prefill_equals_steps(block, x)


@pytest.mark.parametrize("batch,dim,d_state", [(1, 64, 16), (3, 200, 16), (2, 96, 7)])
def test_selective_state_update_matches_mamba_ssm_ref(batch, dim, d_state):
    peer = mamba_ssm_peer().selective_state_update_ref
    g = torch.Generator().manual_seed(dim)
    state = torch.randn(batch, dim, d_state, generator=g)
    x, dt, z = (torch.randn(batch, dim, generator=g) for _ in range(3))
    A = -torch.rand(dim, d_state, generator=g) * 15 - 1
    B, C = (torch.randn(batch, d_state, generator=g) for _ in range(2))
    D, dt_bias = torch.randn(dim, generator=g), torch.randn(dim, generator=g) - 3

    ours_state, peer_state = state.clone(), state.clone()
    ours = selective_state_update_ref(ours_state, x, dt, A, B, C, D, z, dt_bias)
    expected = peer(peer_state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
    assert_rel_close(ours, expected, 1e-5, "output")
    assert_rel_close(ours_state, peer_state, 1e-5, "state")
    assert not torch.equal(ours_state, state)


def test_step_matches_independent_composition():
    """The block's step, rebuilt from its parameters with mamba-ssm's reference for the SSM."""
    peer = mamba_ssm_peer().selective_state_update_ref
    spec = MambaSpec.resolve(96, d_state=16, d_conv=4, dt_rank=5)
    block = MambaBlock(spec, seed=7)
    state, expected_state, x = composition_inputs(block, batch=3, seed=7)

    out = block.step(x, state, pos=5)

    d_inner, r, n = spec.d_inner, spec.dt_rank, spec.d_state
    xz = rms_norm(x, block.norm_weight) @ block.in_proj_weight.T
    xs, z = xz[:, :d_inner], xz[:, d_inner:]
    window, xs = conv_window_step(expected_state["conv"], xs, block.conv_weight, block.conv_bias)
    x_dbl = xs @ block.x_proj_weight.T
    dt = x_dbl[:, :r] @ block.dt_proj_weight.T + block.dt_proj_bias
    B, C = x_dbl[:, r : r + n], x_dbl[:, r + n :]
    A = -block.A_log.exp()
    y = peer(expected_state["ssm"], xs, dt, A, B, C, D=block.D, z=z, dt_softplus=True)
    check_step_composition(block, out, x, y, state, window, expected_state["ssm"])


def test_state_kept_in_block_dtype():
    block = MambaBlock(MambaSpec.resolve(64), dtype=torch.bfloat16)
    check_state_kept_in_block_dtype(block)


def test_mamba_ssm_backend_refused_on_cpu():
    with pytest.raises(BackendUnavailable, match="mamba_ssm"):
        MambaBlock(MambaSpec.resolve(64), backend="mamba_ssm", device="cpu")
    assert mamba_ssm_compat.unavailable_on(torch.device("cpu"))


@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_steps_match_torch(backend, device, monkeypatch):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba_step")
    spec = MambaSpec.resolve(80, d_state=16, d_conv=4)  # d_inner 160: not a power of two
    check_fast_backend_steps_match_torch(
        MambaBlock, spec, backend, device, monkeypatch, batch=3, steps=3
    )


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_bf16_on_gpu(backend):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba_step")
    else:
        mamba_ssm_peer()
    check_fast_backend_bf16_on_gpu(MambaBlock, MambaSpec.resolve(1024), backend)
