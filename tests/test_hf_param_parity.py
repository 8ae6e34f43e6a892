"""Parameter counts against an independent peer: the model `transformers` builds from the same
config.json on the meta device (no weights are allocated).  Every fixture whose model_type the
installed transformers knows must match latprof's count to the parameter."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from latprof.config_hf import load_hf_config, model_from_hf

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
    config = mapping[data["model_type"]](**{k: v for k, v in data.items() if k != "model_type"})
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(config)
    # parameters() yields a tied embedding / LM head weight once, as latprof counts it
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_param_count_equals_transformers_on_meta_device(path):
    data = json.loads(path.read_text())
    expected = transformers_param_count(data)
    if expected is None:
        pytest.skip(f"transformers has no model class for {data['model_type']!r}")
    assert load_hf_config(path).param_count() == expected


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
