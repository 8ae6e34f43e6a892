"""Kimi Linear (`kimi_linear`, Moonshot AI): Kimi Delta Attention layers with a full-attention
MLA layer every few layers, each followed by a dense SwiGLU MLP (the first
`first_k_dense_replace` layers) or a DeepSeek-V3-style MoE with shared experts.

Layer layout: `linear_attn_config.full_attn_layers` / `kda_layers`, which the checkpoints number
from 1, or an explicit `layer_types` ("full_attention" / "linear_attention"), or, with neither,
transformers' default (full attention at every layer i > 0 with i % 4 == 0).  KDA's heads, head
size and conv taps come from `linear_attn_config` (`num_heads`, `head_dim`,
`short_conv_kernel_size`) or from the top-level `linear_num_heads`, `linear_head_dim`,
`linear_conv_kernel_dim` that transformers writes; its forget and output gates are low rank,
rank `head_dim` (transformers' KimiLinearDeltaAttention).  The MLA layers take the DeepSeek
fields; `mla_use_nope` (the published models: true) leaves the rope-sized key part unrotated.

Routing (sigmoid scores plus a correction bias, grouped top-k, a scaling factor) changes no
shape: the MoE is timed with latprof's softmax top-k router over the same logits, and a note
says so.  Fields of the Kimi K3 text models that change the work (an MLA output gate, latent
MoE experts, attention residual blocks, full-rank KDA gates, another activation) are errors
naming the field.
"""

from __future__ import annotations

from typing import Any

from latprof.config_hf import blocks
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

LAYER_TYPES = ("linear_attention", "full_attention")

#: fields of the Kimi K3 text config whose structure latprof's operators do not model, with
#: the values at which they change nothing (absent is always harmless)
UNMODELLED = {
    "mla_use_output_gate": ((False,), "a gate on the MLA output"),
    "use_full_rank_gate": ((False,), "full-rank KDA forget / output gates"),
    "routed_expert_hidden_size": ((), "latent MoE experts (a projection to a smaller width)"),
    "attn_res_block_size": ((), "attention-residual blocks across layers"),
    "latent_moe_use_norm": ((False,), "latent MoE experts"),
}


def kimi_linear_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    _refuse_unmodelled(cfg)
    types = _layer_types(cfg)
    linear = _linear_attn_config(cfg)
    head_dim = _sub_int(cfg, linear, "head_dim", "linear_head_dim", 128)
    kda = cfg.spec(
        "kda",
        width,
        heads=_sub_int(cfg, linear, "num_heads", "linear_num_heads", 32),
        head_dim=head_dim,
        d_conv=_sub_int(cfg, linear, "short_conv_kernel_size", "linear_conv_kernel_dim", 4),
        gate_rank=head_dim,
    )
    if linear.get("gate_lower_bound") is not None:
        cfg.note(
            f"linear_attn_config.gate_lower_bound={linear['gate_lower_bound']}: a clamp of the "
            "KDA forget gate, elementwise, not timed"
        )
    mixers = {"linear_attention": kda, "full_attention": _mla(cfg, width)}
    dense, sparse = _mlps(cfg, width)
    first_dense = cfg.int("first_k_dense_replace", default=1, minimum=0)
    mlp_types = cfg.str_list("mlp_layer_types") or [
        "dense" if i < first_dense else "sparse" for i in range(len(types))
    ]
    if len(mlp_types) != len(types):
        raise cfg.error(
            f"mlp_layer_types has {len(mlp_types)} entries, num_hidden_layers {len(types)}"
        )
    mlps = {"dense": dense, "sparse": sparse}
    layers: list[OpSpec] = []
    for t, m in zip(types, mlp_types, strict=True):
        if m not in mlps:
            raise cfg.error(f"mlp_layer_types entry {m!r} is unknown; valid: dense, sparse")
        layers += [mixers[t], mlps[m]]
    return layers


def _refuse_unmodelled(cfg: HFConfig) -> None:
    linear = _linear_attn_config(cfg)
    for key, (harmless, what) in UNMODELLED.items():
        value = cfg.data.get(key, linear.get(key))
        if value is not None and value not in harmless:
            raise cfg.error(
                f"{key}={value!r} ({what}) is not modelled by latprof's operators; "
                "latprof loads Kimi Linear configs without it"
            )
    act = cfg.data.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise cfg.error(f"hidden_act={act!r}: latprof's Kimi Linear MLPs are SwiGLU (silu)")
    blocks.require_flag(cfg, "attention_bias", False, "biases on the MLA projections")
    # transformers' KimiLinearForCausalLM declares no tied weights: it would build an untied
    # LM head whatever the field says, so a tied one is refused rather than guessed
    blocks.require_flag(cfg, "tie_word_embeddings", False, "an LM head tied to the embedding")
    freq = cfg.int("moe_layer_freq", default=1)
    if freq != 1:
        raise cfg.error(
            f"moe_layer_freq={freq}: latprof (like transformers' KimiLinearConfig) places the MoE "
            "on every layer after first_k_dense_replace"
        )


