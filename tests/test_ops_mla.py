"""Multi-head Latent Attention: the weight-absorbed decode steps against the naive prefill (from an
empty cache and continuing after a prompt), int against device-tensor positions, sdpa against
torch, NaN past the valid positions, transformers' DeepseekV3Attention (rope, both of its rotary
layouts) and KimiLinearAttention (NoPE) as independent peers, the cost model against the block's
tensors and cache, bad shapes."""

from __future__ import annotations

import pytest
import torch
from op_checks import assert_rel_close, clone_state, param_count, run_steps
from torch.utils._python_dispatch import TorchDispatchMode

from latprof.errors import InputError
from latprof.ops.base import rms_norm
from latprof.ops.mla import MLABlock
from latprof.registry import build_spec, spec_from_key

pytestmark = pytest.mark.usefixtures("no_grad")

ATOL = 1e-4  # float32
BACKENDS = ["torch", "sdpa"]
# (width, heads, q_lora_rank, kv_lora_rank, qk_nope, qk_rope, v_head_dim, rope): every pairing
# of query compression and rope, awkward sizes (width 100, 5 heads, v != nope, rope dim 2)
SHAPES = [
    (72, 3, 0, 40, 12, 6, 10, True),
    (100, 5, 24, 36, 8, 4, 12, False),
    (96, 2, 40, 64, 16, 8, 16, True),
    (60, 1, 0, 20, 6, 2, 5, False),
]
FIELDS = (
    "heads",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "rope",
)


def spec_of(shape):
    width, *rest = shape
    return build_spec("mla", width, **dict(zip(FIELDS, rest, strict=True)))


def shape_id(shape) -> str:
    w, h, ql, kvl, nope, rope_dim, v, rope = shape
    return f"w{w}-h{h}-q{ql}-kv{kvl}-{nope}+{rope_dim}-v{v}-{'rope' if rope else 'nope'}"


def poisoned_state(block, batch, max_context):
    """A fresh state whose latent cache holds NaN: a read of a row not yet written shows."""
    state = block.allocate_state(batch, max_context)
    state["latent"].fill_(float("nan"))
    return state


def positions(kind: str, t: int, batch: int):
    """Position t as an int, a (batch,) int32 tensor, or a 0-d int32 tensor."""
    if kind == "int":
        return t
    if kind == "batch":
        return torch.full((batch,), t, dtype=torch.int32)
    return torch.tensor(t, dtype=torch.int32)


# ---- absorbed decode against the naive prefill --------------------------------------------------
@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (3, 7), (3, 13)])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_from_an_empty_cache_equal_prefill(backend, shape, batch, seq):
    block = MLABlock(spec_of(shape), backend=backend, seed=1)
    x = block.example_sequence(batch, seq, torch.Generator().manual_seed(seq + batch))
    ref_state = poisoned_state(block, batch, seq + 4)
    ref = block.prefill(x, ref_state)
    state = poisoned_state(block, batch, seq + 4)
    out = run_steps(block, x, state)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(
        state["latent"][:, :seq], ref_state["latent"][:, :seq], atol=ATOL, rtol=0
    )
    assert state["latent"][:, seq:].isnan().all(), "a step wrote past its position"
    assert ref_state["latent"][:, seq:].isnan().all(), "prefill wrote past the prompt"


