"""Mamba2Block: decode steps against prefill, chunked SSD against the plain scan, the SSM step and
gated norm against mamba-ssm's references, the block's wiring against an independent composition,
backends (mamba-ssm's and our Triton kernels)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from latprof.errors import BackendUnavailable
from latprof.ops import mamba_ssm_compat
from latprof.ops.base import rms_norm
from latprof.ops.mamba2 import GATED_NORM_EPS, Mamba2Block
from latprof.ops.ssm_reference import (
    gated_rms_norm_ref,
    ssd_chunked_ref,
    ssd_scan_ref,
    ssd_state_update_ref,
)
from latprof.specs.mamba2 import Mamba2Spec


@pytest.fixture(autouse=True)
def no_grad():
    """Decode runs without autograd (the timer uses inference mode)."""
    with torch.no_grad():
        yield


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are small: one intra-op thread avoids contention on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """max |actual - expected| <= rel * max |expected| (both finite)."""
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().item()
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= rel * scale + 1e-12, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def peer_module(stem: str):
    if mamba_ssm_compat.missing():
        pytest.skip(f"mamba-ssm's Triton files not found: {mamba_ssm_compat.missing()}")
    return mamba_ssm_compat.load(stem)


def random_state(block: Mamba2Block, batch: int, generator: torch.Generator) -> dict:
    state = block.allocate_state(batch, max_context=16)
    for value in state.values():
        value.copy_(torch.randn(value.shape, generator=generator))
    return state


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
    assert sum(p.numel() for p in block.parameters()) == spec.param_count()
    assert all(p.abs().max() > 0 for p in block.parameters())


def test_init_ranges():
    block = Mamba2Block(Mamba2Spec.resolve(256), seed=3)
    dt = F.softplus(block.dt_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    a = block.A_log.exp()
    assert a.min() >= 1.0 and a.max() <= 16.0
    assert block.conv_weight.abs().min() > 0


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_chunked_ssd_equals_scan(seq, chunk_size):
    args = ssd_inputs(2, seq, heads=6, head_dim=8, n_groups=3, d_state=12, seed=seq + chunk_size)
    y_scan, h_scan = ssd_scan_ref(*args)
    y_chunk, h_chunk = ssd_chunked_ref(*args, chunk_size=chunk_size)
    assert y_chunk.shape == y_scan.shape and h_chunk.shape == h_scan.shape
    assert_close(y_chunk, y_scan, 1e-5, "output")
    assert_close(h_chunk, h_scan, 1e-5, "final state")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_prefill_equals_decode_steps(batch, seq):
    spec = Mamba2Spec.resolve(320, n_groups=2)  # 10 heads of 64, 2 groups, d_state 128
    assert spec.heads == 10
    block = Mamba2Block(spec, seed=seq)
    g = torch.Generator().manual_seed(200 + seq)
    x = block.example_sequence(batch, seq, generator=g)

    stepped = block.allocate_state(batch, max_context=seq)
    outs = torch.stack([block.step(x[:, t], stepped, t) for t in range(seq)], dim=1)

    prefilled = block.allocate_state(batch, max_context=seq)
    for value in prefilled.values():
        value.fill_(float("nan"))  # prefill must overwrite, never read, the state
    out = block.prefill(x, prefilled)

    assert out.shape == (batch, seq, spec.width)
    assert_close(out - x, outs - x, 1e-5, "mixer output")
    assert_close(prefilled["conv"], stepped["conv"], 1e-5, "conv state")
    assert_close(prefilled["ssm"], stepped["ssm"], 1e-5, "ssm state")
    assert stepped["ssm"].abs().max() > 0


@pytest.mark.parametrize(
    "batch,heads,head_dim,n_groups,d_state",
    [(1, 4, 16, 1, 32), (3, 10, 64, 2, 128), (2, 6, 8, 3, 5)],
)
def test_ssd_state_update_matches_mamba_ssm_ref(batch, heads, head_dim, n_groups, d_state):
    peer = peer_module("selective_state_update").selective_state_update_ref
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
    assert_close(ours, expected, 1e-5, "output")
    assert_close(ours_state, peer_state, 1e-5, "state")


@pytest.mark.parametrize("dim,group_size", [(320, 320), (640, 320), (96, 32)])
def test_gated_rms_norm_matches_mamba_ssm_ref(dim, group_size):
    peer = peer_module("layernorm_gated").rms_norm_ref
    g = torch.Generator().manual_seed(dim)
    x, z = torch.randn(3, dim, generator=g), torch.randn(3, dim, generator=g)
    weight = 1 + 0.1 * torch.randn(dim, generator=g)
    ours = gated_rms_norm_ref(x, z, weight, group_size=group_size, eps=1e-5)
    expected = peer(x, weight, None, z=z, eps=1e-5, group_size=group_size, norm_before_gate=False)
    assert_close(ours, expected, 1e-5, "gated norm")


def test_step_matches_independent_composition():
    """The block's step, rebuilt from its parameters with mamba-ssm's references."""
    ssm_peer = peer_module("selective_state_update").selective_state_update_ref
    norm_peer = peer_module("layernorm_gated").rms_norm_ref
    spec = Mamba2Spec.resolve(192, head_dim=32, d_state=16, n_groups=3)  # 12 heads, 3 groups
    block = Mamba2Block(spec, seed=7)
    g = torch.Generator().manual_seed(7)
    batch = 3
    state = random_state(block, batch, g)
    expected_state = {k: v.clone() for k, v in state.items()}
    x = block.example_input(batch, generator=g)

    out = block.step(x, state, pos=4)

    d_inner, conv_dim, H, P, G, N = (
        spec.d_inner, spec.conv_dim, spec.heads, spec.head_dim, spec.n_groups, spec.d_state
    )  # fmt: skip
    zxbcdt = rms_norm(x, block.norm_weight) @ block.in_proj_weight.T
    z, xbc, dt = zxbcdt[:, :d_inner], zxbcdt[:, d_inner:-H], zxbcdt[:, -H:]
    assert xbc.shape[1] == conv_dim
    window = torch.cat([expected_state["conv"][:, :, 1:], xbc[:, :, None]], dim=2)
    xbc = F.silu(torch.einsum("bdk,dk->bd", window, block.conv_weight) + block.conv_bias)
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
    expected = x + y @ block.out_proj_weight.T

    assert_close(out - x, expected - x, 1e-5, "mixer output")
    assert_close(state["conv"], window, 1e-6, "conv state")
    assert_close(state["ssm"], expected_state["ssm"], 1e-5, "ssm state")


def test_state_kept_in_block_dtype():
    block = Mamba2Block(Mamba2Spec.resolve(128, d_state=32), dtype=torch.bfloat16)
    state = block.allocate_state(2, max_context=8)
    x = block.example_sequence(2, 5)
    out = block.prefill(x, state)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    assert block.step(x[:, 0], state, pos=5).dtype == torch.bfloat16


def test_mamba_ssm_backend_refused_on_cpu():
    with pytest.raises(BackendUnavailable, match="mamba_ssm"):
        Mamba2Block(Mamba2Spec.resolve(64), backend="mamba_ssm", device="cpu")


def fast_backend_block(spec, backend, device, monkeypatch, seed):
    """The block on `device` with `backend`.  Without CUDA, mamba-ssm's launchers are run on CPU
    tensors under Triton's interpreter by making their `torch.cuda.device` guard a no-op (tests
    only: the block itself refuses this backend on CPU)."""
    if backend == "mamba_ssm" and device == "cpu":
        peer_module("selective_state_update")
        monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
        block = Mamba2Block(spec, backend="torch", device=device, seed=seed)
        block.backend = backend
        return block
    return Mamba2Block(spec, backend=backend, device=device, seed=seed)


@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_steps_match_torch(backend, device, monkeypatch):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba2_step")
        pytest.importorskip("latprof.kernels.gated_rms_norm")
    spec = Mamba2Spec.resolve(96, head_dim=32, d_state=48, n_groups=3)  # 6 heads, 3 groups
    block = fast_backend_block(spec, backend, device, monkeypatch, seed=11)
    reference = Mamba2Block(spec, backend="torch", device=device, seed=11)
    g = torch.Generator().manual_seed(11)
    batch = 2
    state = random_state(block, batch, g)
    ref_state = {k: v.clone() for k, v in state.items()}
    for t in range(2):
        x = block.example_input(batch, generator=g)
        assert_close(block.step(x, state, t) - x, reference.step(x, ref_state, t) - x, 1e-4, "out")
    assert_close(state["conv"], ref_state["conv"], 1e-6, "conv state")
    assert_close(state["ssm"], ref_state["ssm"], 1e-4, "ssm state")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_bf16_on_gpu(backend):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba2_step")
        pytest.importorskip("latprof.kernels.gated_rms_norm")
    else:
        peer_module("selective_state_update")
    spec = Mamba2Spec.resolve(1536, n_groups=2)  # 48 heads of 64, d_state 128
    block = Mamba2Block(spec, backend=backend, device="cuda", dtype=torch.bfloat16, seed=5)
    reference = Mamba2Block(spec, backend="torch", device="cuda", dtype=torch.bfloat16, seed=5)
    g = torch.Generator().manual_seed(5)
    state = random_state(block, 4, g)
    ref_state = {k: v.clone() for k, v in state.items()}
    for t in range(8):
        x = block.example_input(4, generator=g)
        assert_close(block.step(x, state, t) - x, reference.step(x, ref_state, t) - x, 3e-2, "out")
    assert_close(state["ssm"], ref_state["ssm"], 3e-2, "ssm state")
