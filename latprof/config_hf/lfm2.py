"""LFM2 (`lfm2`, Liquid AI): gated short-conv layers interleaved with GQA attention layers
(per-head q / k RMSNorm), each followed by a SwiGLU MLP.  LFM2-MoE (`lfm2_moe`): the same
operator layers, the first `num_dense_layers` with a dense SwiGLU MLP of `intermediate_size`
(taken as given, no adjustment), the others with a routed MoE of `num_experts` experts of
`moe_intermediate_size`, `num_experts_per_tok` per token, no shared expert.

Layers: `layer_types` ("conv" / "full_attention"), or `full_attn_idxs` (attention at those
indices, conv elsewhere), as transformers' Lfm2Config reads them.  The MLP size is
`intermediate_size` (`block_ff_dim` in older files), adjusted as transformers does when
`block_auto_adjust_ff_dim` is true: int(2 x size / 3), times `block_ffn_dim_multiplier`, rounded
up to `block_multiple_of`.
"""

from __future__ import annotations

from latprof.config_hf import blocks
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

LAYER_TYPES = ("conv", "full_attention")


def lfm2_ffn_dim(cfg: HFConfig) -> int:
    size = cfg.int("intermediate_size", default=None) or cfg.int("block_ff_dim")
    adjust = cfg.data.get("block_auto_adjust_ff_dim", True)
    if not isinstance(adjust, bool):
        raise cfg.error(f"block_auto_adjust_ff_dim must be true or false, got {adjust!r}")
    if not adjust:
        return size
    size = int(2 * size / 3)
    multiplier = cfg.data.get("block_ffn_dim_multiplier", 1.0)
    if multiplier is not None:
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            raise cfg.error(f"block_ffn_dim_multiplier must be a number, got {multiplier!r}")
        multiple = cfg.int("block_multiple_of", default=256)
        size = int(multiplier * size)
        size = multiple * ((size + multiple - 1) // multiple)
    return size


def lfm2_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    ffn = cfg.spec("ffn", width, ffn_dim=lfm2_ffn_dim(cfg), activation="swiglu")
    return [op for mixer in _mixers(cfg, width) for op in (mixer, ffn)]


def lfm2_moe_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    mixers = _mixers(cfg, width)
    dense_layers = cfg.int("num_dense_layers", default=2, minimum=0)
    if dense_layers > len(mixers):
        raise cfg.error(f"num_dense_layers={dense_layers} exceeds num_hidden_layers={len(mixers)}")
    dense = cfg.spec("ffn", width, ffn_dim=cfg.int("intermediate_size", default=7168))
    experts = cfg.int("num_experts", default=32)
    sparse = blocks.moe(
        cfg,
        width,
        experts=experts,
        top_k=cfg.int("num_experts_per_tok", default=4),
        expert_dim=cfg.int("moe_intermediate_size", default=1792),
    )
    if cfg.data.get("use_expert_bias", True):
        cfg.note(
            "use_expert_bias: sigmoid router scores plus a per-expert bias choose the experts; "
            f"the router is timed as softmax top-k over the same {experts} logits"
        )
    return [
        op
        for i, mixer in enumerate(mixers)
        for op in (mixer, dense if i < dense_layers else sparse)
    ]


def _mixers(cfg: HFConfig, width: int) -> list[OpSpec]:
    """The operator (short conv or attention) of every layer, in order."""
    n = blocks.layer_count(cfg)
    blocks.require_flag(cfg, "conv_bias", False, "biases on the short conv and its projections")
    types = cfg.str_list("layer_types")
    if types is None:
        attention_at = set(cfg.int_list("full_attn_idxs", default=list(range(n))))
        types = ["full_attention" if i in attention_at else "conv" for i in range(n)]
    if len(types) != n:
        raise cfg.error(f"layer_types has {len(types)} entries, num_hidden_layers {n}")
    bad = sorted(set(types) - set(LAYER_TYPES))
    if bad:
        raise cfg.error(f"layer_types entries {bad} unknown; valid: {', '.join(LAYER_TYPES)}")
    conv = cfg.spec("short_conv", width, d_conv=cfg.int("conv_L_cache", default=3))
    attention = blocks.attention(cfg, width, qk_norm=True)
    return [conv if t == "conv" else attention for t in types]
