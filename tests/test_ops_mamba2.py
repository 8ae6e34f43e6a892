"""Mamba2Block: decode steps against prefill, chunked SSD against the plain scan, the SSM step and
gated norm against mamba-ssm's references, the block's wiring against an independent composition,
backends (mamba-ssm's and our Triton kernels)."""

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
from latprof.ops.base import rms_norm
from latprof.ops.mamba2 import GATED_NORM_EPS, Mamba2Block
from latprof.ops.ssm_reference import (
    gated_rms_norm_ref,
    ssd_chunked_ref,
    ssd_scan_ref,
    ssd_state_update_ref,
)
from latprof.specs.mamba2 import Mamba2Spec

pytestmark = pytest.mark.usefixtures("no_grad", "one_thread")


def ssd_inputs(batch, seq, heads, head_dim, n_groups, d_state, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, heads, head_dim, generator=g)
    dt = torch.randn(batch, seq, heads, generator=g)
    A = -torch.rand(heads, generator=g) * 15 - 1
    B, C = (torch.randn(batch, seq, n_groups, d_state, generator=g) for _ in range(2))
    D, dt_bias = torch.randn(heads, generator=g), torch.randn(heads, generator=g) - 2
    return x, dt, A, B, C, D, dt_bias


@pytest.mark.parametrize(
    "width,kwargs", [(64, {}), (320, {"n_groups": 2}), (320, {"head_dim": 32, "d_state": 64})]
)
def test_param_count_matches_spec(width, kwargs):
    spec = Mamba2Spec.resolve(width, **kwargs)
    block = Mamba2Block(spec)
    assert param_count(block) == spec.param_count()
    assert all(p.abs().max() > 0 for p in block.parameters())


def test_init_ranges():
    block = Mamba2Block(Mamba2Spec.resolve(256), seed=3)
    check_ssm_init_ranges(block, block.dt_bias)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_chunked_ssd_equals_scan(seq, chunk_size):
    args = ssd_inputs(2, seq, heads=6, head_dim=8, n_groups=3, d_state=12, seed=seq + chunk_size)
    y_scan, h_scan = ssd_scan_ref(*args)
    y_chunk, h_chunk = ssd_chunked_ref(*args, chunk_size=chunk_size)
    assert y_chunk.shape == y_scan.shape and h_chunk.shape == h_scan.shape
    assert_rel_close(y_chunk, y_scan, 1e-5, "output")
    assert_rel_close(h_chunk, h_scan, 1e-5, "final state")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_prefill_equals_decode_steps(batch, seq):
    spec = Mamba2Spec.resolve(320, n_groups=2)  # 10 heads of 64, 2 groups, d_state 128
    assert spec.heads == 10
    block = Mamba2Block(spec, seed=seq)
    g = torch.Generator().manual_seed(200 + seq)
    x = block.example_sequence(batch, seq, generator=g)
    check_ssm_prefill_equals_steps(block, x)


@pytest.mark.parametrize(
    "batch,heads,head_dim,n_groups,d_state",
    [(1, 4, 16, 1, 32), (3, 10, 64, 2, 128), (2, 6, 8, 3, 5)],
)
def test_ssd_state_update_matches_mamba_ssm_ref(batch, heads, head_dim, n_groups, d_state):
    peer = mamba_ssm_peer().selective_state_update_ref
    x, dt, A, B, C, D, dt_bias = ssd_inputs(batch, 1, heads, head_dim, n_groups, d_state, heads)
    x, dt, B, C = x[:, 0], dt[:, 0], B[:, 0], C[:, 0]
    state = torch.randn(batch, heads, head_dim, d_state, generator=torch.Generator().manual_seed(1))

    ours_state, peer_state = state.clone(), state.clone()
    ours = ssd_state_update_ref(ours_state, x, dt, A, B, C, D, dt_bias)
    expected = peer(
        peer_state,
        x,
        dt[:, :, None].expand(batch, heads, head_dim),
        A[:, None, None].expand(heads, head_dim, d_state),
        B,
        C,
        D=D[:, None].expand(heads, head_dim),
        dt_bias=dt_bias[:, None].expand(heads, head_dim),
        dt_softplus=True,
    )
    assert_rel_close(ours, expected, 1e-5, "output")
    assert_rel_close(ours_state, peer_state, 1e-5, "state")


