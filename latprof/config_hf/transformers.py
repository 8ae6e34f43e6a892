"""Plain decoder-only transformers: every layer is attention then a gated MLP or an MoE FFN."""

from __future__ import annotations

from latprof.config_hf import blocks, windows
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

#: model types whose layers are (attention, gated MLP or MoE); value: q/k norm per head
TRANSFORMERS = {
    "llama": False,
    "mistral": False,
    "qwen2": False,
    "qwen3": True,
    "olmo": False,  # non-parametric norms: config_hf.NONPARAMETRIC_NORMS
    "olmo2": True,
    "granite": False,
    "smollm3": False,
    "phi3": False,
    "mixtral": False,
    "qwen2_moe": False,
    "qwen3_moe": True,
}


#: model types whose q, k and v projections always carry biases (no config field for it)
QKV_BIAS = {"qwen2"}


def transformer_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    mt = cfg.model_type
    if mt not in ("qwen2", "qwen2_moe"):  # their q/k/v biases are fixed or `qkv_bias`
        blocks.require_flag(cfg, "attention_bias", False, "biases on the attention projections")
    blocks.require_flag(cfg, "mlp_bias", False, "biases on the MLP projections")
    qkv_bias = mt in QKV_BIAS
    if mt == "qwen2_moe":
        qkv_bias = cfg.data.get("qkv_bias", True)
        if not isinstance(qkv_bias, bool):
            raise cfg.error(f"qkv_bias must be true or false, got {qkv_bias!r}")
    variant = {"qkv_bias": qkv_bias, "qk_norm_full": mt == "olmo2"}
    attention = blocks.attention(cfg, width, qk_norm=TRANSFORMERS[mt], **variant)
    n = blocks.layer_count(cfg)
    mixers = windows.attention_layers(cfg, attention, n)
    _position_notes(cfg)
    layers: list[OpSpec] = []
    for i in range(n):
        layers += [mixers[i], _ffn(cfg, width, i)]
    return layers


def _position_notes(cfg: HFConfig) -> None:
    """Rotary details that change no shape and no cost latprof models (a rotation of the q and
    k of a layer is a few elementwise ops): said, not hidden."""
    factor = cfg.data.get("partial_rotary_factor")
    if factor not in (None, 1, 1.0):
        cfg.note(f"partial_rotary_factor={factor}: RoPE is timed on the whole head (same shapes)")
    no_rope = cfg.data.get("no_rope_layers")
    if no_rope is None and cfg.model_type == "smollm3":  # SmolLM3: NoPE every interval-th layer
        interval = cfg.int("no_rope_layer_interval", default=4)
        no_rope = [int((i + 1) % interval != 0) for i in range(blocks.layer_count(cfg))]
    if isinstance(no_rope, list) and 0 in no_rope:
        cfg.note(
            f"{no_rope.count(0)} of {len(no_rope)} layers use no RoPE (NoPE); they are timed "
            "with RoPE (same shapes and cache)"
        )


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
                shared_gate=mt == "qwen2_moe" and shared > 0,
            )
    return blocks.gated_ffn(cfg, width, cfg.int("intermediate_size"))
