"""decode_attention (Triton) against decode_attention_ref, on CPU through Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

from latprof.kernels.decode_attention import (
    decode_attention,
    decode_attention_ref,
    default_num_splits,
)

MAX_CONTEXT = 1031  # not a multiple of the kernel's block of positions
TOL = {
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
}


def rope_tables(max_context, head_dim, device):
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(max_context, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos().to(device), angles.sin().to(device)  # (max_context, head_dim // 2) each


def make_inputs(batch, heads, kv_heads, head_dim, seqlens, dtype, device, seed, max_context):
    """Random q / k_new / v_new / caches; cache positions >= seqlens[b] hold NaN, so reading one
    (or forgetting to write position seqlens[b]) shows up as NaN."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype=dtype, device=device)

    k_cache = rand(batch, max_context, kv_heads, head_dim)
    v_cache = rand(batch, max_context, kv_heads, head_dim)
    for b, n in enumerate(seqlens):
        k_cache[b, n:] = float("nan")
        v_cache[b, n:] = float("nan")
    cos, sin = rope_tables(max_context, head_dim, device)
    return dict(
        q=rand(batch, heads, head_dim),
        k_new=rand(batch, kv_heads, head_dim),
        v_new=rand(batch, kv_heads, head_dim),
        k_cache=k_cache,
        v_cache=v_cache,
        cache_seqlens=torch.tensor(seqlens, dtype=torch.int32, device=device),
        cos=cos,
        sin=sin,
    )


def check_against_ref(inputs, dtype, **kwargs):
    mine = {k: v.clone() for k, v in inputs.items()}
    ref = {k: v.clone() for k, v in inputs.items()}
    out = decode_attention(**mine, **kwargs)
    expected = decode_attention_ref(**ref, **kwargs)
    assert out.dtype == dtype and out.shape == expected.shape
    assert not out.isnan().any(), "some output elements were never written"
    torch.testing.assert_close(out, expected, **TOL[dtype])
    for name in ("k_cache", "v_cache"):
        torch.testing.assert_close(mine[name], ref[name], equal_nan=True, **TOL[dtype])
    for name in ("q", "k_new", "v_new", "cache_seqlens", "cos", "sin"):
        assert torch.equal(mine[name], inputs[name]), f"{name} was modified"
    return mine


# (batch, heads, kv_heads, head_dim, cache_seqlens per row, num_splits)
CASES = [
    (1, 1, 1, 64, [0], 1),  # first token, plain multi-head
    (1, 4, 1, 128, [1], 1),  # GQA group 4
    (1, 8, 1, 64, [63], 4),  # splits beyond the sequence write neutral partials
    (1, 8, 2, 128, [1000], 3),  # uneven split count
    (3, 4, 1, 64, [1000, 0, 63], 1),  # different lengths per row, no split
    (3, 8, 1, 128, [63, 1000, 1], 4),  # group 8, split
    (3, 2, 2, 128, [0, 1, 1000], 2),  # group 1, split
    (3, 16, 2, 64, [1, 63, 1000], None),  # default split heuristic
]


