"""The published model families of issue 15, from their real config.json fixtures: layer layout,
sliding windows, memory capped at the window, and `latprof estimate --memory-only` on each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import latprof.cli.estimate  # noqa: F401  (registers the command)
from latprof.cli import _register, app
from latprof.config_hf import load_hf_config, model_from_hf
from latprof.errors import InputError
from latprof.memory import memory_report

_register()
runner = CliRunner()
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf-configs"

#: one real config of each family: fixture -> (model_type, latprof == transformers parameters)
FAMILIES = {
    "gemma-3-1b.json": ("gemma3_text", 999_885_952),
    "gemma-3-270m.json": ("gemma3_text", 268_098_176),
    "lfm2-2.6b.json": ("lfm2", 2_697_198_592),
    "lfm2-8b-a1b.json": ("lfm2_moe", 8_339_929_856),
    "qwen2.5-1.5b-instruct.json": ("qwen2", 1_543_714_304),
    "olmo-1b-hf.json": ("olmo", 1_176_764_416),
    "phi-4-mini-instruct.json": ("phi3", 3_836_021_760),
    "smollm3-3b.json": ("smollm3", 3_075_098_624),
    "qwen3-30b-a3b.json": ("qwen3_moe", 30_532_122_624),
    "qwen3-next-80b-a3b.json": ("qwen3_next", 79_674_391_296),
    "falcon-h1-0.5b.json": ("falcon_h1", 521_411_104),
    "falcon-h1-7b.json": ("falcon_h1", 7_585_519_712),
    "granite-4.0-h-micro.json": ("granitemoehybrid", 3_191_396_096),
    "granite-4.0-h-tiny.json": ("granitemoehybrid", 6_939_037_248),
    "jamba-v0.1.json": ("jamba", 51_570_323_328),
    "kimi-linear-48b-a3b.json": ("kimi_linear", 49_122_675_072),
    "mistral-7b-v0.1.json": ("mistral", 7_241_732_096),
    "nemotron-3-nano-30b-a3b.json": ("nemotron_h", 31_577_937_344),
    "zamba2-1.2b.json": ("zamba2", 1_215_064_704),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_estimate_memory_only_json_for_each_family(name):
    model_type, params = FAMILIES[name]
    path = FIXTURES / name
    assert json.loads(path.read_text())["model_type"] == model_type
    args = ["estimate", str(path), "--memory-only", "--batch", "1", "--context", "8000"]
    result = runner.invoke(app, [*args, "--dtype", "bf16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["params"] == params
    memory = report["memory"]
    model = load_hf_config(path)
    state = model.state_bytes(1, 8000, "bf16")
    assert memory["weights_bytes"] == 2 * params
    assert (memory["kv_cache_bytes"], memory["recurrent_state_bytes"]) == (
        state.kv_cache,
        state.recurrent,
    )
    assert memory["total_bytes"] == 2 * params + state.total


def test_gemma3_local_and_global_layers():
    model = load_hf_config(FIXTURES / "gemma-3-1b.json")
    mixers = model.layers[0::2]
    assert [i for i, s in enumerate(mixers) if s.op == "attention"] == [5, 11, 17, 23]
    local = mixers[0]
    assert (local.op, local.window, local.heads, local.kv_heads, local.head_dim) == (
        "attention_window",
        512,
        4,
        1,
        256,
    )
    assert local.qk_norm and local.post_norm and model.layers[1].post_norm
    # KV cache: 22 local layers hold 512 positions, 4 global ones 8000 (K and V, 256 x 2 bytes)
    report = memory_report(model, batch=1, context=8000, dtype="bf16")
    assert report.kv_cache == (22 * 512 + 4 * 8000) * 2 * 256 * 2


def qwen2_config(**fields):
    return {
        "model_type": "qwen2",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 6,
        "vocab_size": 100,
        "max_position_embeddings": 32768,
        **fields,
    }


def test_qwen2_use_sliding_window_windows_layers_from_max_window_layers():
    model = model_from_hf(
        qwen2_config(use_sliding_window=True, sliding_window=64, max_window_layers=4)
    )
    ops = [s.op for s in model.layers[0::2]]
    assert ops == ["attention"] * 4 + ["attention_window"] * 2
    assert model.layers[8].window == 64 and model.layers[8].qkv_bias
    plain = model_from_hf(qwen2_config(use_sliding_window=False, sliding_window=64))
    assert {s.op for s in plain.layers[0::2]} == {"attention"}


def test_layer_types_win_and_are_checked():
    types = ["sliding_attention", "full_attention"] * 3
    model = model_from_hf(qwen2_config(layer_types=types, sliding_window=16))
    assert [s.op for s in model.layers[0::2]] == ["attention_window", "attention"] * 3
    with pytest.raises(InputError, match="layer_types entries \\['chunked'\\] unknown"):
        model_from_hf(qwen2_config(layer_types=["chunked"] * 6, sliding_window=16))
    with pytest.raises(InputError, match="no `sliding_window` is set"):
        model_from_hf(qwen2_config(layer_types=types))


def test_a_window_beyond_the_trained_length_is_full_attention():
    model = model_from_hf(qwen2_config(use_sliding_window=True, sliding_window=10**6))
    assert {s.op for s in model.layers[0::2]} == {"attention"}
    assert any("never reached" in n for n in model.notes)


def test_lfm2_interleaves_short_conv_and_attention():
    model = load_hf_config(FIXTURES / "lfm2-2.6b.json")
    mixers = [s.op for s in model.layers[0::2]]
    assert [i for i, op in enumerate(mixers) if op == "attention"] == [2, 5, 9, 13, 17, 21, 24, 27]
    conv, attention = model.layers[0], model.layers[4]
    assert (conv.op, conv.d_conv) == ("short_conv", 3)
    assert (attention.heads, attention.kv_heads, attention.head_dim, attention.qk_norm) == (
        32,
        8,
        64,
        True,
    )
    assert model.layers[1].ffn_dim == 10752  # block_auto_adjust_ff_dim false: as given
    state = memory_report(model, batch=1, context=8000, dtype="bf16")
    assert state.conv == 22 * 2048 * 3 * 2
    assert state.kv_cache == 8 * 2 * 8 * 64 * 8000 * 2


def test_lfm2_moe_has_dense_first_layers_then_routed_experts():
    model = load_hf_config(FIXTURES / "lfm2-8b-a1b.json")
    mixers, ffns = model.layers[0::2], model.layers[1::2]
    assert [i for i, s in enumerate(mixers) if s.op == "attention"] == [2, 6, 10, 14, 18, 21]
    assert [s.op for s in ffns[:3]] == ["ffn", "ffn", "moe"]
    assert ffns[0].ffn_dim == 7168  # intermediate_size as given: no auto-adjust in lfm2_moe
    moe = ffns[2]
    assert (moe.experts, moe.top_k, moe.expert_dim, moe.shared_expert_dim) == (32, 4, 1792, 0)
    assert model.tied_embeddings  # the class default: the fixture leaves it out
    assert any("use_expert_bias" in n for n in model.notes)
    state = memory_report(model, batch=1, context=8000, dtype="bf16")
    assert state.conv == 18 * 2048 * 3 * 2
    assert state.kv_cache == 6 * 2 * 8 * 64 * 8000 * 2


def test_lfm2_reads_the_older_tie_embedding_spelling():
    data = json.loads((FIXTURES / "lfm2-8b-a1b.json").read_text())
    assert not model_from_hf({**data, "tie_embedding": False}).tied_embeddings
    both = {**data, "tie_embedding": False, "tie_word_embeddings": True}
    assert model_from_hf(both).tied_embeddings  # the current spelling wins


def test_lfm2_moe_with_more_dense_layers_than_layers_is_an_error():
    data = json.loads((FIXTURES / "lfm2-8b-a1b.json").read_text())
    with pytest.raises(InputError, match="num_dense_layers=30 exceeds num_hidden_layers=24"):
        model_from_hf({**data, "num_dense_layers": 30})


def test_kimi_linear_numbers_its_full_attention_layers_from_one():
    model = load_hf_config(FIXTURES / "kimi-linear-48b-a3b.json")
    mixers, mlps = model.layers[0::2], model.layers[1::2]
    assert [i for i, s in enumerate(mixers) if s.op == "mla"] == [3, 7, 11, 15, 19, 23, 26]
    kda, mla = mixers[0], mixers[3]
    assert (kda.op, kda.heads, kda.head_dim, kda.d_conv, kda.gate_rank) == ("kda", 32, 128, 4, 128)
    assert (mla.heads, mla.q_lora_rank, mla.kv_lora_rank, mla.rope) == (32, 0, 512, False)
    assert (mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim) == (128, 64, 128)
    assert (mlps[0].op, mlps[0].ffn_dim) == ("ffn", 9216)  # first_k_dense_replace 1
    moe = mlps[1]
    assert (moe.experts, moe.top_k, moe.expert_dim, moe.shared_expert_dim) == (256, 8, 1024, 1024)
    assert not model.tied_embeddings
    state = memory_report(model, batch=1, context=8000, dtype="bf16")
    assert state.kv_cache == 7 * 8000 * (512 + 64) * 2  # one latent row per token and MLA layer
    assert state.recurrent == 20 * 32 * 128 * 128 * 2
    assert state.conv == 20 * 3 * 32 * 128 * 4 * 2


def test_kimi_linear_layer_lists_must_number_every_layer_once():
    data = json.loads((FIXTURES / "kimi-linear-48b-a3b.json").read_text())
    data["linear_attn_config"] = {**data["linear_attn_config"], "full_attn_layers": [0, 4]}
    with pytest.raises(InputError, match="number every layer 1..27 exactly once"):
        model_from_hf(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mla_use_output_gate", True),
        ("routed_expert_hidden_size", 1152),
        ("attn_res_block_size", 12),
        ("hidden_act", "situ"),
        ("moe_layer_freq", 2),
        ("attention_bias", True),
        ("tie_word_embeddings", True),  # transformers' Kimi Linear never ties its LM head
    ],
)
def test_kimi_k3_structure_latprof_does_not_model_is_an_error_naming_the_field(field, value):
    data = json.loads((FIXTURES / "kimi-linear-48b-a3b.json").read_text())
    with pytest.raises(InputError, match=field):
        model_from_hf({**data, field: value})


def test_zamba2_shared_blocks_their_ties_and_kv_cache():
    model = load_hf_config(FIXTURES / "zamba2-1.2b.json")
    shared = [i for i, s in enumerate(model.layers) if s.op == "shared_attention"]
    assert shared == [5, 12, 19, 26, 33, 40]  # HF hybrid layers 5, 11, ..., 35, before their Mamba2
    assert len(model.layers) == 38 + 6 and model.layers[shared[0] + 1].op == "mamba2"
    assert model.weight_ties == tuple((i, 5) for i in shared[1:])  # one memory block
    block, mamba = model.layers[5], model.layers[0]
    assert (block.heads, block.kv_heads, block.head_dim, block.ffn_dim) == (32, 32, 128, 8192)
    assert (block.adapter_rank, block.attention_adapters, block.rope) == (128, True, True)
    assert block.activation == "geglu"  # hidden_act left at Zamba2Config's default, gelu
    assert (mamba.d_inner, mamba.heads, mamba.head_dim, mamba.d_state, mamba.n_groups) == (
        4096,
        64,
        64,
        128,
        1,
    )
    assert {s for s in model.layers if s.op == "mamba2"} == {mamba}
    # every use keeps its own KV cache: 6 uses x K and V x 8000 tokens x 32 x 128 x 2 bytes
    report = memory_report(model, batch=1, context=8000, dtype="bf16")
    assert report.kv_cache == 6 * 2 * 8000 * 32 * 128 * 2
    assert report.weights == 2 * 1_215_064_704
    assert any("residual stream" in n for n in model.notes)


def zamba2_config(**fields):
    return {
        "model_type": "zamba2",
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"],
        "num_attention_heads": 4,
        "n_mamba_heads": 4,
        "mamba_d_state": 16,
        "vocab_size": 100,
        **fields,
    }


def test_zamba2_num_mem_blocks_cycle_over_the_hybrid_layers():
    types = ["hybrid", "mamba", "hybrid", "hybrid", "mamba", "hybrid", "hybrid"]
    model = model_from_hf(
        zamba2_config(layers_block_type=types, num_hidden_layers=7, num_mem_blocks=2)
    )
    shared = [i for i, s in enumerate(model.layers) if s.op == "shared_attention"]
    assert shared == [0, 3, 5, 8, 10]
    # hybrid k uses block k mod 2: its first uses at layers 0 and 3
    assert model.weight_ties == ((5, 0), (8, 3), (10, 0))
    untied = model_from_hf(
        zamba2_config(layers_block_type=types, num_hidden_layers=7, num_mem_blocks=5)
    )
    assert untied.weight_ties == ()
    assert untied.param_count() - model.param_count() == 3 * model.layers[0].shared_param_count()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"add_bias_linear": True}, "add_bias_linear=true"),
        ({"hidden_act": "relu"}, "hidden_act 'relu'"),
        ({"num_hidden_layers": 5}, "layers_block_type has 4 entries, num_hidden_layers 5"),
        ({"layers_block_type": ["mamba", "attention", "mamba", "hybrid"]}, "entry 'attention'"),
        ({"n_mamba_heads": 3}, "n_mamba_heads 3 does not divide"),
        (
            {"use_shared_attention_adapter": True, "num_key_value_heads": 2},
            "use_shared_attention_adapter=true with num_attention_heads 4 / num_key_value_heads 2",
        ),
        ({"layer_types": ["hybrid"] * 4}, "layers_block_type and layer_types disagree"),
    ],
)
def test_zamba2_fields_latprof_cannot_honour_are_errors_naming_them(fields, match):
    with pytest.raises(InputError, match=match):
        model_from_hf(zamba2_config(**fields))


def test_zamba2_long_context_and_conv_bias_fields():
    long = model_from_hf(zamba2_config(use_long_context=True, max_position_embeddings=4096))
    assert long.max_positions == 16384  # Zamba2Config extends it so
    untied = model_from_hf(zamba2_config(tie_word_embeddings=False, num_mem_blocks=1))
    assert untied.weight_ties == ((4, 1),)
    assert any("tie_word_embeddings=false" in n for n in untied.notes)
    no_bias = model_from_hf(zamba2_config(use_conv_bias=False))
    assert any("use_conv_bias=False" in n for n in no_bias.notes)
    assert no_bias.param_count() == model_from_hf(zamba2_config()).param_count()


def test_notes_say_what_changes_no_shape():
    phi4 = load_hf_config(FIXTURES / "phi-4-mini-instruct.json")
    assert any("partial_rotary_factor=0.75" in n for n in phi4.notes)
    assert {s.op for s in phi4.layers[0::2]} == {"attention"}  # window 262144 > trained length
    smollm3 = load_hf_config(FIXTURES / "smollm3-3b.json")
    assert any("NoPE" in n for n in smollm3.notes)


def test_nemotron_3_nano_mamba2_inner_size_is_heads_times_head_dim():
    model = load_hf_config(FIXTURES / "nemotron-3-nano-30b-a3b.json")
    mamba = model.layers[0]
    assert (mamba.op, mamba.d_inner, mamba.heads, mamba.n_groups) == ("mamba2", 4096, 64, 8)
    assert mamba.d_inner % model.width  # 4096 is no multiple of 2688


def test_latent_moe_is_an_error_naming_the_field():
    data = json.loads((FIXTURES / "nemotron-3-nano-30b-a3b.json").read_text())
    with pytest.raises(InputError, match="moe_latent_size=1024"):
        model_from_hf({**data, "moe_latent_size": 1024})


def test_a_per_layer_head_count_is_an_error_naming_the_field():
    with pytest.raises(InputError, match="num_key_value_heads must be an integer"):
        model_from_hf(qwen2_config(num_key_value_heads=[2, 2, 1, 1, 2, 2]))


def test_an_unknown_model_type_lists_the_supported_ones_with_the_new_families():
    with pytest.raises(InputError, match="unsupported model_type 'rwkv7'.*") as err:
        model_from_hf({"model_type": "rwkv7", "hidden_size": 64})
    for model_type in ("gemma3_text", "kimi_linear", "lfm2_moe", "zamba2"):
        assert model_type in str(err.value)