@pytest.mark.parametrize("pos_kind", ["int", "batch", "scalar"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_after_a_prefill_equal_the_longer_prefill(backend, shape, pos_kind):
    """Prefill 6 tokens, then 5 steps (positions as int, (batch,) tensor or 0-d tensor), against
    a prefill of all 11; the cache past the last position is NaN throughout."""
    block = MLABlock(spec_of(shape), backend=backend, seed=2)
    batch, prompt, steps = 3, 6, 5
    x = block.example_sequence(batch, prompt + steps, torch.Generator().manual_seed(4))
    whole = block.prefill(x, block.allocate_state(batch, prompt + steps))
    state = poisoned_state(block, batch, prompt + steps + 3)
    block.prefill(x[:, :prompt], state)
    outs = [
        block.step(x[:, t], state, positions(pos_kind, t, batch))
        for t in range(prompt, prompt + steps)
    ]
    torch.testing.assert_close(torch.stack(outs, 1), whole[:, prompt:], atol=ATOL, rtol=1e-4)
    assert state["latent"][:, prompt + steps :].isnan().all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=shape_id)
def test_per_sequence_tensor_positions_equal_int_positions_of_each(backend, shape):
    """A (batch,) tensor of different positions gives each sequence the output an int step at
    its own position gives."""
    block = MLABlock(spec_of(shape), backend=backend, seed=3)
    gen = torch.Generator().manual_seed(5)
    state = block.allocate_state(3, 16)
    block.prefill(block.example_sequence(3, 12, gen), state)
    x = block.example_input(3, gen)
    pos = [4, 11, 7]
    mixed_state = clone_state(state)
    mixed = block.step(x, mixed_state, torch.tensor(pos, dtype=torch.int32))
    for b, p in enumerate(pos):
        one = {k: (v[b : b + 1].clone() if k == "latent" else v) for k, v in state.items()}
        alone = block.step(x[b : b + 1], one, p)
        torch.testing.assert_close(mixed[b : b + 1], alone, atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(mixed_state["latent"][b, p], one["latent"][0, p])


@pytest.mark.parametrize("pos_kind", ["int", "batch", "scalar"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_step_reads_the_valid_rows_and_only_them(backend, pos_kind):
    """Changing a cached row changes the output; NaN or huge values in rows past the position
    (never written, or stale) do not reach it."""
    block = MLABlock(spec_of(SHAPES[0]), backend=backend, seed=5)
    state = block.allocate_state(2, 16)
    block.prefill(block.example_sequence(2, 9), state)
    x = block.example_input(2)
    pos = positions(pos_kind, 9, 2)
    base = block.step(x, clone_state(state), pos)
    early = clone_state(state)
    early["latent"][:, 0] += 1.0
    assert not torch.allclose(block.step(x, early, pos), base, atol=1e-3)
    for junk in (float("nan"), 1e30):
        late = clone_state(state)
        late["latent"][:, 10:] = junk
        torch.testing.assert_close(block.step(x, late, pos), base)


@pytest.mark.parametrize("pos_kind", ["int", "batch"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_sdpa_step_equals_torch_step_mid_sequence(shape, pos_kind):
    spec = spec_of(shape)
    ref_block, block = MLABlock(spec, seed=6), MLABlock(spec, backend="sdpa", seed=6)
    gen = torch.Generator().manual_seed(7)
    state = block.allocate_state(3, 40)
    block.randomize_state(state, gen)  # a random cache, as after a 37-token prompt
    ref_state = clone_state(state)
    for t in range(37, 40):
        x = block.example_input(3, gen)
        out = block.step(x, state, positions(pos_kind, t, 3))
        ref = ref_block.step(x, ref_state, positions(pos_kind, t, 3))
        torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(state["latent"], ref_state["latent"], atol=ATOL, rtol=0)


def test_rope_rotates_from_position_one_on_and_nope_never():
    """Blocks with the same weights, rope on and off: position 0 rotates by angle 0, so the two
    agree there and differ after; c_kv is the same, k_rope only at row 0."""
    rope_shape, nope_shape = SHAPES[0], SHAPES[0][:-1] + (False,)
    rope, nope = MLABlock(spec_of(rope_shape), seed=8), MLABlock(spec_of(nope_shape), seed=8)
    x = rope.example_sequence(2, 6, torch.Generator().manual_seed(1))
    rope_state, nope_state = rope.allocate_state(2, 6), nope.allocate_state(2, 6)
    with_rope, without = rope.prefill(x, rope_state), nope.prefill(x, nope_state)
    assert "cos" not in nope_state
    torch.testing.assert_close(with_rope[:, 0], without[:, 0])
    assert not torch.allclose(with_rope[:, 1:], without[:, 1:], atol=1e-3)
    kv_lora_rank = rope.spec.kv_lora_rank
    torch.testing.assert_close(
        rope_state["latent"][..., :kv_lora_rank], nope_state["latent"][..., :kv_lora_rank]
    )
    torch.testing.assert_close(rope_state["latent"][:, 0], nope_state["latent"][:, 0])
    assert not torch.allclose(rope_state["latent"][:, 1:], nope_state["latent"][:, 1:])


# ---- transformers as an independent peer ----------------------------------------------------
def transformers_dims(spec) -> dict:
    return dict(
        hidden_size=spec.width,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        q_lora_rank=spec.q_lora_rank or None,
        kv_lora_rank=spec.kv_lora_rank,
        qk_nope_head_dim=spec.qk_nope_head_dim,
        qk_rope_head_dim=spec.qk_rope_head_dim,
        v_head_dim=spec.v_head_dim,
        attention_bias=False,
        num_hidden_layers=1,
    )


def copy_weights_into(peer, block, rope_rows: torch.Tensor | None = None) -> None:
    """latprof's weights into a transformers MLA module; `rope_rows` reorders the rope rows of
    the query (per head) and of kv_a_proj, where the peer lays them out differently."""
    s = block.spec

    def query(w):  # (heads * (nope + rope), in)
        if rope_rows is None:
            return w
        w = w.view(s.heads, s.qk_head_dim, -1).clone()
        w[:, s.qk_nope_head_dim :] = w[:, s.qk_nope_head_dim :][:, rope_rows]
        return w.flatten(0, 1)

    kv_a = block.kv_a_proj.clone()  # (kv_lora_rank + rope, width)
    if rope_rows is not None:
        kv_a[s.kv_lora_rank :] = kv_a[s.kv_lora_rank :][rope_rows]
    if s.q_lora_rank:
        peer.q_a_proj.weight.copy_(block.q_a_proj)
        peer.q_a_layernorm.weight.copy_(block.q_a_norm)
        peer.q_b_proj.weight.copy_(query(block.q_b_proj))
    else:
        peer.q_proj.weight.copy_(query(block.q_proj))
    peer.kv_a_proj_with_mqa.weight.copy_(kv_a)
    peer.kv_a_layernorm.weight.copy_(block.kv_a_norm)
    peer.kv_b_proj.weight.copy_(block.kv_b_proj)
    peer.o_proj.weight.copy_(block.o_proj)


def causal_mask(seq: int) -> torch.Tensor:
    return torch.full((seq, seq), float("-inf")).triu(1)[None, None]  # (1, 1, seq, seq)


def peer_inputs(block, batch=3, seq=9):
    x = block.example_sequence(batch, seq, torch.Generator().manual_seed(11))
    ours = block.prefill(x, block.allocate_state(batch, seq)) - x  # the mixer's output
    return x, rms_norm(x, block.norm), ours


@pytest.mark.parametrize("q_lora_rank", [0, 24])
def test_nope_mixer_matches_transformers_kimi_linear_attention(q_lora_rank):
    """KimiLinearAttention (MLA with NoPE: the rope-sized key part shared and unrotated), eager
    attention, latprof's weights copied in; parameters equal with the pre-norm added."""
    kimi = pytest.importorskip("transformers.models.kimi_linear.modeling_kimi_linear")
    from transformers import KimiLinearConfig

    spec = build_spec(
        "mla", 100, heads=5, q_lora_rank=q_lora_rank, kv_lora_rank=36, qk_nope_head_dim=8,
        qk_rope_head_dim=4, v_head_dim=12, rope=False,
    )  # fmt: skip
    config = KimiLinearConfig(**transformers_dims(spec))
    config._attn_implementation = "eager"
    peer = kimi.KimiLinearAttention(config, layer_idx=0)
    block = MLABlock(spec, seed=9)
    assert param_count(peer) + spec.width == spec.param_count() == param_count(block)
    copy_weights_into(peer, block)
    x, h, ours = peer_inputs(block)
    theirs, _ = peer(h, attention_mask=causal_mask(x.shape[1]))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    steps = run_steps(block, x, block.allocate_state(3, x.shape[1])) - x  # absorbed form too
    torch.testing.assert_close(steps, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("interleave", [False, True], ids=["rotate-half", "interleaved"])
@pytest.mark.parametrize("q_lora_rank", [0, 20])
def test_rope_mixer_matches_transformers_deepseek_v3_attention(q_lora_rank, interleave):
    """DeepseekV3Attention (default RoPE, theta 10000, over qk_rope_head_dim), eager attention.
    rope_interleave=False is latprof's rotate-half layout, weights copied as they are; with
    rope_interleave=True (DeepSeek's checkpoints) pairs are adjacent dimensions, and latprof's
    rope row j is the peer's row perm[j] (the even rows, then the odd ones)."""
    ds = pytest.importorskip("transformers.models.deepseek_v3.modeling_deepseek_v3")
    from transformers import DeepseekV3Config

    spec = build_spec(
        "mla", 72, heads=3, q_lora_rank=q_lora_rank, kv_lora_rank=40, qk_nope_head_dim=12,
        qk_rope_head_dim=6, v_head_dim=10, rope=True,
    )  # fmt: skip
    config = DeepseekV3Config(**transformers_dims(spec), rope_interleave=interleave)
    config._attn_implementation = "eager"
    assert config.rope_parameters == {"rope_theta": 10000.0, "rope_type": "default"}
    peer = ds.DeepseekV3Attention(config, layer_idx=0)
    block = MLABlock(spec, seed=10)
    assert param_count(peer) + spec.width == spec.param_count() == param_count(block)
    r = spec.qk_rope_head_dim
    perm = torch.cat((torch.arange(0, r, 2), torch.arange(1, r, 2)))
    copy_weights_into(peer, block, torch.argsort(perm) if interleave else None)
    x, h, ours = peer_inputs(block)
    seq = x.shape[1]
    rotary = ds.DeepseekV3RotaryEmbedding(config)(h, torch.arange(seq)[None].expand(3, -1))
    theirs, _ = peer(h, rotary, attention_mask=causal_mask(seq))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    if interleave:  # the layouts really differ: without the row permutation the outputs do too
        copy_weights_into(peer, block)
        assert not torch.allclose(peer(h, rotary, attention_mask=causal_mask(seq))[0], ours)


# ---- cost model --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_param_count_matches_the_block(shape):
    spec = spec_of(shape)
    assert param_count(MLABlock(spec)) == spec.param_count()


def test_defaults_are_deepseek_v2_lite_attention():
    spec = build_spec("mla", 2048)
    assert (spec.heads, spec.q_lora_rank, spec.kv_lora_rank) == (16, 0, 512)
    assert (spec.qk_nope_head_dim, spec.qk_rope_head_dim, spec.v_head_dim, spec.rope) == (
        128,
        64,
        128,
        True,
    )
    q_proj, kv_a, kv_b, o_proj = 2048 * 16 * 192, 2048 * 576 + 512, 512 * 16 * 256, 16 * 128 * 2048
    assert spec.param_count() == 2048 + q_proj + kv_a + kv_b + o_proj
    assert spec.state_bytes(1, 1, "bf16").kv_cache == 576 * 2  # per token and layer
    assert spec_from_key(spec.key) == spec
    assert spec.overrides() == {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_equal_the_allocated_cache(dtype):
    spec = spec_of(SHAPES[2])
    block = MLABlock(spec, dtype=dtype)
    state = block.allocate_state(3, 50)
    name = "float32" if dtype == torch.float32 else "bfloat16"
    assert state["latent"].dtype == dtype
    assert state["latent"].shape == (3, 50, spec.kv_lora_rank + spec.qk_rope_head_dim)
    assert state["latent"].nbytes == spec.state_bytes(3, 50, name).kv_cache
    assert spec.state_bytes(3, 50, name).recurrent == spec.state_bytes(3, 50, name).conv == 0
    assert state["cos"].shape == (50, spec.qk_rope_head_dim // 2)  # tables, not cache


def test_bytes_and_flops_per_step():
    spec = build_spec("mla", 2048)  # 16 heads, latent 512 + 64
    row = 576 * 2  # one latent row, bf16
    weights = spec.param_count() * 2
    assert spec.bytes_per_step(4, 1000, "bf16") == weights + 2 * 4 * 2048 * 2 + 4 * 1002 * row
    # per extra cached token: one more latent row read per sequence, never per-head keys
    assert spec.bytes_per_step(4, 1001, "bf16") - spec.bytes_per_step(4, 1000, "bf16") == 4 * row
    attention = 2 * 4 * 16 * 1001 * (2 * 512 + 64)
    assert spec.flops_per_step(4, 1000) == 2 * 4 * spec.param_count() + attention
    mha = build_spec("attention", 2048, heads=16, kv_heads=16, head_dim=128)
    assert (
        spec.state_bytes(1, 4096, "bf16").kv_cache * 7 < mha.state_bytes(1, 4096, "bf16").kv_cache
    )


class _NewTensors(TorchDispatchMode):
    """Records the size of every tensor an aten op allocates (outputs that are not views)."""

    def __init__(self):
        super().__init__()
        self.allocated: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in inputs:
                self.allocated.append((str(func), o.numel()))
        return out


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_step_reads_the_latent_cache_and_weights_in_place(backend, batch):
    """An int-position step never expands keys or values per head and never copies the latent
    cache or kv_b_proj (its absorbed halves are strided views); on a CPU sdpa takes the whole
    latent row as key and value into its fused kernel, no copy either."""
    spec = build_spec(
        "mla", 128, heads=4, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32,
    )  # fmt: skip
    block = MLABlock(spec, backend=backend)
    state = block.allocate_state(batch, 200)
    block.randomize_state(state, torch.Generator().manual_seed(0))
    x = block.example_input(batch)
    recorder = _NewTensors()
    with recorder:
        block.step(x, state, 150)
    largest = max(n for _, n in recorder.allocated)
    assert largest < state["latent"][:, :151].numel(), recorder.allocated
    assert largest < block.kv_b_proj.numel(), recorder.allocated
    assert largest < batch * 151 * spec.heads * spec.qk_nope_head_dim  # no expanded keys


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_tracks_float32(backend):
    """The block in bfloat16 (same weights, rounded) tracks float32: steps, prefill, cache."""
    spec = spec_of(SHAPES[2])
    ref = MLABlock(spec, seed=12)
    low = MLABlock(spec, backend=backend, dtype=torch.bfloat16, seed=12)
    x = ref.example_sequence(3, 9, torch.Generator().manual_seed(3))
    ref_state, state = ref.allocate_state(3, 9), low.allocate_state(3, 9)
    expected = ref.prefill(x, ref_state)
    stepped = run_steps(low, x.bfloat16(), state)
    assert stepped.dtype == state["latent"].dtype == torch.bfloat16
    assert_rel_close(stepped - x.bfloat16(), expected - x, 3e-2, "bf16 steps")
    assert_rel_close(low.prefill(x.bfloat16(), low.allocate_state(3, 9)) - x.bfloat16(),
                     expected - x, 3e-2, "bf16 prefill")  # fmt: skip
    assert_rel_close(state["latent"], ref_state["latent"], 3e-2, "bf16 latent cache")


# ---- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("width", "given", "field"),
    [
        (64, {}, "heads"),
        (256, {"heads": 0}, "heads"),
        (256, {"q_lora_rank": -1}, "q_lora_rank"),
        (256, {"q_lora_rank": True}, "q_lora_rank"),
        (256, {"kv_lora_rank": 0}, "kv_lora_rank"),
        (256, {"qk_nope_head_dim": 2.5}, "qk_nope_head_dim"),
        (256, {"qk_rope_head_dim": 5}, "qk_rope_head_dim"),
        (256, {"v_head_dim": -3}, "v_head_dim"),
        (256, {"rope": "yes"}, "rope"),
    ],
)
def test_impossible_shapes_are_input_errors_naming_the_field(width, given, field):
    with pytest.raises(InputError, match=rf"mla: .*{field}"):
        build_spec("mla", width, **given)


def test_odd_rope_dim_is_fine_without_rope():
    spec = build_spec("mla", 64, heads=2, qk_rope_head_dim=5, rope=False)
    block = MLABlock(spec)
    x = block.example_sequence(2, 3)
    ref = block.prefill(x, block.allocate_state(2, 3))
    torch.testing.assert_close(
        run_steps(block, x, block.allocate_state(2, 3)), ref, atol=ATOL, rtol=1e-4
    )
