"""Hybrids of attention with Gated DeltaNet (Qwen3-Next), Mamba2 (Falcon-H1, Bamba, Granite 4.0)
or Mamba (Jamba), with dense or MoE FFNs."""

from __future__ import annotations

import math
from collections.abc import Callable

from latprof.config_hf import blocks
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec


def qwen3_next_layers(cfg: HFConfig) -> list[OpSpec]:
    """Gated DeltaNet with full attention every `full_attention_interval` layers; MoE FFN."""
    width = cfg.int("hidden_size")
    n = blocks.layer_count(cfg)
    types = cfg.str_list("layer_types")
    if types is None:
        interval = cfg.int("full_attention_interval", default=4)
        types = [
            "full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n)
        ]
    if len(types) != n:
        raise cfg.error(f"layer_types has {len(types)} entries, num_hidden_layers {n}")
    key_heads = cfg.int("linear_num_key_heads")
    key_dim = cfg.int("linear_key_head_dim")
    value_heads = cfg.int("linear_num_value_heads", default=key_heads)
    value_dim = value_heads * cfg.int("linear_value_head_dim", default=key_dim)
    if value_dim % (key_heads * key_dim):
        raise cfg.error(
            f"value size {value_dim} is not a multiple of key size {key_heads * key_dim}; "
            "latprof's gated_deltanet needs an integer expand_v"
        )
    gdn = cfg.spec(
        "gated_deltanet",
        width,
        heads=key_heads,
        head_dim=key_dim,
        expand_v=value_dim // (key_heads * key_dim),
        d_conv=cfg.int("linear_conv_kernel_dim", default=4),
        v_heads=value_heads,
    )
    blocks.require_flag(cfg, "attention_bias", False, "biases on the attention projections")
    attention = blocks.attention(cfg, width, qk_norm=True, out_gate=True)
    mixers = {"linear_attention": gdn, "full_attention": attention}
    experts = cfg.int("num_experts", default=0, minimum=0)
    step = cfg.int("decoder_sparse_step", default=1)
    dense_only = cfg.int_list("mlp_only_layers")
    shared = cfg.int("shared_expert_intermediate_size", default=0, minimum=0)
    layers: list[OpSpec] = []
    for i, t in enumerate(types):
        if t not in mixers:
            raise cfg.error(f"layer_types entry {t!r} is unknown; valid: {', '.join(mixers)}")
        layers.append(mixers[t])
        if experts and (i + 1) % step == 0 and i not in dense_only:
            layers.append(
                blocks.moe(
                    cfg,
                    width,
                    experts,
                    cfg.int("num_experts_per_tok"),
                    cfg.int("moe_intermediate_size"),
                    shared,
                    shared_gate=shared > 0,
                )
            )
        else:
            layers.append(blocks.gated_ffn(cfg, width, cfg.int("intermediate_size")))
    return layers


def _mamba2_from_mamba_fields(cfg: HFConfig, width: int, **variant: bool) -> OpSpec:
    """Mamba2 of the falcon_h1 / bamba / granitemoehybrid configs (mamba_* fields).  The inner
    size is mamba_d_ssm (or mamba_expand x width) as given, any multiple of the head size."""
    blocks.require_flag(cfg, "mamba_conv_bias", True, "the depthwise conv's bias")
    blocks.require_flag(cfg, "mamba_proj_bias", False, "biases on in_proj / out_proj")
    d_inner = cfg.opt_int("mamba_d_ssm") or cfg.int("mamba_expand", default=2) * width
    heads = cfg.int("mamba_n_heads")
    head_dim = cfg.opt_int("mamba_d_head") or d_inner // heads
    if heads * head_dim != d_inner:
        raise cfg.error(
            f"mamba_n_heads {heads} x mamba_d_head {head_dim} != Mamba2 inner size {d_inner}"
        )
    return blocks.mamba2_from_heads(
        cfg,
        width,
        heads,
        head_dim,
        cfg.int("mamba_d_state", default=256),
        cfg.int("mamba_n_groups", default=1),
        cfg.int("mamba_d_conv", default=4),
        **variant,
    )


