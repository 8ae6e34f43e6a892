"""Checks shared by the operator tests (tests/test_ops_*.py) and the kernel tests: stepping a block
token by token, decode steps against prefill, random and cloned states, the fast backends (fla,
mamba-ssm, our Triton kernels) against the torch backend, tolerances by dtype.

Imported as `from op_checks import ...` (tests/ is on sys.path, see conftest.py, which also holds
the shared fixtures: no_grad, one_thread, nan_poison, poison_empty).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from latprof.errors import BackendUnavailable, InputError
from latprof.ops import State, backend_unavailable, mamba_ssm_compat

#: Triton kernels against their PyTorch references (tests/test_kernels_*.py)
KERNEL_TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
}
#: the linear-attention blocks (DeltaNet, Gated DeltaNet, GLA): steps, prefill, fla backend
LA_TOL = {
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
    torch.bfloat16: {"atol": 6e-2, "rtol": 6e-2},
}


# ---- any block -------------------------------------------------------------------------------
def param_count(block: torch.nn.Module) -> int:
    return sum(p.numel() for p in block.parameters())


def run_steps(
    block, x: torch.Tensor, state: State, embedding: torch.Tensor | None = None
) -> torch.Tensor:
    """x: (batch, seq, ...) -> the outputs of `seq` decode steps from position 0, stacked on
    dim 1: (batch, seq, ...).  `embedding` (batch, seq, width): the embedding output a block
    that reads it (shared attention) gets at each step."""
    if embedding is not None:
        steps = [block.step(x[:, t], state, t, embedding[:, t]) for t in range(x.shape[1])]
    else:
        steps = [block.step(x[:, t], state, t) for t in range(x.shape[1])]
    return torch.stack(steps, dim=1)


def stepper(block, batch: int, generator: torch.Generator):
    """`block.step` as f(x, state, pos): a block that reads the embedding output (shared
    attention) gets one fixed random embedding (batch, width) at every call."""
    if not block.spec.reads_embedding:
        return block.step
    e = block.example_input(batch, generator)
    return lambda x, state, pos: block.step(x, state, pos, e)


def clone_state(state: State) -> State:
    return {name: t.clone() for name, t in state.items()}


def random_state(block, batch: int, generator: torch.Generator, scale: float = 1.0) -> State:
    """A state as if some tokens had been decoded: every entry scale * N(0, 1), max_context 16."""
    state = block.allocate_state(batch, 16)
    for tensor in state.values():
        tensor.copy_(scale * torch.randn(tensor.shape, generator=generator))
    return state


def assert_states_close(actual: State, expected: State, tol: dict) -> None:
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **tol)


def assert_state_bytes_match_spec(state: State, spec, batch: int, max_context: int) -> None:
    """Each entry of `state` (float32) has the bytes the spec's cost model counts for it."""
    expected = spec.state_bytes(batch, max_context, "float32")
    for name, tensor in state.items():
        assert tensor.nbytes == getattr(expected, name), name


def check_unknown_backend_refused(cls, spec) -> None:
    with pytest.raises(InputError, match="unknown backend 'cuda_magic'"):
        cls(spec, backend="cuda_magic")


# ---- linear attention (DeltaNet, Gated DeltaNet, GLA) -----------------------------------------
def check_steps_from_zero_state_equal_prefill(block, batch: int, seq: int) -> None:
    """`seq` decode steps from a zero state give prefill's outputs and leave its state."""
    tol = LA_TOL[torch.float32]
    x = block.example_sequence(batch, seq, torch.Generator().manual_seed(batch))
    step_state = block.allocate_state(batch, seq)
    stepped = run_steps(block, x, step_state)
    prefill_state = block.allocate_state(batch, seq)
    prefilled = block.prefill(x, prefill_state)
    assert prefilled.shape == (batch, seq, block.spec.width)
    assert torch.isfinite(prefilled).all()
    torch.testing.assert_close(stepped, prefilled, **tol)
    assert_states_close(step_state, prefill_state, tol)
    assert step_state["recurrent"].abs().max() > 0  # the state did move


