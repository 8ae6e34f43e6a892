"""GLA block: decode steps against prefill, the torch GLA recurrence against fla-core's
independent naive recurrence, the fla backend against the torch backend (under Triton's
interpreter on CPU), parameter counts, backend errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latprof.errors import BackendUnavailable, InputError
from latprof.ops import build_block
from latprof.ops.gla import GATE_LOGIT_NORMALIZER, GLABlock
from latprof.ops.linear_attention import gla_recurrence
from latprof.specs import build_spec

TOL = {
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
    torch.bfloat16: {"atol": 6e-2, "rtol": 6e-2},
}
SMALL = {"heads": 2, "head_dim": 16}  # width 32: fast under the interpreter
AWKWARD = {"heads": 5, "head_dim": 64}  # width 320


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread is faster than several fighting over a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def nan_poison():
    """Fill every torch.empty / new_empty with NaN, so an output a kernel forgets to write fails."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def spec_of(width: int, **kw):
    return build_spec("gla", width, **kw)


def run_steps(block, x: torch.Tensor, state) -> torch.Tensor:
    """x: (batch, seq, width) -> (batch, seq, width), one decode step per token."""
    return torch.stack([block.step(x[:, t], state, t) for t in range(x.shape[1])], dim=1)


def random_state(block, batch: int, generator: torch.Generator):
    """A state as if some tokens had been decoded."""
    state = block.allocate_state(batch, 16)
    for tensor in state.values():
        tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))
    return state


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
    torch.testing.assert_close(o, o_ref, **TOL[torch.float32])
    torch.testing.assert_close(ht, ht_ref, **TOL[torch.float32])


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
    assert sum(p.numel() for p in block.parameters()) == spec.param_count()


@pytest.mark.parametrize("batch", [1, 3])
def test_state_shapes_match_spec_bytes(batch):
    spec = spec_of(320, **AWKWARD)
    state = GLABlock(spec).allocate_state(batch, 128)
    assert set(state) == {"recurrent"}
    assert state["recurrent"].shape == (batch, 5, 64, 64)
    assert state["recurrent"].nbytes == spec.state_bytes(batch, 128, "float32").recurrent


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seq", [1, 7, 63])
@pytest.mark.parametrize(("width", "kw"), [(32, SMALL), (320, AWKWARD)])
def test_steps_from_zero_state_equal_prefill(width, kw, seq, batch):
    block = GLABlock(spec_of(width, **kw), seed=seq)
    x = block.example_sequence(batch, seq, torch.Generator().manual_seed(batch))
    step_state = block.allocate_state(batch, seq)
    stepped = run_steps(block, x, step_state)
    prefill_state = block.allocate_state(batch, seq)
    prefilled = block.prefill(x, prefill_state)
    assert prefilled.shape == (batch, seq, width)
    assert torch.isfinite(prefilled).all()
    torch.testing.assert_close(stepped, prefilled, **TOL[torch.float32])
    torch.testing.assert_close(
        step_state["recurrent"], prefill_state["recurrent"], **TOL[torch.float32]
    )
    assert step_state["recurrent"].abs().max() > 0  # the state did move


def test_prefill_continues_from_state():
    block = GLABlock(spec_of(32, **SMALL))
    x = block.example_sequence(3, 11, torch.Generator().manual_seed(5))
    whole_state, split_state = block.allocate_state(3, 11), block.allocate_state(3, 11)
    whole = block.prefill(x, whole_state)
    split = torch.cat(
        (block.prefill(x[:, :2], split_state), block.prefill(x[:, 2:], split_state)), 1
    )
    torch.testing.assert_close(split, whole, **TOL[torch.float32])
    torch.testing.assert_close(
        split_state["recurrent"], whole_state["recurrent"], **TOL[torch.float32]
    )


def test_bfloat16_keeps_state_dtype_and_tracks_prefill():
    block = GLABlock(spec_of(32, **SMALL), dtype=torch.bfloat16)
    x = block.example_sequence(3, 7, torch.Generator().manual_seed(2))
    step_state, prefill_state = block.allocate_state(3, 7), block.allocate_state(3, 7)
    stepped = run_steps(block, x, step_state)
    prefilled = block.prefill(x, prefill_state)
    assert stepped.dtype == torch.bfloat16 and step_state["recurrent"].dtype == torch.bfloat16
    torch.testing.assert_close(stepped, prefilled, **TOL[torch.bfloat16])


def test_unknown_backend_is_an_input_error():
    with pytest.raises(InputError, match="unknown backend 'cuda_magic'"):
        GLABlock(spec_of(32, **SMALL), backend="cuda_magic")


def test_fla_on_cpu_without_interpreter_is_unavailable(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailable, match="fla"):
        GLABlock(spec_of(32, **SMALL), backend="fla", device="cpu")


def fla_block_or_skip(spec, device, seed):
    reason = GLABlock.backend_unavailable("fla", torch.device(device))
    if reason:
        pytest.skip(f"fla backend cannot run here: {reason}")
    return GLABlock(spec, backend="fla", device=device, seed=seed)


@pytest.mark.parametrize(
    ("width", "kw", "batch", "steps"),
    [(32, SMALL, 1, 3), (32, SMALL, 3, 3), (320, AWKWARD, 3, 2)],
)
def test_fla_step_equals_torch_step(device, nan_poison, width, kw, batch, steps):
    spec = spec_of(width, **kw)
    fla = fla_block_or_skip(spec, device, seed=7)
    ref = GLABlock(spec, device=device, seed=7)
    gen = torch.Generator().manual_seed(batch)
    fla_state = random_state(fla, batch, gen)
    ref_state = {name: t.clone() for name, t in fla_state.items()}
    x = fla.example_sequence(batch, steps, gen)
    fla_out, ref_out = run_steps(fla, x, fla_state), run_steps(ref, x, ref_state)
    torch.testing.assert_close(fla_out, ref_out, **TOL[torch.float32])
    torch.testing.assert_close(fla_state["recurrent"], ref_state["recurrent"], **TOL[torch.float32])


def test_build_block_finds_gla():
    assert isinstance(build_block(spec_of(32, **SMALL)), GLABlock)
