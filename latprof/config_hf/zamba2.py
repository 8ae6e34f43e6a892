"""Zamba2 (Zyphra; transformers' Zamba2Config / Zamba2Model): Mamba2 layers, and at each hybrid
layer a shared transformer block on concat(hidden, embedding output) before that layer's Mamba2.

Layout, as `Zamba2Model.get_layers` builds it: `layers_block_type` (alias `layer_types`) lists
"mamba" / "linear_attention" (a Mamba2 layer) or "hybrid" (the shared block, then a Mamba2
layer).  There are `num_mem_blocks` distinct shared blocks, cycled over the hybrid layers in
order: hybrid layer k (counted from 0) uses block k mod num_mem_blocks, so every hybrid layer
from the num_mem_blocks-th on reuses the weights of the first use of its block; the loader
records those weight ties.  Each hybrid layer has its own adapters, linear and KV cache (see
latprof.specs.shared_attention).

Shapes: the shared attention reads 2 hidden_size channels, head_dim = 2 hidden_size //
num_attention_heads; the MLP is gated (hidden_act: gelu, the class default, or silu) of
intermediate_size (default 4 hidden_size); LoRA-style adapters of adapter_rank on its gate / up
always, and on q, k, v with use_shared_attention_adapter; RoPE with use_mem_rope.  Mamba2:
n_mamba_heads heads of mamba_expand x hidden_size / n_mamba_heads channels, mamba_d_state,
mamba_ngroups, mamba_d_conv, a conv bias and a grouped gated norm.
"""

from __future__ import annotations

from latprof.config_hf import blocks
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

#: Zamba2Config's default layers_block_type (54 layers), where a config.json leaves it out
DEFAULT_BLOCK_TYPES = (
    ["mamba"]
    + (["mamba"] * 5 + ["hybrid"]) * 7
    + ["mamba"] * 4
    + ["hybrid"]
    + ["mamba"] * 3
    + ["hybrid"]
    + ["mamba"] * 2
)
MAMBA_TYPES = ("mamba", "linear_attention")  # the legacy name and transformers' newer one
#: hidden_act -> the shared MLP's gated activation
ACTIVATIONS = {"gelu": "geglu", "silu": "swiglu", "swish": "swiglu"}
#: max_position_embeddings with use_long_context (Zamba2Config sets it so)
LONG_CONTEXT_POSITIONS = 16384


def zamba2_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    types = _block_types(cfg, blocks.layer_count(cfg))
    blocks.require_flag(
        cfg, "add_bias_linear", False, "biases on Mamba2's in_proj / out_proj and the shared MLP"
    )
    conv_bias = cfg.data.get("use_conv_bias", True)
    if conv_bias is not True:
        cfg.note(
            f"use_conv_bias={conv_bias!r}: transformers' Zamba2MambaMixer builds its conv bias "
            "whatever this field says; counted with the bias"
        )
    long_context = cfg.data.get("use_long_context", False)
    if not isinstance(long_context, bool):
        raise cfg.error(f"use_long_context must be true or false, got {long_context!r}")
    if long_context:  # RoPE rescaled (no shape) and the trained length extended
        cfg.max_positions = LONG_CONTEXT_POSITIONS
    mamba = _mamba2(cfg, width)
    shared = _shared_attention(cfg, width) if "hybrid" in types else None
    mem_blocks = cfg.int("num_mem_blocks", default=1)
    layers: list[OpSpec] = []
    owners: list[int] = []  # layer index of each distinct shared block's first use
    hybrid = 0  # hybrid layers so far
    for t in types:
        if t == "hybrid":
            if hybrid < mem_blocks:
                owners.append(len(layers))
            else:  # block hybrid mod num_mem_blocks, as get_layers cycles them
                cfg.tie(len(layers), owners[hybrid % mem_blocks])
            hybrid += 1
            layers.append(shared)
        layers.append(mamba)
    if cfg.weight_ties and cfg.data.get("tie_word_embeddings", True) is False:
        cfg.note(
            "tie_word_embeddings=false: transformers (5.24) then ties none of its tied weights, "
            "the shared blocks included; latprof counts them shared, as the architecture has them"
        )
    if shared is not None:
        cfg.note(
            "Zamba2 adds the shared block's output to its Mamba2 layer's input only; latprof "
            "adds it to the residual stream (a residual block), the same work per step"
        )
    return layers


def _block_types(cfg: HFConfig, n: int) -> list[str]:
    types = cfg.str_list("layers_block_type")
    alias = cfg.str_list("layer_types")
    if types is not None and alias is not None and types != alias:
        raise cfg.error("layers_block_type and layer_types disagree; give one of them")
    types = types if types is not None else alias
    if types is None:
        types = list(DEFAULT_BLOCK_TYPES)
    if len(types) != n:
        raise cfg.error(f"layers_block_type has {len(types)} entries, num_hidden_layers {n}")
    valid = (*MAMBA_TYPES, "hybrid")
    for t in types:
        if t not in valid:
            raise cfg.error(f"layers_block_type entry {t!r} is unknown; valid: {', '.join(valid)}")
    return types


def _mamba2(cfg: HFConfig, width: int) -> OpSpec:
    """Zamba2MambaMixer: inner size mamba_expand x width in n_mamba_heads heads."""
    d_inner = cfg.int("mamba_expand", default=2) * width
    heads = cfg.int("n_mamba_heads", default=8)
    if d_inner % heads:
        raise cfg.error(
            f"n_mamba_heads {heads} does not divide the Mamba2 inner size {d_inner} "
            "(mamba_expand x hidden_size): the heads would not tile it"
        )
    return blocks.mamba2_from_heads(
        cfg,
        width,
        heads,
        d_inner // heads,
        cfg.int("mamba_d_state", default=64),
        cfg.int("mamba_ngroups", default=1),
        cfg.int("mamba_d_conv", default=4),
    )


def _shared_attention(cfg: HFConfig, width: int) -> OpSpec:
    """Zamba2AttentionDecoderLayer + Zamba2HybridLayer.linear, one use."""
    heads = cfg.int("num_attention_heads", default=32)
    kv_heads = cfg.int("num_key_value_heads", default=heads)
    head_dim = 2 * width // heads
    if head_dim < 1:
        raise cfg.error(f"num_attention_heads {heads} is more than 2 x hidden_size {width}")
    adapters = cfg.data.get("use_shared_attention_adapter", False)
    if not isinstance(adapters, bool):
        raise cfg.error(f"use_shared_attention_adapter must be true or false, got {adapters!r}")
    if adapters and (heads * head_dim != 2 * width or kv_heads != heads):
        raise cfg.error(
            "use_shared_attention_adapter=true with num_attention_heads "
            f"{heads} / num_key_value_heads {kv_heads}: transformers adds 2 x hidden_size "
            "adapter outputs to q, k and v, which then have "
            f"{heads * head_dim} / {kv_heads * head_dim} channels, so this model cannot run"
        )
    act = cfg.data.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise cfg.error(
            f"hidden_act {act!r}: latprof's shared_attention MLP has the gated "
            f"{', '.join(ACTIVATIONS)} activations"
        )
    rope = cfg.data.get("use_mem_rope", False)
    if not isinstance(rope, bool):
        raise cfg.error(f"use_mem_rope must be true or false, got {rope!r}")
    return cfg.spec(
        "shared_attention",
        width,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn_dim=cfg.opt_int("intermediate_size") or 4 * width,
        adapter_rank=cfg.int("adapter_rank", default=128),
        attention_adapters=adapters,
        rope=rope,
        activation=ACTIVATIONS[act],
    )