def falcon_h1_layers(cfg: HFConfig) -> list[OpSpec]:
    """Every layer runs attention and Mamba2 side by side on one normalised input, then an MLP:
    counted as attention (holding the shared norm), Mamba2 without a norm of its own, the MLP.
    Falcon-H1's muP multipliers (embedding, key, attention / SSM in and out, MLP, LM head, the
    per-channel ssm_multipliers) are scalars or a fixed buffer: no parameters."""
    width = cfg.int("hidden_size")
    blocks.require_flag(cfg, "attention_bias", False, "biases on the attention projections")
    blocks.require_flag(cfg, "projectors_bias", False, "a bias on Mamba2's out_proj")
    blocks.require_flag(cfg, "mlp_bias", False, "biases on the MLP projections")
    attention = blocks.attention(cfg, width)
    gated_norm = cfg.data.get("mamba_rms_norm", False)
    if not isinstance(gated_norm, bool):
        raise cfg.error(f"mamba_rms_norm must be true or false, got {gated_norm!r}")
    if gated_norm and cfg.data.get("mamba_norm_before_gate", False):
        cfg.note("mamba_norm_before_gate: the gated norm is timed as norm(y * silu(z))")
    mamba = _mamba2_from_mamba_fields(cfg, width, gated_norm=gated_norm, pre_norm=False)
    ffn = blocks.gated_ffn(cfg, width, cfg.int("intermediate_size"))
    cfg.note(
        "Falcon-H1 runs attention and Mamba2 in parallel on one norm: counted as attention "
        "then Mamba2 without its own norm (two consecutive operator blocks, two residual adds)"
    )
    return [attention, mamba, ffn] * blocks.layer_count(cfg)


def bamba_layers(cfg: HFConfig) -> list[OpSpec]:
    """Attention at `attn_layer_indices`, Mamba2 elsewhere; a gated MLP after each."""
    width = cfg.int("hidden_size")
    attention_at = set(cfg.int_list("attn_layer_indices"))
    blocks.require_flag(cfg, "attention_bias", False, "biases on the attention projections")
    attention, mamba = blocks.attention(cfg, width), _mamba2_from_mamba_fields(cfg, width)
    ffn = blocks.gated_ffn(cfg, width, cfg.int("intermediate_size"))
    layers: list[OpSpec] = []
    for i in range(blocks.layer_count(cfg)):
        layers += [attention if i in attention_at else mamba, ffn]
    return layers


def granite_hybrid_layers(cfg: HFConfig) -> list[OpSpec]:
    """Granite 4.0 hybrids: `layer_types` mamba / attention; FFN = MoE plus a shared MLP, or
    the shared MLP alone when num_local_experts is 0."""
    width = cfg.int("hidden_size")
    n = blocks.layer_count(cfg)
    types = cfg.str_list("layer_types") or ["mamba"] * n
    if len(types) != n:
        raise cfg.error(f"layer_types has {len(types)} entries, num_hidden_layers {n}")
    mixers: dict[str, Callable[[], OpSpec]] = {
        "mamba": lambda: _mamba2_from_mamba_fields(cfg, width),
        "attention": lambda: blocks.attention(cfg, width),
    }
    experts = cfg.int("num_local_experts", default=0, minimum=0)
    shared = cfg.int("shared_intermediate_size", default=0, minimum=0)
    if experts:
        ffn = blocks.moe(
            cfg,
            width,
            experts,
            cfg.int("num_experts_per_tok"),
            cfg.int("intermediate_size"),
            shared,
        )
    else:
        ffn = blocks.gated_ffn(cfg, width, shared or cfg.int("intermediate_size"))
    built: dict[str, OpSpec] = {}
    layers: list[OpSpec] = []
    for t in types:
        if t not in mixers:
            raise cfg.error(f"layer_types entry {t!r} is unknown; valid: {', '.join(mixers)}")
        layers += [built.setdefault(t, mixers[t]()), ffn]
    return layers


def jamba_layers(cfg: HFConfig) -> list[OpSpec]:
    """Jamba: attention every attn_layer_period layers (at attn_layer_offset), Mamba elsewhere;
    MoE FFN every expert_layer_period layers (at expert_layer_offset), a dense MLP elsewhere."""
    width = cfg.int("hidden_size")
    a_period, a_offset = cfg.int("attn_layer_period", 8), cfg.int("attn_layer_offset", 4, 0)
    e_period, e_offset = cfg.int("expert_layer_period", 2), cfg.int("expert_layer_offset", 1, 0)
    experts = cfg.int("num_experts", default=16)
    mamba = cfg.spec(
        "mamba",
        width,
        expand=cfg.int("mamba_expand", default=2),
        d_state=cfg.int("mamba_d_state", default=16),
        d_conv=cfg.int("mamba_d_conv", default=4),
        dt_rank=cfg.opt_int("mamba_dt_rank") or math.ceil(width / 16),
        dt_norms=True,  # Jamba's mixer normalises dt, B and C after x_proj
    )
    blocks.require_flag(cfg, "mamba_conv_bias", True, "the depthwise conv's bias")
    blocks.require_flag(cfg, "mamba_proj_bias", False, "biases on in_proj / out_proj")
    attention = blocks.attention(cfg, width)
    dense = blocks.gated_ffn(cfg, width, cfg.int("intermediate_size"))
    layers: list[OpSpec] = []
    for i in range(blocks.layer_count(cfg)):
        layers.append(attention if i % a_period == a_offset else mamba)
        if experts > 1 and i % e_period == e_offset:
            layers.append(
                blocks.moe(
                    cfg,
                    width,
                    experts,
                    cfg.int("num_experts_per_tok"),
                    cfg.int("intermediate_size"),
                )
            )
        else:
            layers.append(dense)
    return layers
