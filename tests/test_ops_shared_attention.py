"""Shared attention block (Zamba2's hybrid layers): decode steps against prefill with the
embedding input, sdpa and device-tensor positions against the torch step, the cost model against
the block's tensors, weight tying, spec errors, and transformers' Zamba2AttentionDecoderLayer +
the hybrid layer's linear as an independent peer."""

from __future__ import annotations

import pytest
import torch
from op_checks import clone_state, param_count, run_steps

from latprof.errors import InputError
from latprof.ops.shared_attention import SHARED_PARAMS, SharedAttentionBlock
from latprof.registry import build_spec, spec_from_key

ATOL = 1e-4  # float32
# (width, heads, kv_heads, rope, adapter_rank, attention_adapters): head_dim = 2 width / heads:
# 24, 20, 12 and 50 (non-powers of two), GQA groups 1, 2, 3 and 4, adapters off / MLP / all
SHAPES = [
    (48, 4, 4, True, 8, True),
    (40, 4, 2, True, 0, False),
    (36, 6, 2, False, 5, True),
    (100, 4, 1, True, 7, False),
]


def spec_of(width, heads, kv_heads, rope, rank, attention_adapters, ffn_dim=None):
    return build_spec(
        "shared_attention",
        width,
        heads=heads,
        kv_heads=kv_heads,
        ffn_dim=ffn_dim or 3 * width + 4,
        adapter_rank=rank,
        attention_adapters=attention_adapters,
        rope=rope,
    )


def poisoned_state(block, batch, max_context):
    """A fresh state whose caches hold NaN: a read of a position not yet written shows."""
    state = block.allocate_state(batch, max_context)
    state["k"].fill_(float("nan"))
    state["v"].fill_(float("nan"))
    return state


def inputs(block, batch, seq, seed):
    """Hidden states and embedding outputs, each (batch, seq, width), independent draws."""
    gen = torch.Generator().manual_seed(seed)
    return block.example_sequence(batch, seq, gen), block.example_sequence(batch, seq, gen)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(("batch", "seq"), [(3, 7), (1, 1), (2, 5)])
def test_steps_equal_prefill_with_the_embedding_input(shape, batch, seq):
    block = SharedAttentionBlock(spec_of(*shape), seed=3)
    x, e = inputs(block, batch, seq, seed=seq)
    prefill_state = poisoned_state(block, batch, seq + 4)
    ref = block.prefill(x, prefill_state, e)
    step_state = poisoned_state(block, batch, seq + 4)
    outs = run_steps(block, x, step_state, e)
    assert outs.shape == ref.shape == (batch, seq, block.spec.width)
    assert torch.isfinite(outs).all()
    torch.testing.assert_close(outs, ref, atol=ATOL, rtol=1e-4)
    for name in ("k", "v"):  # the positions written, and only those
        torch.testing.assert_close(step_state[name][:, :seq], prefill_state[name][:, :seq])
        assert torch.isnan(step_state[name][:, seq:]).all()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sdpa_and_tensor_positions_equal_the_torch_step(shape):
    spec = spec_of(*shape)
    ref = SharedAttentionBlock(spec, seed=5)
    sdpa = SharedAttentionBlock(spec, backend="sdpa", seed=5)
    batch, prefix, steps = 3, 4, 3
    x, e = inputs(ref, batch, prefix + steps, seed=1)
    states = []
    for _ in range(3):
        state = ref.allocate_state(batch, prefix + steps)
        ref.prefill(x[:, :prefix], state, e[:, :prefix])
        states.append(state)
    by_torch, by_sdpa, by_tensor = states
    for t in range(prefix, prefix + steps):
        expected = ref.step(x[:, t], by_torch, t, e[:, t])
        torch.testing.assert_close(
            sdpa.step(x[:, t], by_sdpa, t, e[:, t]), expected, atol=ATOL, rtol=1e-4
        )
        pos = torch.full((batch,), t, dtype=torch.int32)
        torch.testing.assert_close(
            sdpa.step(x[:, t], by_tensor, pos, e[:, t]), expected, atol=ATOL, rtol=1e-4
        )
    torch.testing.assert_close(by_sdpa["k"], by_torch["k"])
    torch.testing.assert_close(by_tensor["v"], by_torch["v"])