def _linear_attn_config(cfg: HFConfig) -> dict[str, Any]:
    value = cfg.data.get("linear_attn_config") or {}
    if not isinstance(value, dict):
        raise cfg.error(f"linear_attn_config must be an object, got {type(value).__name__}")
    return value


def _sub_int(cfg: HFConfig, sub: dict[str, Any], key: str, top_key: str, default: int) -> int:
    """`linear_attn_config[key]`, else the top-level `top_key`, else `default`."""
    if key in sub:
        return HFConfig(sub, f"{cfg.source} linear_attn_config").int(key)
    return cfg.int(top_key, default=default)


def _layer_types(cfg: HFConfig) -> list[str]:
    n = blocks.layer_count(cfg)
    types = cfg.str_list("layer_types")
    linear = _linear_attn_config(cfg)
    if types is None and "full_attn_layers" in linear:
        sub = HFConfig(linear, f"{cfg.source} linear_attn_config")
        full = sub.int_list("full_attn_layers")
        kda = sub.int_list("kda_layers", default=[i for i in range(1, n + 1) if i not in full])
        numbered = sorted(full + kda)
        if numbered != list(range(1, n + 1)):
            raise cfg.error(
                "linear_attn_config.full_attn_layers and kda_layers must together number every "
                f"layer 1..{n} exactly once (the checkpoints count from 1)"
            )
        types = ["full_attention" if i + 1 in full else "linear_attention" for i in range(n)]
    if types is None:
        types = ["full_attention" if i and i % 4 == 0 else "linear_attention" for i in range(n)]
    if len(types) != n:
        raise cfg.error(f"layer_types has {len(types)} entries, num_hidden_layers {n}")
    bad = sorted(set(types) - set(LAYER_TYPES))
    if bad:
        raise cfg.error(f"layer_types entries {bad} unknown; valid: {', '.join(LAYER_TYPES)}")
    return types


def _mla(cfg: HFConfig, width: int) -> OpSpec:
    nope = cfg.data.get("mla_use_nope", True)
    if not isinstance(nope, bool):
        raise cfg.error(f"mla_use_nope must be true or false, got {nope!r}")
    return cfg.spec(
        "mla",
        width,
        heads=cfg.int("num_attention_heads"),
        q_lora_rank=cfg.opt_int("q_lora_rank") or 0,
        kv_lora_rank=cfg.int("kv_lora_rank", default=512),
        qk_nope_head_dim=cfg.int("qk_nope_head_dim", default=128),
        qk_rope_head_dim=cfg.int("qk_rope_head_dim", default=64),
        v_head_dim=cfg.int("v_head_dim", default=128),
        rope=not nope,
    )


def _mlps(cfg: HFConfig, width: int) -> tuple[OpSpec, OpSpec]:
    """The dense MLP and the MoE (routed experts plus the shared ones, as one shared MLP)."""
    dense = cfg.spec("ffn", width, ffn_dim=cfg.int("intermediate_size", default=9216))
    expert_dim = cfg.int("moe_intermediate_size", default=1024)
    experts = _first_int(cfg, ("num_experts", "num_local_experts", "n_routed_experts"), 256)
    shared = _first_int(cfg, ("num_shared_experts", "n_shared_experts"), 1, minimum=0)
    sparse = blocks.moe(
        cfg,
        width,
        experts=experts,
        top_k=_first_int(cfg, ("num_experts_per_token", "num_experts_per_tok"), 8),
        expert_dim=expert_dim,
        shared_expert_dim=shared * expert_dim,
    )
    cfg.note(
        "MoE routing (sigmoid scores with a correction bias, grouped top-k, routed scaling) is "
        f"timed as latprof's softmax top-k over the same {experts} router logits"
    )
    return dense, sparse


def _first_int(cfg: HFConfig, keys: tuple[str, ...], default: int, minimum: int = 1) -> int:
    for key in keys:
        if cfg.data.get(key) is not None:
            return cfg.int(key, minimum=minimum)
    return default
