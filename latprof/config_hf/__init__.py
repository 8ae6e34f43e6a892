"""Hugging Face `config.json` -> `ModelSpec`, read as data only: no remote code is ever run, and
`auto_map` / `architectures` are ignored.

One loader per `model_type` family, registered in `LOADERS`.  Field names and layer layouts
follow the transformers configuration classes (and, for Nemotron-Flash, NVIDIA's modelling code
published with the checkpoints).  Where a family has a detail latprof's operators do not model
(sliding windows, attention output gates, parallel mixers sharing one norm) the loader keeps the
closest operator and records a note on the ModelSpec, which `latprof estimate` prints.

A missing `tie_word_embeddings` takes the default of the family's transformers configuration
class, as transformers reads it (`UNTIED_BY_DEFAULT`: false for Llama, Qwen, Falcon-H1 and most
others; true for Gemma 3, LFM2, SmolLM3, Mamba): a trimmed or hand-written config.json then gets
the model transformers would build from it.

Modules: `fields` (HFConfig, the typed field reader), `blocks` (operator blocks several families
share), and the loaders by family: `transformers`, `ssm` (Mamba, Mamba2), `nemotron`
(Nemotron-H, Nemotron-Flash), `hybrids` (Qwen3-Next, Falcon-H1, Bamba, Granite 4.0, Jamba),
`gemma` (Gemma 3), `lfm2` (LFM2, LFM2-MoE), `kimi` (Kimi Linear), `zamba2` (Mamba2 with
shared attention blocks, whose weight ties the loader records); `windows` reads sliding-window
layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from latprof import inputs
from latprof.config_hf.fields import HFConfig
from latprof.config_hf.gemma import gemma3_layers
from latprof.config_hf.hybrids import (
    bamba_layers,
    falcon_h1_layers,
    granite_hybrid_layers,
    jamba_layers,
    qwen3_next_layers,
)
from latprof.config_hf.kimi import kimi_linear_layers
from latprof.config_hf.lfm2 import lfm2_layers, lfm2_moe_layers
from latprof.config_hf.nemotron import nemotron_flash_layers, nemotron_h_layers
from latprof.config_hf.ssm import mamba2_layers, mamba_layers
from latprof.config_hf.transformers import TRANSFORMERS, transformer_layers
from latprof.config_hf.zamba2 import zamba2_layers
from latprof.errors import InputError
from latprof.model_spec import ModelSpec
from latprof.specs import OpSpec

__all__ = ["LOADERS", "HFConfig", "load_hf_config", "model_from_hf"]

#: model types whose norms have no weights (OLMo: LayerNorm without scale or bias)
NONPARAMETRIC_NORMS = frozenset({"olmo"})

#: published families latprof does not load yet, and what it lacks for them
NOT_YET_SUPPORTED: dict[str, str] = {}  # none today: every family of issue 15 loads

#: model_type -> loader returning the model's operator blocks in order
LOADERS: dict[str, Callable[[HFConfig], list[OpSpec]]] = {
    **{model_type: transformer_layers for model_type in TRANSFORMERS},
    "mamba": mamba_layers,
    "falcon_mamba": mamba_layers,
    "mamba2": mamba2_layers,
    "nemotron_h": nemotron_h_layers,
    "nemotron_flash": nemotron_flash_layers,
    "qwen3_next": qwen3_next_layers,
    "falcon_h1": falcon_h1_layers,
    "bamba": bamba_layers,
    "granitemoehybrid": granite_hybrid_layers,
    "jamba": jamba_layers,
    "gemma3_text": gemma3_layers,
    "lfm2": lfm2_layers,
    "lfm2_moe": lfm2_moe_layers,
    "kimi_linear": kimi_linear_layers,
    "zamba2": zamba2_layers,
}

#: older spellings of `tie_word_embeddings` that a family's configuration class still reads
TIE_ALIASES = {"lfm2": "tie_embedding", "lfm2_moe": "tie_embedding"}
#: families whose transformers configuration class defaults to tie_word_embeddings=false
#: (transformers 5.24); the others (and Nemotron-Flash, whose class is NVIDIA's) default to true
UNTIED_BY_DEFAULT = frozenset(
    {
        "bamba", "falcon_h1", "granite", "granitemoehybrid", "jamba", "kimi_linear", "llama",
        "mamba2",
        "mistral", "mixtral", "nemotron_h", "olmo", "olmo2", "phi3", "qwen2", "qwen2_moe",
        "qwen3", "qwen3_moe", "qwen3_next",
    }
)  # fmt: skip


def load_hf_config(path: str | Path) -> ModelSpec:
    """Read a config.json; malformed JSON names the file, line and column."""
    path = Path(path)
    text = inputs.read_text(path, "config")  # exists, a file, UTF-8, bounded in size
    data = inputs.parse_json(text, str(path))  # bounded numbers, depth and size
    name = path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return model_from_hf(data, source=str(path), name=name)


def model_from_hf(data: Any, source: str = "<config.json>", name: str = "model") -> ModelSpec:
    """A parsed config.json -> ModelSpec; `source` names it in errors."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a config.json holds a JSON object, not {type(data).__name__}")
    if "model_type" not in data:
        raise InputError(
            f"{source}: no `model_type` field, so the architecture is unknown; supported model "
            f"types: {', '.join(sorted(LOADERS))}"
        )
    model_type = data["model_type"]
    loader = LOADERS.get(model_type) if isinstance(model_type, str) else None
    if loader is None:
        why = NOT_YET_SUPPORTED.get(model_type) if isinstance(model_type, str) else None
        raise InputError(
            f"{source}: unsupported model_type {inputs.quote(model_type)}"
            + (f" ({why})" if why else "")
            + "; supported: "
            f"{', '.join(sorted(LOADERS))} (or describe the model in latprof YAML)"
        )
    for key, value in data.items():  # layer patterns and lists: bounded before any is expanded
        if isinstance(value, str | list) and len(value) > inputs.MAX_LAYERS:
            raise InputError(
                f"{source}: field {inputs.quote(key)} holds {len(value):,} items or characters, "
                f"over the limit of {inputs.MAX_LAYERS:,} (latprof's bound on layers)"
            )
    cfg = HFConfig(data, source)
    layers = loader(cfg)
    tied = data.get(
        "tie_word_embeddings",
        data.get(TIE_ALIASES.get(model_type, ""), model_type not in UNTIED_BY_DEFAULT),
    )
    if not isinstance(tied, bool):
        raise cfg.error(f"tie_word_embeddings must be true or false, got {tied!r}")
    meta = cfg.int("num_memory_tokens", default=0, minimum=0)
    max_positions = cfg.max_positions
    if max_positions is None and data.get("max_position_embeddings") is not None:
        max_positions = cfg.int("max_position_embeddings", minimum=1)
    return ModelSpec(
        name=name,
        width=cfg.int("hidden_size"),
        vocab_size=cfg.int("vocab_size"),
        layers=tuple(layers),
        tied_embeddings=tied,
        meta_tokens=meta,
        source=source,
        notes=tuple(cfg.notes),
        norm_weights=cfg.model_type not in NONPARAMETRIC_NORMS,
        max_positions=max_positions,
        weight_ties=tuple(cfg.weight_ties),
    )
