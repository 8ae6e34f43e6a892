"""Plain decoder-only transformers: every layer is attention then a gated MLP or an MoE FFN."""

from __future__ import annotations

from latprof.config_hf import blocks
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

#: model types whose layers are (attention, gated MLP or MoE); value: q/k norm per head
TRANSFORMERS = {
    "llama": False,
    "mistral": False,
    "qwen2": False,
    "qwen3": True,
    "olmo": False,
    "olmo2": True,
    "granite": False,
    "smollm3": False,
    "phi3": False,
    "mixtral": False,
    "qwen2_moe": False,
    "qwen3_moe": True,
}


def transformer_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    attention = blocks.attention(cfg, width, qk_norm=TRANSFORMERS[cfg.model_type])
    blocks.sliding_window_note(cfg)
    layers: list[OpSpec] = []
    for i in range(blocks.layer_count(cfg)):
        layers += [attention, _ffn(cfg, width, i)]
    return layers


def _ffn(cfg: HFConfig, width: int, i: int) -> OpSpec:
    """Layer i's FFN: Mixtral is MoE throughout; Qwen MoE every `decoder_sparse_step` layers
    outside `mlp_only_layers`; a gated MLP otherwise."""
    mt = cfg.model_type
    if mt == "mixtral":
        return blocks.moe(
            cfg,
            width,
            cfg.int("num_local_experts"),
            cfg.int("num_experts_per_tok"),
            cfg.int("intermediate_size"),
        )
    if mt in ("qwen2_moe", "qwen3_moe"):
        experts = cfg.int("num_experts", default=0, minimum=0)
        step = cfg.int("decoder_sparse_step", default=1)
        if experts and (i + 1) % step == 0 and i not in cfg.int_list("mlp_only_layers"):
            shared = cfg.int("shared_expert_intermediate_size", default=0, minimum=0)
            return blocks.moe(
                cfg,
                width,
                experts,
                cfg.int("num_experts_per_tok"),
                cfg.int("moe_intermediate_size"),
                shared if mt == "qwen2_moe" else 0,
            )
    return blocks.gated_ffn(cfg, width, cfg.int("intermediate_size"))
