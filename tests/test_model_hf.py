"""Hugging Face config.json loaders: every supported model type, KV-cache bytes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import latprof.registry
from latprof.config_hf import LOADERS, load_hf_config, model_from_hf
from latprof.errors import InputError
from latprof.memory import max_batch, memory_report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf-configs"
ALL = sorted(p.name for p in FIXTURES.glob("*.json"))
#: fixtures whose shapes latprof's operators cannot represent (tested for their message)
UNREPRESENTABLE: set[str] = set()


def load(name: str):
    return load_hf_config(FIXTURES / name)


def kv_formula(model, batch: int, context: int, nbytes: int) -> int:
    """2 x attention layers x kv_heads x head_dim x (context + meta) x bytes x batch, with a
    sliding-window layer's positions capped at its window; an MLA layer caches one latent row
    of kv_lora_rank + qk_rope_head_dim per position instead."""
    positions = context + model.meta_tokens
    kv = sum(
        2
        * s.kv_heads
        * s.head_dim
        * min(positions, getattr(s, "window", positions))
        * nbytes
        * batch
        for s in model.layers
        if s.op in ("attention", "attention_window", "shared_attention")  # each use has a cache
    )
    latent = sum(
        (s.kv_lora_rank + s.qk_rope_head_dim) * positions * nbytes * batch
        for s in model.layers
        if s.op == "mla"
    )
    return kv + latent


def test_llama_3_2_1b_kv_cache_is_262_144_000_bytes():
    model = load("llama-3.2-1b.json")
    report = memory_report(model, batch=1, context=8000, dtype="bf16")
    assert report.kv_cache == 262_144_000
    assert report.recurrent == report.conv == 0
    assert model.tied_embeddings and 1.23e9 < model.param_count() < 1.24e9


@pytest.mark.parametrize("name", [n for n in ALL if n not in UNREPRESENTABLE])
def test_fixture_kv_cache_matches_formula(name):
    model = load(name)
    for batch, context, dtype, nbytes in ((1, 8000, "bf16", 2), (3, 1000, "float32", 4)):
        report = memory_report(model, batch, context, dtype)
        assert report.kv_cache == kv_formula(model, batch, context, nbytes)
        assert isinstance(report.kv_cache, int) and isinstance(report.weights, int)
        assert report.total == report.weights + report.kv_cache + report.recurrent + report.conv


@pytest.mark.parametrize(
    ("name", "ops", "params_b"),
    [
        ("llama-3.2-1b.json", {"attention": 16, "ffn": 16}, 1.24),
        ("qwen3-0.6b.json", {"attention": 28, "ffn": 28}, 0.60),
        ("mamba2-130m-hf.json", {"mamba2": 24}, 0.13),
        ("mamba-130m-hf.json", {"mamba": 24}, 0.13),
        ("nemotron-h-8b-base-8k.json", {"mamba2": 24, "ffn": 24, "attention": 4}, 8.1),
        ("nemotron-flash-1b.json", {"deltanet": 4, "mamba2": 6, "attention": 2, "ffn": 12}, 0.96),
        ("mistral-7b-v0.1.json", {"attention_window": 32, "ffn": 32}, 7.24),
        ("qwen2-0.5b.json", {"attention": 24, "ffn": 24}, 0.49),
        ("olmo2-1b.json", {"attention": 16, "ffn": 16}, 1.49),
        ("granite-3.1-2b.json", {"attention": 40, "ffn": 40}, 2.53),
        ("smollm3-3b.json", {"attention": 36, "ffn": 36}, 3.08),
        ("phi3-mini-4k.json", {"attention_window": 32, "ffn": 32}, 3.82),
        ("falcon-h1-7b.json", {"attention": 44, "mamba2": 44, "ffn": 44}, 7.59),
        ("bamba-9b.json", {"mamba2": 29, "attention": 3, "ffn": 32}, 9.78),
        ("granite-4.0-h-micro.json", {"mamba2": 36, "attention": 4, "ffn": 40}, 3.19),
    ],
)
def test_dense_fixtures_layer_counts_and_size(name, ops, params_b):
    model = load(name)
    counts: dict[str, int] = {}
    for spec in model.layers:
        counts[spec.op] = counts.get(spec.op, 0) + 1
    assert counts == ops
    assert model.param_count() == pytest.approx(params_b * 1e9, rel=0.01)


def test_head_dim_field_wins_over_hidden_over_heads():
    qwen3 = load("qwen3-0.6b.json")  # hidden 1024, 16 heads, head_dim 128 (not 64)
    attention = qwen3.layers[0]
    assert (attention.heads, attention.kv_heads, attention.head_dim) == (16, 8, 128)
    assert attention.qk_norm  # qwen3 normalises q and k per head
    mistral = load("mistral-7b-v0.1.json")  # no head_dim: 4096 / 32
    assert mistral.layers[0].head_dim == 128 and not mistral.layers[0].qk_norm
    assert mistral.layers[0].window == 4096  # sliding_window: every Mistral layer is windowed


def test_nemotron_h_pattern_and_shapes():
    model = load("nemotron-h-8b-base-8k.json")
    pattern = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
    code = {"mamba2": "M", "attention": "*", "ffn": "-"}
    assert "".join(code[s.op] for s in model.layers) == pattern
    mamba2 = model.layers[0]
    assert (mamba2.heads, mamba2.head_dim, mamba2.n_groups, mamba2.d_state) == (128, 64, 8, 128)
    ffn = model.layers[1]
    assert (ffn.ffn_dim, ffn.activation) == (21504, "relu2")
    assert not model.tied_embeddings


def test_nemotron_flash_meta_tokens_lengthen_kv_cache():
    model = load("nemotron-flash-1b.json")
    assert model.meta_tokens == 256 and model.tied_embeddings
    code = {"deltanet": "D", "ffn": "F", "mamba2": "M2", "attention": "A"}
    assert " ".join(code[s.op] for s in model.layers) == (
        "D F M2 F A F M2 F D F M2 F A F M2 F D F M2 F D F M2 F"
    )
    ffn = next(s for s in model.layers if s.op == "ffn")
    assert ffn.ffn_dim == 6144  # ffn_expand_ratio 3 x 2048
    report = memory_report(model, 2, 1000, "bf16")
    assert report.kv_cache == 2 * 2 * 4 * 128 * (1000 + 256) * 2 * 2
    # the YAML example and the HF-style config describe the same model
    from latprof.model import load_model

    yaml_model = load_model(
        Path(__file__).resolve().parent.parent / "configs" / "nemotron-flash-1b.yaml"
    )
    assert yaml_model.layers == model.layers


def test_nemotron_flash_mixer_layers_carry_an_ffn_when_intermediate_size_is_set():
    data = json.loads((FIXTURES / "nemotron-flash-1b.json").read_text())
    data.update(
        layer_types=["a", "m2"], num_hidden_layers=2, intermediate_size=4096, ffn_expand_ratio=None
    )
    model = model_from_hf(data)
    assert [s.op for s in model.layers] == ["attention", "ffn", "mamba2", "ffn"]
    assert model.layers[1].ffn_dim == 4096


def test_qwen3_next_interleaves_gated_deltanet_and_attention():
    model = load("qwen3-next-80b-a3b.json")
    mixers = [s.op for s in model.layers[0::2]]
    assert mixers == (["gated_deltanet"] * 3 + ["attention"]) * 12
    gdn = model.layers[0]
    assert (gdn.heads, gdn.head_dim, gdn.expand_v, gdn.v_heads) == (16, 128, 2, 32)
    assert gdn.value_dim == 32 * 128 and gdn.head_v_dim == 128
    attention = model.layers[6]
    assert (attention.heads, attention.kv_heads, attention.head_dim) == (16, 2, 256)
    assert attention.out_gate and attention.q_proj_dim == 2 * 16 * 256
    moe = model.layers[1]
    assert moe.op == "moe"
    assert (moe.experts, moe.top_k, moe.expert_dim, moe.shared_expert_dim) == (512, 10, 512, 512)


@pytest.mark.parametrize(
    ("name", "experts", "top_k", "expert_dim", "shared"),
    [
        ("mixtral-8x7b.json", 8, 2, 14336, 0),
        ("qwen1.5-moe-a2.7b.json", 60, 4, 1408, 5632),
        ("qwen3-30b-a3b.json", 128, 8, 768, 0),
        ("granite-4.0-h-tiny.json", 64, 6, 512, 1024),
        ("jamba-v0.1.json", 16, 2, 14336, 0),
        ("nemotron-h-moe-example.json", 128, 6, 1856, 3712),
    ],
)
def test_moe_families_map_to_moe_spec(name, experts, top_k, expert_dim, shared):
    model = load(name)
    moe = next(s for s in model.layers if s.op == "moe")
    assert (moe.experts, moe.top_k, moe.expert_dim, moe.shared_expert_dim) == (
        experts,
        top_k,
        expert_dim,
        shared,
    )


def test_jamba_layer_periods():
    model = load("jamba-v0.1.json")
    mixers = [s.op for s in model.layers[0::2]]
    ffns = [s.op for s in model.layers[1::2]]
    assert [i for i, op in enumerate(mixers) if op == "attention"] == [4, 12, 20, 28]
    assert all(op == ("moe" if i % 2 == 1 else "ffn") for i, op in enumerate(ffns))


def test_moe_without_moe_family_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(latprof.registry.OPERATORS, "moe", raising=False)
    with pytest.raises(InputError, match="no 'moe' operator family"):
        load("mixtral-8x7b.json")


def test_falcon_h1_mamba2_inner_size_is_taken_as_given():
    """Falcon-H1 0.5B: mamba_d_ssm 1536 = 1.5 x hidden_size 1024, 24 heads x 64."""
    model = load("falcon-h1-0.5b.json")
    mamba = model.layers[1]
    assert (mamba.op, mamba.d_inner, mamba.heads, mamba.head_dim) == ("mamba2", 1536, 24, 64)
    assert not mamba.pre_norm and not mamba.gated_norm  # shared norm; mamba_rms_norm false
    assert "inner=1536" in mamba.key
    assert model.param_count() == 521_411_104  # transformers' count on the meta device


def test_max_batch_fits_device_memory():
    model = load("llama-3.2-1b.json")
    fit = max_batch(model, 8000, "bf16", 80 * 10**9)
    one = memory_report(model, 1, 8000, "bf16")
    assert fit.batch == (80 * 10**9 - one.weights) // one.state
    assert fit.memory.total <= 80 * 10**9 < fit.memory.total + one.state
    assert max_batch(model, 8000, "bf16", 10**9).batch == 0  # weights alone: 2.5 GB


# ---- bad input -----------------------------------------------------------------------------------
def write_json(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"model_type": "llama",\n "hidden_size": 64,,}', r"config.json:2:\d+: malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"hidden_size": 64}', "no `model_type`"),
        ('{"model_type": "gpt2", "hidden_size": 64}', r"unsupported model_type 'gpt2'.*llama"),
        (
            '{"model_type": "llama", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 2,'
            ' "num_attention_heads": 4, "intermediate_size": 128, "attention_bias": true}',
            r"attention_bias=true .* is not modelled",
        ),
        (
            '{"model_type": "llama", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 2,'
            ' "intermediate_size": 128}',
            "required field 'num_attention_heads'",
        ),
        (
            '{"model_type": "llama", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 2,'
            ' "num_attention_heads": 3, "intermediate_size": 128}',
            "not divisible",
        ),
        (
            '{"model_type": "llama", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 2,'
            ' "num_attention_heads": 4, "num_key_value_heads": 3, "intermediate_size": 128}',
            "impossible shape.*kv_heads=3",
        ),
        ('{"model_type": "llama", "hidden_size": "64", "vocab_size": 10}', "hidden_size must be"),
        (
            '{"model_type": "llama", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 0,'
            ' "num_attention_heads": 4, "intermediate_size": 128}',
            "num_hidden_layers must be",
        ),
        (
            '{"model_type": "nemotron_h", "hidden_size": 64, "vocab_size": 10,'
            ' "hybrid_override_pattern": "M-Q"}',
            "unknown block",
        ),
        (
            '{"model_type": "nemotron_flash", "hidden_size": 64, "vocab_size": 10,'
            ' "num_attention_heads": 1, "layer_types": ["a", "zz"]}',
            "entry 'zz' is unknown",
        ),
        (
            '{"model_type": "mamba2", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 1,'
            ' "num_heads": 3, "head_dim": 64}',
            "inner sizes disagree",
        ),
        (
            '{"model_type": "mamba2", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 1,'
            ' "num_heads": 3, "head_dim": 32, "expand": 1.5}',
            "expand must be an integer",
        ),
        (
            '{"model_type": "bamba", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 1,'
            ' "mamba_n_heads": 3, "mamba_d_head": 32, "num_attention_heads": 1,'
            ' "intermediate_size": 64}',
            "3 x mamba_d_head 32 != Mamba2 inner size 128",
        ),
        (
            '{"model_type": "bamba", "hidden_size": 64, "vocab_size": 10, "num_hidden_layers": 1,'
            ' "mamba_n_heads": 3, "mamba_d_head": 32, "mamba_d_ssm": 96, "num_attention_heads": 1,'
            ' "intermediate_size": 64, "mamba_proj_bias": true}',
            r"mamba_proj_bias=true \(biases on in_proj / out_proj\) is not modelled",
        ),
    ],
)
def test_bad_hf_configs(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        load_hf_config(write_json(tmp_path, text))


def test_supported_model_types_are_listed():
    for model_type in (
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "olmo",
        "granite",
        "nemotron_h",
        "nemotron_flash",
        "mamba",
        "mamba2",
        "qwen3_next",
        "falcon_h1",
        "granitemoehybrid",
        "bamba",
        "jamba",
    ):
        assert model_type in LOADERS
