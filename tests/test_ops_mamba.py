"""MambaBlock: decode steps against prefill, the SSM step against mamba-ssm's reference, the block's
wiring against an independent composition, backends (mamba-ssm's and our Triton kernels)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from latprof.errors import BackendUnavailable
from latprof.ops import mamba_ssm_compat
from latprof.ops.base import rms_norm
from latprof.ops.mamba import MambaBlock
from latprof.ops.ssm_reference import selective_state_update_ref
from latprof.specs.mamba import MambaSpec


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


def peer_module():
    if mamba_ssm_compat.missing():
        pytest.skip(
            f"mamba-ssm's selective_state_update.py not found: {mamba_ssm_compat.missing()}"
        )
    return mamba_ssm_compat.load("selective_state_update")


def random_state(block: MambaBlock, batch: int, generator: torch.Generator) -> dict:
    state = block.allocate_state(batch, max_context=16)
    for value in state.values():
        value.copy_(torch.randn(value.shape, generator=generator))
    return state


@pytest.mark.parametrize("width", [64, 100, 320])
def test_param_count_matches_spec(width):
    spec = MambaSpec.resolve(width)
    block = MambaBlock(spec)
    assert sum(p.numel() for p in block.parameters()) == spec.param_count()
    assert all(p.abs().max() > 0 for p in block.parameters())


def test_init_ranges():
    block = MambaBlock(MambaSpec.resolve(128), seed=3)
    dt = F.softplus(block.dt_proj_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    a = block.A_log.exp()
    assert a.min() >= 1.0 and a.max() <= 16.0
    assert block.conv_weight.abs().min() > 0


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
def test_prefill_equals_decode_steps(batch, seq):
    spec = MambaSpec.resolve(100, d_state=16, d_conv=4)  # d_inner 200, dt_rank 7
    block = MambaBlock(spec, seed=seq)
    g = torch.Generator().manual_seed(100 + seq)
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


@pytest.mark.parametrize("batch,dim,d_state", [(1, 64, 16), (3, 200, 16), (2, 96, 7)])
def test_selective_state_update_matches_mamba_ssm_ref(batch, dim, d_state):
    peer = peer_module().selective_state_update_ref
    g = torch.Generator().manual_seed(dim)
    state = torch.randn(batch, dim, d_state, generator=g)
    x, dt, z = (torch.randn(batch, dim, generator=g) for _ in range(3))
    A = -torch.rand(dim, d_state, generator=g) * 15 - 1
    B, C = (torch.randn(batch, d_state, generator=g) for _ in range(2))
    D, dt_bias = torch.randn(dim, generator=g), torch.randn(dim, generator=g) - 3

    ours_state, peer_state = state.clone(), state.clone()
    ours = selective_state_update_ref(ours_state, x, dt, A, B, C, D, z, dt_bias)
    expected = peer(peer_state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
    assert_close(ours, expected, 1e-5, "output")
    assert_close(ours_state, peer_state, 1e-5, "state")
    assert not torch.equal(ours_state, state)


def test_step_matches_independent_composition():
    """The block's step, rebuilt from its parameters with mamba-ssm's reference for the SSM."""
    peer = peer_module().selective_state_update_ref
    spec = MambaSpec.resolve(96, d_state=16, d_conv=4, dt_rank=5)
    block = MambaBlock(spec, seed=7)
    g = torch.Generator().manual_seed(7)
    batch = 3
    state = random_state(block, batch, g)
    expected_state = {k: v.clone() for k, v in state.items()}
    x = block.example_input(batch, generator=g)

    out = block.step(x, state, pos=5)

    d_inner, r, n = spec.d_inner, spec.dt_rank, spec.d_state
    xz = rms_norm(x, block.norm_weight) @ block.in_proj_weight.T
    xs, z = xz[:, :d_inner], xz[:, d_inner:]
    window = torch.cat([expected_state["conv"][:, :, 1:], xs[:, :, None]], dim=2)
    xs = F.silu(torch.einsum("bdk,dk->bd", window, block.conv_weight) + block.conv_bias)
    x_dbl = xs @ block.x_proj_weight.T
    dt = x_dbl[:, :r] @ block.dt_proj_weight.T + block.dt_proj_bias
    B, C = x_dbl[:, r : r + n], x_dbl[:, r + n :]
    A = -block.A_log.exp()
    y = peer(expected_state["ssm"], xs, dt, A, B, C, D=block.D, z=z, dt_softplus=True)
    expected = x + y @ block.out_proj_weight.T

    assert_close(out - x, expected - x, 1e-5, "mixer output")
    assert_close(state["conv"], window, 1e-6, "conv state")
    assert_close(state["ssm"], expected_state["ssm"], 1e-5, "ssm state")


def test_state_kept_in_block_dtype():
    block = MambaBlock(MambaSpec.resolve(64), dtype=torch.bfloat16)
    state = block.allocate_state(2, max_context=8)
    x = block.example_sequence(2, 5)
    out = block.prefill(x, state)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    assert block.step(x[:, 0], state, pos=5).dtype == torch.bfloat16


def test_mamba_ssm_backend_refused_on_cpu():
    with pytest.raises(BackendUnavailable, match="mamba_ssm"):
        MambaBlock(MambaSpec.resolve(64), backend="mamba_ssm", device="cpu")
    assert mamba_ssm_compat.unavailable_on(torch.device("cpu"))


def fast_backend_block(spec, backend, device, monkeypatch, seed):
    """The block on `device` with `backend`.  Without CUDA, mamba-ssm's launcher is run on CPU
    tensors under Triton's interpreter by making its `torch.cuda.device` guard a no-op (tests
    only: the block itself refuses this backend on CPU)."""
    if backend == "mamba_ssm" and device == "cpu":
        peer_module()
        monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
        block = MambaBlock(spec, backend="torch", device=device, seed=seed)
        block.backend = backend
        return block
    return MambaBlock(spec, backend=backend, device=device, seed=seed)


@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_steps_match_torch(backend, device, monkeypatch):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba_step")
    spec = MambaSpec.resolve(80, d_state=16, d_conv=4)  # d_inner 160: not a power of two
    block = fast_backend_block(spec, backend, device, monkeypatch, seed=11)
    reference = MambaBlock(spec, backend="torch", device=device, seed=11)
    g = torch.Generator().manual_seed(11)
    batch = 3
    state = random_state(block, batch, g)
    ref_state = {k: v.clone() for k, v in state.items()}
    for t in range(3):
        x = block.example_input(batch, generator=g)
        assert_close(block.step(x, state, t) - x, reference.step(x, ref_state, t) - x, 1e-4, "out")
    assert_close(state["conv"], ref_state["conv"], 1e-6, "conv state")
    assert_close(state["ssm"], ref_state["ssm"], 1e-4, "ssm state")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backend_bf16_on_gpu(backend):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba_step")
    else:
        peer_module()
    spec = MambaSpec.resolve(1024)
    block = MambaBlock(spec, backend=backend, device="cuda", dtype=torch.bfloat16, seed=5)
    reference = MambaBlock(spec, backend="torch", device="cuda", dtype=torch.bfloat16, seed=5)
    g = torch.Generator().manual_seed(5)
    state = random_state(block, 4, g)
    ref_state = {k: v.clone() for k, v in state.items()}
    for t in range(8):
        x = block.example_input(4, generator=g)
        assert_close(block.step(x, state, t) - x, reference.step(x, ref_state, t) - x, 3e-2, "out")
    assert_close(state["ssm"], ref_state["ssm"], 3e-2, "ssm state")
