"""Operator blocks shared by several config.json families: attention, MLPs, MoE, Mamba2."""

from __future__ import annotations

import latprof.registry
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec


def layer_count(cfg: HFConfig) -> int:
    return cfg.int("num_hidden_layers")


def require_flag(cfg: HFConfig, key: str, supported: bool, what: str) -> None:
    """A boolean field latprof models only at one value: the other is an error naming it."""
    value = cfg.data.get(key, supported)
    if not isinstance(value, bool):
        raise cfg.error(f"{key} must be true or false, got {value!r}")
    if value != supported:
        raise cfg.error(
            f"{key}={str(value).lower()} ({what}) is not modelled by latprof's operators; "
            f"only {key}={str(supported).lower()} is supported"
        )


def attention(
    cfg: HFConfig,
    width: int,
    qk_norm: bool = False,
    head_dim_key: str = "head_dim",
    **variant: bool,
) -> OpSpec:
    """Softmax attention; an explicit head_dim field wins over hidden_size / heads; `variant`:
    qkv_bias / out_gate / qk_norm_full / post_norm (see latprof.specs.attention)."""
    heads = cfg.int("num_attention_heads")
    kv_heads = cfg.int("num_key_value_heads", default=heads)
    head_dim = cfg.opt_int(head_dim_key, "head_dim")
    if head_dim is None:
        if width % heads:
            raise cfg.error(
                f"hidden_size {width} is not divisible by num_attention_heads {heads}, and no "
                f"{head_dim_key} field says otherwise"
            )
        head_dim = width // heads
    return cfg.spec(
        "attention",
        width,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        qk_norm=qk_norm,
        **variant,
    )


def gated_ffn(cfg: HFConfig, width: int, ffn_dim: int, act_key: str = "hidden_act") -> OpSpec:
    """Gated MLP, counted as SwiGLU whatever the gate activation (a note says so)."""
    act = cfg.data.get(act_key, "silu")
    if act not in ("silu", "swish"):
        cfg.note(f"{act_key}={act!r}: the gated MLP is counted as swiglu (same matmuls)")
    return cfg.spec("ffn", width, ffn_dim=ffn_dim, activation="swiglu")


def plain_ffn(cfg: HFConfig, width: int, ffn_dim: int, act: str) -> OpSpec:
    """Non-gated MLP (up, activation, down)."""
    if act not in ("relu2", "gelu"):
        raise cfg.error(
            f"non-gated MLP activation {act!r}: latprof's ffn operator has relu2 and gelu"
        )
    return cfg.spec("ffn", width, ffn_dim=ffn_dim, activation=act)


def moe(
    cfg: HFConfig,
    width: int,
    experts: int,
    top_k: int,
    expert_dim: int,
    shared_expert_dim: int = 0,
    activation: str = "swiglu",
    shared_gate: bool = False,
) -> OpSpec:
    """MoE FFN; needs the `moe` operator family in the registry."""
    if "moe" not in latprof.registry.OPERATORS:
        raise cfg.error(
            "this model has MoE FFN layers, and latprof has no 'moe' operator family yet "
            f"(operators: {', '.join(latprof.registry.OPERATORS)})"
        )
    extra = {}
    if activation != "swiglu":  # only families whose experts are not SwiGLU name it
        extra["activation"] = activation
    if shared_gate:
        extra["shared_gate"] = True
    return cfg.spec(
        "moe",
        width,
        experts=experts,
        top_k=top_k,
        expert_dim=expert_dim,
        shared_expert_dim=shared_expert_dim,
        **extra,
    )


def mamba2_from_heads(
    cfg: HFConfig,
    width: int,
    heads: int,
    head_dim: int,
    d_state: int,
    n_groups: int,
    d_conv: int,
    **variant: bool,
) -> OpSpec:
    """Mamba2 of `heads` x `head_dim` channels, whatever its ratio to the width; `variant`:
    gated_norm / pre_norm (see latprof.specs.mamba2)."""
    return cfg.spec(
        "mamba2",
        width,
        inner=heads * head_dim,
        head_dim=head_dim,
        d_state=d_state,
        n_groups=n_groups,
        d_conv=d_conv,
        **variant,
    )