def test_the_embedding_input_changes_the_output():
    block = SharedAttentionBlock(spec_of(*SHAPES[0]), seed=2)
    x, e = inputs(block, 2, 3, seed=4)
    a = block.prefill(x, block.allocate_state(2, 3), e)
    b = block.prefill(x, block.allocate_state(2, 3), e.flip(0))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_param_counts_and_state_bytes_match_the_block(shape):
    spec = spec_of(*shape)
    block = SharedAttentionBlock(spec)
    assert param_count(block) == spec.param_count()
    shared = sum(getattr(block, name).numel() for name in SHARED_PARAMS)
    assert shared == spec.shared_param_count()
    assert spec.use_param_count() == spec.param_count() - shared
    state = block.allocate_state(3, 50)
    assert state["k"].nbytes + state["v"].nbytes == spec.state_bytes(3, 50, "float32").kv_cache
    assert ("cos" in state) == spec.rope


def test_published_shape_counts():
    """Zamba2-1.2B's block: 109,058,048 shared weights, 9,699,328 per use (adapters on q, k, v
    and gate / up at rank 128, the linear), and a KV cache of 2 x 4096 channels per token."""
    spec = build_spec(
        "shared_attention",
        2048,
        heads=32,
        ffn_dim=8192,
        adapter_rank=128,
        attention_adapters=True,
        rope=True,
    )
    assert (spec.head_dim, spec.kv_heads, spec.in_dim) == (128, 32, 4096)
    assert spec.shared_param_count() == 109_058_048
    assert spec.use_param_count() == 9_699_328
    assert spec.state_bytes(1, 8000, "bf16").kv_cache == 2 * 8000 * 4096 * 2
    # every weight of the use, x and e in, the output, the cache read and written
    assert spec.bytes_per_step(1, 100, "bf16") == (
        spec.param_count() * 2 + 3 * 2048 * 2 + 2 * 102 * 4096 * 2
    )


def test_tied_use_reads_the_owners_shared_tensors_and_keeps_its_own():
    spec = spec_of(*SHAPES[0])
    owner, use = SharedAttentionBlock(spec, seed=1), SharedAttentionBlock(spec, seed=2)
    x, e = inputs(owner, 2, 4, seed=0)
    before = use.prefill(x, use.allocate_state(2, 4), e)
    use.tie_to(owner)
    for name in SHARED_PARAMS:
        assert getattr(use, name) is getattr(owner, name)
    assert use.linear is not owner.linear and use.q_up is not owner.q_up
    both = torch.nn.ModuleList([owner, use])
    assert param_count(both) == spec.param_count() + spec.use_param_count()
    # the tied use now computes with the owner's shared weights and its own adapters / linear
    copy = SharedAttentionBlock(spec, seed=2)
    with torch.no_grad():
        for name in SHARED_PARAMS:
            getattr(copy, name).copy_(getattr(owner, name))
    after = use.prefill(x, use.allocate_state(2, 4), e)
    torch.testing.assert_close(after, copy.prefill(x, copy.allocate_state(2, 4), e))
    assert (after - before).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cannot share"):
        use.tie_to(SharedAttentionBlock(spec_of(*SHAPES[1])))


def test_defaults_follow_zamba2_config():
    spec = build_spec("shared_attention", 2560)
    assert (spec.heads, spec.kv_heads, spec.head_dim, spec.ffn_dim) == (40, 40, 128, 10240)
    assert (spec.adapter_rank, spec.attention_adapters, spec.rope) == (128, False, False)
    assert spec.activation == "geglu"
    assert spec_from_key(spec.key) == spec


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"heads": 5}, "heads=5 does not divide width=128"),
        ({"heads": 4, "kv_heads": 3}, "kv_heads=3 does not divide heads=4"),
        ({"adapter_rank": 0, "attention_adapters": True}, "attention_adapters needs adapter_rank"),
        ({"adapter_rank": -1}, "adapter_rank must be an integer >= 0"),
        ({"heads": 4, "head_dim": 7, "rope": True}, "RoPE needs an even head_dim"),
        ({"activation": "relu2"}, "unknown activation 'relu2'"),
        ({"rope": "yes"}, "rope must be true or false"),
    ],
)
def test_impossible_specs_are_input_errors(params, match):
    with pytest.raises(InputError, match=match):
        build_spec("shared_attention", 64, **params)