@pytest.mark.parametrize("batch,heads,kv_heads,head_dim,seqlens,num_splits", CASES)
def test_matches_reference_float32(
    device, poison_empty, batch, heads, kv_heads, head_dim, seqlens, num_splits
):
    inputs = make_inputs(
        batch, heads, kv_heads, head_dim, seqlens, torch.float32, device, 1, MAX_CONTEXT
    )
    check_against_ref(inputs, torch.float32, num_splits=num_splits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_matches_reference_16bit(device, poison_empty, dtype, num_splits):
    inputs = make_inputs(3, 8, 2, 64, [1000, 0, 63], dtype, device, 2, MAX_CONTEXT)
    check_against_ref(inputs, dtype, num_splits=num_splits)


# the launch configurations beyond BLOCK_N 64 (kernels/decode_attention.py `_LAUNCH_CONFIGS`):
# float32 head_dim 192 / 256 loop over 32 positions, float32 512 over 16, 16-bit 512 over 64 with
# 8 warps; awkward lengths (not multiples of the block, one row at the last cache slot)
LARGE_HEAD_CASES = [
    (torch.float32, 192, 97, [96, 0, 33], 3),
    (torch.float32, 256, 75, [74, 31, 1], 2),
    (torch.float32, 512, 37, [17, 36], 2),
    (torch.bfloat16, 512, 70, [69, 5], 1),
    (torch.float16, 256, 70, [3, 66], 2),
]


@pytest.mark.parametrize("dtype,head_dim,max_context,seqlens,num_splits", LARGE_HEAD_CASES)
def test_matches_reference_large_head_dims(
    device, poison_empty, dtype, head_dim, max_context, seqlens, num_splits
):
    from latprof.kernels.decode_attention import launch_config

    assert launch_config(dtype, head_dim)["BLOCK_N"] <= 64
    inputs = make_inputs(
        len(seqlens), 6, 2, head_dim, seqlens, dtype, device, 7, max_context
    )  # group 3: not a power of two
    check_against_ref(inputs, dtype, num_splits=num_splits)


def test_head_dim_beyond_the_compiled_configs_is_refused(device):
    inputs = make_inputs(1, 2, 1, 514, [0], torch.float32, device, 8, 4)
    with pytest.raises(ValueError, match="head_dim must be <= 512"):
        decode_attention(**inputs)


def test_custom_scale(device, poison_empty):
    inputs = make_inputs(1, 4, 1, 64, [63], torch.float32, device, 3, 128)
    check_against_ref(inputs, torch.float32, scale=0.3, num_splits=2)


def test_consecutive_steps_build_the_cache(device, poison_empty):
    """Three decode steps from an empty cache, lengths advancing per row as in generation."""
    batch, heads, kv_heads, head_dim, max_context = 2, 4, 2, 64, 70
    state = make_inputs(
        batch, heads, kv_heads, head_dim, [0, 60], torch.float32, device, 4, max_context
    )
    ref_k, ref_v = state["k_cache"].clone(), state["v_cache"].clone()
    gen = torch.Generator().manual_seed(5)
    for step in range(3):
        lengths = torch.tensor([step, 60 + step], dtype=torch.int32, device=device)
        q, k, v = (
            torch.randn(batch, h, head_dim, generator=gen).to(device)
            for h in (heads, kv_heads, kv_heads)
        )
        rest = dict(cache_seqlens=lengths, cos=state["cos"], sin=state["sin"], num_splits=2)
        out = decode_attention(q, k, v, state["k_cache"], state["v_cache"], **rest)
        expected = decode_attention_ref(q, k, v, ref_k, ref_v, **rest)
        torch.testing.assert_close(out, expected, **TOL[torch.float32])
    torch.testing.assert_close(state["k_cache"], ref_k, equal_nan=True)
    torch.testing.assert_close(state["v_cache"], ref_v, equal_nan=True)
    assert not state["k_cache"][:, :3].isnan().any() and not state["k_cache"][1, :63].isnan().any()


def test_default_num_splits():
    # long cache, few programs: split; a full GPU or a short cache: no split
    assert default_num_splits(batch=1, kv_heads=4, max_context=32768, sm_count=132) > 8
    assert default_num_splits(batch=64, kv_heads=4, max_context=32768, sm_count=132) == 1
    assert default_num_splits(batch=1, kv_heads=4, max_context=256, sm_count=132) == 1
    assert default_num_splits(1, 4, 8192, 132) <= 8192 // 512
    small_batch = default_num_splits(1, 4, 32768, 132)
    assert default_num_splits(8, 4, 32768, 132) <= small_batch


def _mutations():
    """(description, function that breaks a valid set of arguments)."""

    def setter(name, make):
        def mutate(args):
            args[name] = make(args[name])

        return mutate

    return [
        ("q 2-d", setter("q", lambda t: t[0])),
        ("q int", setter("q", lambda t: t.to(torch.int32))),
        ("k_new heads", setter("k_new", lambda t: t[:, :1])),
        ("v_new dtype", setter("v_new", lambda t: t.double())),
        ("k_cache dtype", setter("k_cache", lambda t: t.half())),
        ("v_cache shape", setter("v_cache", lambda t: t[:, :-1])),
        ("cache head_dim", setter("k_cache", lambda t: t[..., :32])),
        ("seqlens int64", setter("cache_seqlens", lambda t: t.long())),
        ("seqlens shape", setter("cache_seqlens", lambda t: t[:1])),
        ("cos shape", setter("cos", lambda t: t[:, :-1])),
        ("sin dtype", setter("sin", lambda t: t.half())),
        ("q last dim strided", setter("q", lambda t: t.repeat_interleave(2, -1)[..., ::2])),
    ]


@pytest.mark.parametrize("what,mutate", _mutations(), ids=[m[0] for m in _mutations()])
def test_rejects_bad_input(what, mutate):
    args = make_inputs(2, 4, 2, 64, [3, 5], torch.float32, "cpu", 6, 16)
    mutate(args)
    with pytest.raises(ValueError):
        decode_attention(**args)


@pytest.mark.parametrize("bad", [dict(num_splits=0), dict(num_splits=2.0), dict(scale=-1.0)])
def test_rejects_bad_options(bad):
    args = make_inputs(2, 4, 2, 64, [3, 5], torch.float32, "cpu", 7, 16)
    with pytest.raises(ValueError):
        decode_attention(**args, **bad)


def test_rejects_heads_not_multiple_of_kv_heads():
    args = make_inputs(2, 3, 2, 64, [3, 5], torch.float32, "cpu", 8, 16)
    with pytest.raises(ValueError, match="multiple of"):
        decode_attention(**args)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,heads,kv_heads,head_dim", [(1, 16, 4, 128), (8, 24, 6, 64)])
@pytest.mark.parametrize("num_splits", [None, 1, 16])
def test_bf16_on_gpu(batch, heads, kv_heads, head_dim, num_splits):
    seqlens = [(4093 * (b + 1)) % 8000 for b in range(batch)]
    inputs = make_inputs(batch, heads, kv_heads, head_dim, seqlens, torch.bfloat16, "cuda", 9, 8192)
    check_against_ref(inputs, torch.bfloat16, num_splits=num_splits)


def test_cache_offsets_past_two_to_the_31(device):
    """A cache whose position stride puts position 2 beyond 2**31 elements (a view over 4 GiB of
    untouched virtual memory per cache): the new token is written there and attended to, which
    needs int64 offsets (int32 ones wrap)."""
    stride = 2**30 + 64  # elements between cached positions
    span = 2 * stride + 64
    gen = torch.Generator().manual_seed(11)
    caches = []
    for _ in range(2):
        base = torch.empty(span, dtype=torch.float16, device=device)  # pages never touched
        view = base.as_strided((1, 3, 1, 64), (span, stride, 64, 1))
        view[:, :2] = torch.randn(1, 2, 1, 64, generator=gen).to(device, torch.float16)
        caches.append(view)
    k_cache, v_cache = caches
    assert k_cache.stride(1) * 2 >= 2**31
    cos, sin = rope_tables(3, 64, device)
    q, k_new, v_new = (
        torch.randn(1, h, 64, generator=gen).to(device, torch.float16) for h in (2, 1, 1)
    )
    seqlens = torch.tensor([2], dtype=torch.int32, device=device)
    out = decode_attention(q, k_new, v_new, k_cache, v_cache, seqlens, cos, sin, num_splits=1)
    got_k, got_v = k_cache[:, 2].clone(), v_cache[:, 2].clone()
    ref_k, ref_v = (torch.zeros(1, 3, 1, 64, dtype=torch.float16, device=device) for _ in range(2))
    ref_k[:, :2], ref_v[:, :2] = k_cache[:, :2], v_cache[:, :2]
    expected = decode_attention_ref(q, k_new, v_new, ref_k, ref_v, seqlens, cos, sin)
    torch.testing.assert_close(out, expected, **TOL[torch.float16])
    torch.testing.assert_close(got_k, ref_k[:, 2], **TOL[torch.float16])
    torch.testing.assert_close(got_v, ref_v[:, 2], **TOL[torch.float16])
