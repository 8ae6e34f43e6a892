"""Attention block: decode steps against prefill, backends against the torch reference, caches,
RoPE, parameter count, backend errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from op_checks import clone_state, param_count, run_steps
from torch.utils._python_dispatch import TorchDispatchMode

from latprof.errors import BackendUnavailable, InputError
from latprof.ops.attention import AttentionBlock, apply_rope, gqa_decode_ref, rope_tables
from latprof.registry import build_spec

# (width, heads, kv_heads, head_dim, qk_norm): GQA groups 1, 4, 8 and 5; width 320 with 5 heads
SHAPES = [
    (64, 4, 4, 16, False),
    (128, 8, 2, 16, True),
    (128, 8, 1, 16, False),
    (320, 5, 1, 64, True),
]
ATOL = 1e-4  # float32
CPU_BACKENDS = ["torch", "sdpa"]


def spec_of(shape):
    width, heads, kv_heads, head_dim, qk_norm = shape
    return build_spec(
        "attention", width, heads=heads, kv_heads=kv_heads, head_dim=head_dim, qk_norm=qk_norm
    )


def poisoned_state(block, batch, max_context):
    """A fresh state whose caches hold NaN: a read of a position not yet written shows."""
    state = block.allocate_state(batch, max_context)
    state["k"].fill_(float("nan"))
    state["v"].fill_(float("nan"))
    return state


def triton_kernel_or_skip():
    pytest.importorskip("triton")
    pytest.importorskip("latprof.kernels.decode_attention")


def run_steps_against_prefill(block, batch, seq, seed):
    gen = torch.Generator().manual_seed(seed)
    x = block.example_sequence(batch, seq, gen)  # (batch, seq, width)
    max_context = seq + 5
    ref_state = poisoned_state(block, batch, max_context)
    ref = block.prefill(x, ref_state)
    state = poisoned_state(block, batch, max_context)
    outs = run_steps(block, x, state)
    assert outs.shape == x.shape == ref.shape
    assert torch.isfinite(outs).all()
    torch.testing.assert_close(outs, ref, atol=ATOL, rtol=1e-4)
    for name in ("k", "v"):
        torch.testing.assert_close(
            state[name][:, :seq], ref_state[name][:, :seq], atol=ATOL, rtol=0
        )
        assert state[name][:, seq:].isnan().all(), f"{name} written past position {seq - 1}"


@pytest.mark.parametrize("batch,seq", [(1, 1), (3, 1), (1, 7), (3, 7), (3, 63)])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_steps_match_prefill(backend, shape, batch, seq):
    block = AttentionBlock(spec_of(shape), backend=backend, seed=1)
    run_steps_against_prefill(block, batch, seq, seed=seq + 10 * batch)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=str)
def test_triton_steps_match_prefill(shape):
    triton_kernel_or_skip()
    block = AttentionBlock(spec_of(shape), backend="triton", seed=2)
    run_steps_against_prefill(block, batch=3, seq=7, seed=3)


def mid_sequence_step(backend, shape, batch, prompt):
    """Output and caches of one step at position `prompt` with `backend`, and with torch."""
    spec = spec_of(shape)
    ref_block = AttentionBlock(spec, seed=4)
    block = AttentionBlock(spec, backend=backend, seed=99)
    block.load_state_dict(ref_block.state_dict())
    gen = torch.Generator().manual_seed(prompt + batch)
    state = poisoned_state(ref_block, batch, prompt + 9)
    ref_block.prefill(ref_block.example_sequence(batch, prompt, gen), state)
    x = ref_block.example_input(batch, gen)
    ref_state = clone_state(state)
    return ref_block.step(x, ref_state, prompt), ref_state, block.step(x, state, prompt), state


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", ["sdpa", "triton"])
def test_backend_matches_torch_mid_sequence(backend, shape, batch):
    if backend == "triton":
        triton_kernel_or_skip()
    ref, ref_state, out, state = mid_sequence_step(backend, shape, batch, prompt=37)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-4)
    for name in ("k", "v"):
        torch.testing.assert_close(state[name][:, :38], ref_state[name][:, :38], atol=ATOL, rtol=0)
        assert state[name][:, 38:].isnan().all()


def test_step_uses_the_whole_cache_and_only_it():
    """Changing a cached value changes the output; changing a slot past `pos` does not."""
    block = AttentionBlock(spec_of(SHAPES[1]), seed=5)
    state = block.allocate_state(2, 16)
    block.prefill(block.example_sequence(2, 9), state)
    x = block.example_input(2)
    base = block.step(x, clone_state(state), 9)
    early = clone_state(state)
    early["v"][:, 0] += 1.0
    assert not torch.allclose(block.step(x, early, 9), base, atol=1e-3)
    late = clone_state(state)
    late["v"][:, 10:] = float("nan")
    late["k"][:, 10:] = float("nan")
    torch.testing.assert_close(block.step(x, late, 9), base)


def test_rope_matches_complex_rotation():
    """rotate-half RoPE == multiplying (x_i + i x_{i+d/2}) by exp(i * pos * theta^(-2i/d))."""
    head_dim, positions = 16, 50
    cos, sin = rope_tables(positions, head_dim)
    assert cos.shape == sin.shape == (positions, head_dim // 2) and cos.dtype == torch.float32
    x = torch.randn(positions, 3, head_dim, generator=torch.Generator().manual_seed(0))
    got = apply_rope(x, cos[:, None], sin[:, None])
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    angle = torch.arange(positions, dtype=torch.float64)[:, None] * 10000.0 ** (-2 * i / head_dim)
    z = torch.complex(x[..., : head_dim // 2].double(), x[..., head_dim // 2 :].double())
    z = z * torch.polar(torch.ones_like(angle), angle)[:, None]
    want = torch.cat([z.real, z.imag], dim=-1).float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gqa_reference_matches_naive_loop():
    gen = torch.Generator().manual_seed(6)
    batch, ctx, heads, kv_heads, head_dim = 2, 11, 8, 2, 16
    q = torch.randn(batch, heads, head_dim, generator=gen)
    k = torch.randn(batch, ctx, kv_heads, head_dim, generator=gen)
    v = torch.randn(batch, ctx, kv_heads, head_dim, generator=gen)
    scale = 1 / math.sqrt(head_dim)
    got = gqa_decode_ref(q, k, v, scale)
    for b in range(batch):
        for h in range(heads):
            kv = h // (heads // kv_heads)
            p = torch.softmax(k[b, :, kv] @ q[b, h] * scale, dim=0)
            torch.testing.assert_close(got[b, h], p @ v[b, :, kv], atol=1e-5, rtol=1e-5)


def test_state_shapes_and_dtypes():
    spec = spec_of(SHAPES[1])
    state = AttentionBlock(spec).allocate_state(3, 40)
    assert state["k"].shape == state["v"].shape == (3, 40, spec.kv_heads, spec.head_dim)
    assert state["seqlens"].shape == (3,) and state["seqlens"].dtype == torch.int32
    assert state["cos"].shape == state["sin"].shape == (40, spec.head_dim // 2)
    assert state["cos"].dtype == torch.float32


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_param_count_matches_spec(shape):
    spec = spec_of(shape)
    block = AttentionBlock(spec)
    assert param_count(block) == spec.param_count()


def test_default_spec_param_count():
    spec = build_spec("attention", 256)
    block = AttentionBlock(spec)
    assert param_count(block) == spec.param_count()


def test_bad_backend_is_input_error():
    with pytest.raises(InputError, match="valid for attention"):
        AttentionBlock(spec_of(SHAPES[0]), backend="flash")


def test_flash_attn_on_cpu_says_why():
    with pytest.raises(BackendUnavailable, match="CUDA"):
        AttentionBlock(spec_of(SHAPES[0]), backend="flash_attn", device="cpu")


def test_odd_head_dim_is_input_error():
    with pytest.raises(InputError, match="even head_dim"):
        AttentionBlock(build_spec("attention", 63, heads=3, kv_heads=1, head_dim=21))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["sdpa", "triton", "flash_attn"])
def test_backends_bf16_on_gpu(backend):
    """On a GPU, each fast backend agrees with the torch reference in bfloat16."""
    if backend == "triton":
        triton_kernel_or_skip()
    if backend == "flash_attn":
        pytest.importorskip("flash_attn")
    spec = build_spec("attention", 512, heads=8, kv_heads=2, head_dim=64, qk_norm=True)
    kw = {"device": "cuda", "dtype": torch.bfloat16}
    ref_block = AttentionBlock(spec, **kw, seed=7)
    block = AttentionBlock(spec, backend=backend, **kw)
    block.load_state_dict(ref_block.state_dict())
    state = block.allocate_state(4, 300)
    ref_block.prefill(ref_block.example_sequence(4, 200), state)
    ref_state = clone_state(state)
    x = ref_block.example_input(4)
    out = block.step(x, state, 200)
    ref = ref_block.step(x, ref_state, 200)
    torch.testing.assert_close(out, ref, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(state["k"][:, :201], ref_state["k"][:, :201], atol=3e-2, rtol=3e-2)


class _NewTensors(TorchDispatchMode):
    """Records the size of every tensor an aten op allocates (outputs that are not views)."""

    def __init__(self):
        super().__init__()
        self.allocated = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in inputs:
                self.allocated.append((str(func), o.numel()))
        return out


@pytest.mark.parametrize("batch,kv_heads", [(1, 4), (3, 1), (3, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_torch_reference_reads_the_cache_in_place(batch, kv_heads, masked):
    """No op of the "torch" attention step allocates a tensor the size of K or V (matmul over a
    permuted cache view with batch > 1 and kv_heads > 1 used to copy both)."""
    from latprof.ops.attention import gqa_decode_masked

    ctx, head_dim, heads = 64, 16, 4 * kv_heads
    gen = torch.Generator().manual_seed(0)
    k, v = (torch.randn(batch, ctx, kv_heads, head_dim, generator=gen) for _ in range(2))
    q = torch.randn(batch, heads, head_dim, generator=gen)
    pos = torch.full((batch,), ctx - 1, dtype=torch.int32)
    recorder = _NewTensors()
    with recorder:
        if masked:
            got = gqa_decode_masked(q, k, v, 0.25, pos, sdpa=False)
        else:
            got = gqa_decode_ref(q, k, v, 0.25)
    largest = max(n for _, n in recorder.allocated)
    assert largest < k.numel(), recorder.allocated
    expected = F.scaled_dot_product_attention(
        q.view(batch, kv_heads, 4, head_dim),
        k.transpose(1, 2),
        v.transpose(1, 2),
        scale=0.25,
    ).reshape(batch, heads, head_dim)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