@pytest.mark.parametrize("dim,group_size", [(320, 320), (640, 320), (96, 32)])
def test_gated_rms_norm_matches_mamba_ssm_ref(dim, group_size):
    peer = mamba_ssm_peer("layernorm_gated").rms_norm_ref
    g = torch.Generator().manual_seed(dim)
    x, z = torch.randn(3, dim, generator=g), torch.randn(3, dim, generator=g)
    weight = 1 + 0.1 * torch.randn(dim, generator=g)
    ours = gated_rms_norm_ref(x, z, weight, group_size=group_size, eps=1e-5)
    expected = peer(x, weight, None, z=z, eps=1e-5, group_size=group_size, norm_before_gate=False)
    assert_rel_close(ours, expected, 1e-5, "gated norm")


def test_step_matches_independent_composition():
    """The block's step, rebuilt from its parameters with mamba-ssm's references."""
    ssm_peer = mamba_ssm_peer().selective_state_update_ref
    norm_peer = mamba_ssm_peer("layernorm_gated").rms_norm_ref
    spec = Mamba2Spec.resolve(192, head_dim=32, d_state=16, n_groups=3)  # 12 heads, 3 groups
    block = Mamba2Block(spec, seed=7)
    batch = 3
    state, expected_state, x = composition_inputs(block, batch, seed=7)

    out = block.step(x, state, pos=4)

    d_inner, conv_dim, H, P, G, N = (
        spec.d_inner, spec.conv_dim, spec.heads, spec.head_dim, spec.n_groups, spec.d_state
    )  # fmt: skip
    zxbcdt = rms_norm(x, block.norm_weight) @ block.in_proj_weight.T
    z, xbc, dt = zxbcdt[:, :d_inner], zxbcdt[:, d_inner:-H], zxbcdt[:, -H:]
    assert xbc.shape[1] == conv_dim
    window, xbc = conv_window_step(expected_state["conv"], xbc, block.conv_weight, block.conv_bias)
    xs = xbc[:, :d_inner].reshape(batch, H, P)
    B = xbc[:, d_inner : d_inner + G * N].reshape(batch, G, N)
    C = xbc[:, d_inner + G * N :].reshape(batch, G, N)
    y = ssm_peer(
        expected_state["ssm"],
        xs,
        dt[:, :, None].expand(batch, H, P),
        -block.A_log.exp()[:, None, None].expand(H, P, N),
        B,
        C,
        D=block.D[:, None].expand(H, P),
        dt_bias=block.dt_bias[:, None].expand(H, P),
        dt_softplus=True,
    ).reshape(batch, d_inner)
    y = norm_peer(
        y, block.gated_norm_weight, None, z=z, eps=GATED_NORM_EPS, group_size=d_inner // G,
        norm_before_gate=False,
    )  # fmt: skip
    check_step_composition(block, out, x, y, state, window, expected_state["ssm"])


def test_state_kept_in_block_dtype():
    block = Mamba2Block(Mamba2Spec.resolve(128, d_state=32), dtype=torch.bfloat16)
    check_state_kept_in_block_dtype(block)


def test_mamba_ssm_backend_refused_on_cpu():
    with pytest.raises(BackendUnavailable, match="mamba_ssm"):
        Mamba2Block(Mamba2Spec.resolve(64), backend="mamba_ssm", device="cpu")


@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_steps_match_torch(backend, device, monkeypatch):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba2_step")
        pytest.importorskip("latprof.kernels.gated_rms_norm")
    spec = Mamba2Spec.resolve(96, head_dim=32, d_state=48, n_groups=3)  # 6 heads, 3 groups
    check_fast_backend_steps_match_torch(
        Mamba2Block, spec, backend, device, monkeypatch, batch=2, steps=2
    )


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_bf16_on_gpu(backend):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba2_step")
        pytest.importorskip("latprof.kernels.gated_rms_norm")
    else:
        mamba_ssm_peer()
    spec = Mamba2Spec.resolve(1536, n_groups=2)  # 48 heads of 64, d_state 128
    check_fast_backend_bf16_on_gpu(Mamba2Block, spec, backend)