def check_steps_from_random_state_equal_prefill(block, batch: int, seq: int) -> None:
    """From the same random state (as after a prompt), `seq` decode steps give prefill's outputs
    and leave its state."""
    tol = LA_TOL[torch.float32]
    gen = torch.Generator().manual_seed(seq)
    step_state = random_state(block, batch, gen, scale=0.5)
    prefill_state = clone_state(step_state)
    x = block.example_sequence(batch, seq, gen)
    stepped = run_steps(block, x, step_state)
    prefilled = block.prefill(x, prefill_state)
    assert torch.isfinite(prefilled).all()
    torch.testing.assert_close(stepped, prefilled, **tol)
    assert_states_close(step_state, prefill_state, tol)


def check_prefill_continues_from_state(block) -> None:
    """Prefill of 2 then 9 tokens equals prefill of the 11 at once, outputs and state."""
    tol = LA_TOL[torch.float32]
    x = block.example_sequence(3, 11, torch.Generator().manual_seed(5))
    whole_state, split_state = block.allocate_state(3, 11), block.allocate_state(3, 11)
    whole = block.prefill(x, whole_state)
    split = torch.cat(
        (block.prefill(x[:, :2], split_state), block.prefill(x[:, 2:], split_state)), 1
    )
    torch.testing.assert_close(split, whole, **tol)
    assert_states_close(split_state, whole_state, tol)


def check_bfloat16_keeps_state_dtype_and_tracks_prefill(block) -> None:
    """`block` in bfloat16: steps and state stay bfloat16, and the steps track prefill."""
    x = block.example_sequence(3, 7, torch.Generator().manual_seed(2))
    step_state, prefill_state = block.allocate_state(3, 7), block.allocate_state(3, 7)
    stepped = run_steps(block, x, step_state)
    prefilled = block.prefill(x, prefill_state)
    assert stepped.dtype == torch.bfloat16 and step_state["recurrent"].dtype == torch.bfloat16
    torch.testing.assert_close(stepped, prefilled, **LA_TOL[torch.bfloat16])


def check_fla_refused_without_interpreter(cls, spec, monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailable, match="fla"):
        cls(spec, backend="fla", device="cpu")


def fla_block_or_skip(cls, spec, device, seed: int):
    reason = backend_unavailable(spec.op, "fla", device)
    if reason:
        pytest.skip(f"fla backend cannot run here: {reason}")
    return cls(spec, backend="fla", device=device, seed=seed)


def check_fla_step_equals_torch_step(cls, spec, device, batch: int, steps: int) -> None:
    """`steps` decode steps of the fla backend from a random state equal the torch backend's."""
    fla = fla_block_or_skip(cls, spec, device, seed=7)
    ref = cls(spec, device=device, seed=7)
    gen = torch.Generator().manual_seed(batch)
    fla_state = random_state(fla, batch, gen, scale=0.5)
    ref_state = clone_state(fla_state)
    x = fla.example_sequence(batch, steps, gen)
    fla_out, ref_out = run_steps(fla, x, fla_state), run_steps(ref, x, ref_state)
    torch.testing.assert_close(fla_out, ref_out, **LA_TOL[torch.float32])
    assert_states_close(fla_state, ref_state, LA_TOL[torch.float32])


# ---- Mamba and Mamba2 ------------------------------------------------------------------------
def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """max |actual - expected| <= rel * max |expected| (both finite)."""
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    scale = expected.abs().max().item()
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= rel * scale + 1e-12, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def mamba_ssm_peer(stem: str = "selective_state_update"):
    """mamba-ssm's Triton file `stem`.py as a module (skips the test when it is missing)."""
    if mamba_ssm_compat.missing():
        pytest.skip(f"mamba-ssm's Triton files not found: {mamba_ssm_compat.missing()}")
    return mamba_ssm_compat.load(stem)