# ---- transformers' Zamba2 as the peer ---------------------------------------------------------
def zamba2_peer(block):
    """transformers' Zamba2AttentionDecoderLayer (eager attention) and the hybrid layer's linear,
    holding `block`'s weights; its one hybrid layer is layer 0."""
    zamba2 = pytest.importorskip("transformers.models.zamba2.modeling_zamba2")
    from transformers import Zamba2Config

    s = block.spec
    config = Zamba2Config(
        hidden_size=s.width,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        intermediate_size=s.ffn_dim,
        adapter_rank=s.adapter_rank,
        use_shared_attention_adapter=s.attention_adapters,
        use_mem_rope=s.rope,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        hidden_act="gelu" if s.activation == "geglu" else "silu",
        rms_norm_eps=1e-6,  # latprof's rms_norm
        num_hidden_layers=1,
        layers_block_type=["hybrid"],
        n_mamba_heads=2,
        max_position_embeddings=64,
    )
    config._attn_implementation = "eager"
    layer = zamba2.Zamba2AttentionDecoderLayer(config, block_id=0)
    linear = torch.nn.Linear(s.width, s.width, bias=False)
    q, k, v = block.wqkv.split([s.q_dim, s.kv_dim, s.kv_dim])
    attn, mlp = layer.self_attn, layer.feed_forward
    pairs = [
        (layer.input_layernorm.weight, block.norm),
        (attn.q_proj.weight, q),
        (attn.k_proj.weight, k),
        (attn.v_proj.weight, v),
        (attn.o_proj.weight, block.wo),
        (layer.pre_ff_layernorm.weight, block.ffn_norm),
        (mlp.gate_up_proj.weight, block.w_gate_up),
        (mlp.down_proj.weight, block.w_down),
        (mlp.gate_up_proj_adapter_list[0][0].weight, block.gate_up_down),
        (mlp.gate_up_proj_adapter_list[0][1].weight, block.gate_up_up),
        (linear.weight, block.linear),
    ]
    if s.attention_adapters:
        downs = block.qkv_down.chunk(3)
        for i, (adapters, up) in enumerate(
            [
                (attn.linear_q_adapter_list, block.q_up),
                (attn.linear_k_adapter_list, block.k_up),
                (attn.linear_v_adapter_list, block.v_up),
            ]
        ):
            pairs += [(adapters[0][0].weight, downs[i]), (adapters[0][1].weight, up)]
    with torch.no_grad():
        for theirs, ours in pairs:
            assert theirs.shape == ours.shape
            theirs.copy_(ours)
    rotary = zamba2.Zamba2RotaryEmbedding(config) if s.rope else None
    return layer, linear, rotary


@pytest.mark.parametrize(
    "shape",
    [
        (48, 4, 4, True, 8, True),  # adapters on q, k, v and the MLP, RoPE
        (40, 4, 2, True, 6, False),  # GQA (2 query heads per KV head), MLP adapter only
        (36, 6, 6, False, 5, True),  # no RoPE, head_dim 12
    ],
    ids=str,
)
def test_prefill_matches_transformers_zamba2_shared_block(shape):
    block = SharedAttentionBlock(spec_of(*shape), seed=9)
    layer, linear, rotary = zamba2_peer(block)
    batch, seq = 3, 9
    x, e = inputs(block, batch, seq, seed=2)
    ours = block.prefill(x, block.allocate_state(batch, seq), e) - x
    mask = torch.full((seq, seq), float("-inf")).triu(1)[None, None]  # (1, 1, seq, seq)
    with torch.no_grad():
        position_embeddings = rotary(x, torch.arange(seq)[None]) if rotary else None
        t = layer(
            x,
            original_hidden_states=e,
            layer_idx=0,
            attention_mask=mask,
            position_embeddings=position_embeddings,
        )
        theirs = linear(t)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    # and the decode steps of the same sequence
    stepped = run_steps(block, x, block.allocate_state(batch, seq), e) - x
    torch.testing.assert_close(stepped, theirs, atol=ATOL, rtol=1e-4)


def test_state_clone_and_bfloat16_keep_dtype():
    spec = spec_of(*SHAPES[0])
    block = SharedAttentionBlock(spec, dtype=torch.bfloat16, seed=1)
    x, e = inputs(block, 2, 5, seed=3)
    state = block.allocate_state(2, 6)
    out = block.prefill(x, state, e)
    assert out.dtype == torch.bfloat16 and state["k"].dtype == torch.bfloat16
    copy = clone_state(state)
    a = block.step(x[:, 0], state, 5, e[:, 0])
    b = block.step(x[:, 0], copy, 5, e[:, 0])
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


@pytest.mark.parametrize(
    ("phase", "backend"), [("decode", "torch"), ("decode", "sdpa"), ("prefill", "torch")]
)
def test_a_sweep_target_hands_the_block_an_embedding_input(phase, backend):
    """A LUT row of shared attention: the sweep's step gets a random embedding of x's shape."""
    from latprof.lut import Setting
    from latprof.measure import OperatorTarget

    spec = spec_of(*SHAPES[0])
    target = OperatorTarget(spec, Setting(phase, 3, 9, "float32", "cpu", backend, "eager"))
    target.check()
    with torch.inference_mode():
        out = target.build_step(0)()
    expected = (3, 9, spec.width) if phase == "prefill" else (3, spec.width)
    assert out.shape == expected and torch.isfinite(out).all()
