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
