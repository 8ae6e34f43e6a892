"""LFM2 (`lfm2`, Liquid AI): gated short-conv layers interleaved with GQA attention layers
(per-head q / k RMSNorm), each followed by a SwiGLU MLP.

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
    ffn = cfg.spec("ffn", width, ffn_dim=lfm2_ffn_dim(cfg), activation="swiglu")
    layers: list[OpSpec] = []
    for t in types:
        layers += [conv if t == "conv" else attention, ffn]
    return layers