def check_ssm_init_ranges(block, dt_bias: torch.Tensor) -> None:
    """softplus(dt_bias) in [1e-3, 1e-1], -A in [1, 16], no zero conv weight."""
    dt = F.softplus(dt_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    a = block.A_log.exp()
    assert a.min() >= 1.0 and a.max() <= 16.0
    assert block.conv_weight.abs().min() > 0


def check_ssm_prefill_equals_steps(block, x: torch.Tensor) -> None:
    """x: (batch, seq, width).  Prefill into a NaN-filled state equals `seq` decode steps from
    zeros: outputs, conv and SSM state."""
    batch, seq, _ = x.shape
    stepped = block.allocate_state(batch, max_context=seq)
    outs = run_steps(block, x, stepped)

    prefilled = block.allocate_state(batch, max_context=seq)
    for value in prefilled.values():
        value.fill_(float("nan"))  # prefill must overwrite, never read, the state
    out = block.prefill(x, prefilled)

    assert out.shape == (batch, seq, block.spec.width)
    assert_rel_close(out - x, outs - x, 1e-5, "mixer output")
    assert_rel_close(prefilled["conv"], stepped["conv"], 1e-5, "conv state")
    assert_rel_close(prefilled["ssm"], stepped["ssm"], 1e-5, "ssm state")
    assert stepped["ssm"].abs().max() > 0


def composition_inputs(block, batch: int, seed: int) -> tuple[State, State, torch.Tensor]:
    """A random state, an untouched copy of it, and a random step input (batch, width)."""
    g = torch.Generator().manual_seed(seed)
    state = random_state(block, batch, g)
    return state, clone_state(state), block.example_input(batch, generator=g)


def conv_window_step(
    conv_state: torch.Tensor, new: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal depthwise conv step written out: conv_state (batch, dim, d_conv), new (batch, dim)
    -> the shifted window (batch, dim, d_conv) and silu(conv + bias) (batch, dim)."""
    window = torch.cat([conv_state[:, :, 1:], new[:, :, None]], dim=2)
    return window, F.silu(torch.einsum("bdk,dk->bd", window, weight) + bias)


def check_step_composition(
    block, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, state: State, window, ssm
) -> None:
    """The block's step `out` for input `x` against x + out_proj(y), the composition's mixer
    output y (batch, d_inner); its conv state against `window`, SSM state against `ssm`."""
    expected = x + y @ block.out_proj_weight.T
    assert_rel_close(out - x, expected - x, 1e-5, "mixer output")
    assert_rel_close(state["conv"], window, 1e-6, "conv state")
    assert_rel_close(state["ssm"], ssm, 1e-5, "ssm state")


def check_state_kept_in_block_dtype(block) -> None:
    """`block` in bfloat16: prefill, state and a step stay bfloat16 and finite."""
    state = block.allocate_state(2, max_context=8)
    x = block.example_sequence(2, 5)
    out = block.prefill(x, state)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    assert block.step(x[:, 0], state, pos=5).dtype == torch.bfloat16


def fast_backend_block(cls, spec, backend: str, device, monkeypatch, seed: int):
    """The block on `device` with `backend`.  Without CUDA, mamba-ssm's launchers are run on CPU
    tensors under Triton's interpreter by making their `torch.cuda.device` guard a no-op (tests
    only: the block itself refuses this backend on CPU)."""
    if backend == "mamba_ssm" and device == "cpu":
        mamba_ssm_peer()
        monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
        block = cls(spec, backend="torch", device=device, seed=seed)
        block.backend = backend
        return block
    return cls(spec, backend=backend, device=device, seed=seed)


def check_fast_backend_steps_match_torch(
    cls, spec, backend: str, device, monkeypatch, batch: int, steps: int
) -> None:
    """`steps` decode steps of `backend` from a random state equal the torch backend's."""
    block = fast_backend_block(cls, spec, backend, device, monkeypatch, seed=11)
    reference = cls(spec, backend="torch", device=device, seed=11)
    g = torch.Generator().manual_seed(11)
    state = random_state(block, batch, g)
    ref_state = clone_state(state)
    for t in range(steps):
        x = block.example_input(batch, generator=g)
        assert_rel_close(
            block.step(x, state, t) - x, reference.step(x, ref_state, t) - x, 1e-4, "out"
        )
    assert_rel_close(state["conv"], ref_state["conv"], 1e-6, "conv state")
    assert_rel_close(state["ssm"], ref_state["ssm"], 1e-4, "ssm state")


def check_fast_backend_bf16_on_gpu(cls, spec, backend: str) -> None:
    """8 bfloat16 decode steps of `backend` on CUDA from a random state track the torch backend."""
    block = cls(spec, backend=backend, device="cuda", dtype=torch.bfloat16, seed=5)
    reference = cls(spec, backend="torch", device="cuda", dtype=torch.bfloat16, seed=5)
    g = torch.Generator().manual_seed(5)
    state = random_state(block, 4, g)
    ref_state = clone_state(state)
    for t in range(8):
        x = block.example_input(4, generator=g)
        assert_rel_close(
            block.step(x, state, t) - x, reference.step(x, ref_state, t) - x, 3e-2, "out"
        )
    assert_rel_close(state["ssm"], ref_state["ssm"], 3e-2, "ssm state")
