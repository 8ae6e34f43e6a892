"""Parameter counts against an independent peer: the model `transformers` builds from the same
config.json on the meta device (no weights are allocated).  Every fixture whose model_type the
installed transformers knows must match latprof's count to the parameter."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from latprof.config_hf import LOADERS, UNTIED_BY_DEFAULT, load_hf_config, model_from_hf

HERE = Path(__file__).resolve().parent
FIXTURE_DIRS = (
    HERE / "fixtures" / "hf-configs",
    HERE.parent / ".." / "shared" / "fixtures" / "hf-configs",
)
FIXTURES = sorted(
    {p.name: p for d in FIXTURE_DIRS if d.is_dir() for p in d.glob("*.json")}.values(),
    key=lambda p: p.name,
)


def transformers_param_count(data: dict) -> int | None:
    """Parameters of AutoModelForCausalLM.from_config on the meta device; None where this
    transformers has no class for the model_type."""
    transformers = pytest.importorskip("transformers")
    import torch

    mapping = transformers.CONFIG_MAPPING
    if data["model_type"] not in mapping:
        return None
    fields = {k: v for k, v in data.items() if k != "model_type"}
    if data["model_type"] == "kimi_linear":
        fields = kimi_linear_fields(fields)
    config = mapping[data["model_type"]](**fields)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(config)
    # parameters() yields a tied embedding / LM head weight once, as latprof counts it
    return sum(p.numel() for p in model.parameters())


def kimi_linear_fields(fields: dict) -> dict:
    """transformers 5.24's KimiLinearConfig never reads `linear_attn_config` (its __post_init__
    looks the sub-dict up among keyword arguments it is not given) and falls back to its default
    layout and KDA sizes.  The checkpoints number their layers from 1 there; hand transformers
    the same layout and sizes as explicit fields, so that the peer builds the published model."""
    sub = fields.get("linear_attn_config") or {}
    if "layer_types" not in fields and "full_attn_layers" in sub:
        n = fields["num_hidden_layers"]
        full = set(sub["full_attn_layers"])
        fields["layer_types"] = [
            "full_attention" if i + 1 in full else "linear_attention" for i in range(n)
        ]
    for key, field in (("head_dim", "linear_head_dim"), ("num_heads", "linear_num_heads"),
                       ("short_conv_kernel_size", "linear_conv_kernel_dim")):  # fmt: skip
        if key in sub:
            fields.setdefault(field, sub[key])
    return fields


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_param_count_equals_transformers_on_meta_device(path):
    data = json.loads(path.read_text())
    expected = transformers_param_count(data)
    if expected is None:
        pytest.skip(f"transformers has no model class for {data['model_type']!r}")
    assert load_hf_config(path).param_count() == expected


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_a_missing_tie_word_embeddings_is_read_as_transformers_reads_it(path):
    """Without the field, transformers takes its configuration class's default (false for most
    families, true for a few); latprof must build the same model."""
    data = json.loads(path.read_text())
    data.pop("tie_word_embeddings", None)
    data.pop("tie_embedding", None)
    expected = transformers_param_count(data)
    if expected is None:
        pytest.skip(f"transformers has no model class for {data['model_type']!r}")
    assert model_from_hf(data, source=path.name).param_count() == expected


def test_every_family_transformers_unties_by_default_is_listed():
    transformers = pytest.importorskip("transformers")
    for model_type in LOADERS:
        if model_type in transformers.CONFIG_MAPPING:
            untied = not transformers.CONFIG_MAPPING[model_type]().tie_word_embeddings
            assert untied == (model_type in UNTIED_BY_DEFAULT), model_type


@pytest.mark.parametrize(
    "fields",
    [
        # no linear_attn_config: transformers' default layout; compressed queries, 2 shared experts
        {"q_lora_rank": 96, "num_shared_experts": 2, "first_k_dense_replace": 2},
        # explicit layer_types, KDA sizes at the top level as transformers writes them
        {
            "layer_types": ["linear_attention", "full_attention"] * 3,
            "linear_num_heads": 3,
            "linear_head_dim": 40,
            "linear_conv_kernel_dim": 3,
        },
    ],
    ids=["q-lora", "explicit-layer-types"],
)
def test_synthetic_kimi_linear_equals_transformers(fields):
    data = {
        "model_type": "kimi_linear", "hidden_size": 192, "num_hidden_layers": 6,
        "vocab_size": 1000, "pad_token_id": 0, "num_attention_heads": 4, "kv_lora_rank": 48,
        "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 24, "num_experts": 8,
        "num_experts_per_token": 2, "moe_intermediate_size": 64, "intermediate_size": 320,
        **fields,
    }  # fmt: skip
    expected = transformers_param_count(data)
    if expected is None:
        pytest.skip("this transformers has no kimi_linear")
    assert model_from_hf(data).param_count() == expected


def test_synthetic_zamba2_two_memory_blocks_gqa_no_attention_adapters():
    """Two shared blocks cycled over five hybrid layers, grouped-query attention (6 heads over
    2 KV heads), adapters on the MLP only, two SSM groups.  Embeddings tied, as in every
    published Zamba2: transformers 5.24 applies its tie mapping, the shared blocks' included,
    only when tie_word_embeddings is true (latprof keeps the blocks shared and notes it)."""
    types = ["mamba", "hybrid", "mamba", "hybrid", "mamba", "hybrid", "hybrid", "mamba", "hybrid"]
    data = {
        "model_type": "zamba2",
        "hidden_size": 96,
        "num_hidden_layers": len(types),
        "layers_block_type": types,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "intermediate_size": 200,
        "num_mem_blocks": 2,
        "use_shared_attention_adapter": False,
        "adapter_rank": 12,
        "use_mem_rope": True,
        "mamba_d_state": 16,
        "mamba_ngroups": 2,
        "n_mamba_heads": 6,
        "vocab_size": 500,
        "tie_word_embeddings": True,
    }
    expected = transformers_param_count(data)
    if expected is None:
        pytest.skip("transformers has no model class for 'zamba2'")
    model = model_from_hf(data)
    assert model.weight_ties == ((7, 1), (9, 4), (12, 1))
    assert model.param_count() == expected
