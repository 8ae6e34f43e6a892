"""NVIDIA's hybrids: Nemotron-H (pattern string of Mamba2 / attention / MLP / MoE blocks) and
Nemotron-Flash (`layer_types` of DeltaNet / Mamba2 / attention / FFN)."""

from __future__ import annotations

from collections.abc import Callable

from latprof.config_hf import blocks
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

NEMOTRON_H_CHARS = {"M": "Mamba2", "*": "attention", "-": "MLP", "E": "MoE"}


def nemotron_h_layers(cfg: HFConfig) -> list[OpSpec]:
    """`hybrid_override_pattern`: one character per block (M Mamba2, * attention, - MLP, E MoE)."""
    width = cfg.int("hidden_size")
    pattern = cfg.data.get("hybrid_override_pattern")
    if not isinstance(pattern, str) or not pattern:
        raise cfg.error("required field 'hybrid_override_pattern' is missing or empty")
    n = cfg.int("num_hidden_layers", default=len(pattern))
    if n != len(pattern):
        raise cfg.error(f"hybrid_override_pattern has {len(pattern)} blocks, num_hidden_layers {n}")
    bad = sorted(set(pattern) - set(NEMOTRON_H_CHARS))
    if bad:
        valid = ", ".join(f"{c!r} {what}" for c, what in NEMOTRON_H_CHARS.items())
        raise cfg.error(f"hybrid_override_pattern has unknown block(s) {bad}; valid: {valid}")
    blocks.require_flag(cfg, "use_bias", False, "biases on Mamba2's in_proj / out_proj")
    blocks.require_flag(cfg, "use_conv_bias", True, "the depthwise conv's bias")
    blocks.require_flag(cfg, "attention_bias", False, "biases on the attention projections")
    blocks.require_flag(cfg, "mlp_bias", False, "biases on the MLP projections")
    if cfg.data.get("moe_latent_size") is not None:
        raise cfg.error(
            f"moe_latent_size={cfg.data['moe_latent_size']}: MoE experts in a latent space "
            "(projections in and out of it) are not modelled by latprof's moe operator"
        )
    built: dict[str, OpSpec] = {}
    for char in dict.fromkeys(pattern):
        if char == "M":
            heads = cfg.int("mamba_num_heads")
            built[char] = blocks.mamba2_from_heads(
                cfg,
                width,
                heads,
                cfg.int("mamba_head_dim"),
                cfg.int("ssm_state_size", default=128),
                cfg.int("n_groups", default=1),
                cfg.int("conv_kernel", default=4),
            )
        elif char == "*":
            built[char] = blocks.attention(cfg, width, head_dim_key="attention_head_dim")
        elif char == "-":
            built[char] = blocks.plain_ffn(
                cfg, width, cfg.int("intermediate_size"), cfg.data.get("mlp_hidden_act", "relu2")
            )
        else:
            shared = cfg.int("moe_shared_expert_intermediate_size", default=0, minimum=0)
            shared *= cfg.int("n_shared_experts", default=1, minimum=0)
            built[char] = blocks.moe(
                cfg,
                width,
                cfg.int("n_routed_experts"),
                cfg.int("num_experts_per_tok"),
                cfg.int("moe_intermediate_size"),
                shared,
                activation=cfg.data.get("mlp_hidden_act", "relu2"),
            )
    return [built[c] for c in pattern]


def nemotron_flash_layers(cfg: HFConfig) -> list[OpSpec]:
    """Nemotron-Flash (arXiv 2511.18890): `layer_types` of deltanet, m / m2 (Mamba2), a
    (attention), f (FFN).  As in NVIDIA's modelling code, a mixer layer also carries an FFN when
    intermediate_size > 0; `ffn_expand_ratio`, when set, gives the FFN size (rounded down to 128).
    """
    width = cfg.int("hidden_size")
    types = cfg.str_list("layer_types")
    if not types:
        raise cfg.error("required field 'layer_types' is missing or empty")
    n = cfg.int("num_hidden_layers", default=len(types))
    if n != len(types):
        raise cfg.error(f"layer_types has {len(types)} entries, num_hidden_layers {n}")
    inner = cfg.int("intermediate_size", default=0, minimum=0)
    ratio = cfg.number("ffn_expand_ratio")
    ffn_dim = int(ratio * width) // 128 * 128 if ratio else inner
    act = cfg.data.get("mlp_hidden_act", "silu")
    heads = cfg.int("num_attention_heads")

    def ffn() -> OpSpec:
        if ffn_dim <= 0:
            raise cfg.error("an 'f' layer needs intermediate_size or ffn_expand_ratio")
        if act == "silu":
            return cfg.spec("ffn", width, ffn_dim=ffn_dim, activation="swiglu")
        return blocks.plain_ffn(cfg, width, ffn_dim, act)

    def attention() -> OpSpec:
        attn_width = cfg.opt_int("attn_hidden_size") or width
        head_dim = attn_width // heads
        kq = cfg.opt_int("kq_head_dim") or head_dim
        v = cfg.opt_int("v_head_dim") or head_dim
        if kq != v:
            raise cfg.error(
                f"kq_head_dim {kq} != v_head_dim {v}: latprof's attention has one "
                "head_dim for keys and values"
            )
        return cfg.spec(
            "attention",
            width,
            heads=heads,
            kv_heads=cfg.int("num_key_value_heads", default=heads),
            head_dim=kq,
            qk_norm=cfg.data.get("kq_norm", "none") == "rms",
        )

    def mamba2() -> OpSpec:
        return cfg.spec(
            "mamba2",
            width,
            expand=cfg.int("mamba_expand", default=2),
            head_dim=cfg.int("mamba2_headdim", default=64),
            d_state=cfg.int("mamba_d_state", default=128),
            n_groups=1,
            d_conv=cfg.int("mamba_d_conv", default=4),
        )

    def deltanet() -> OpSpec:
        if width % heads:
            raise cfg.error(f"hidden_size {width} not divisible by num_attention_heads {heads}")
        return cfg.spec("deltanet", width, heads=heads, head_dim=width // heads)

    makers: dict[str, Callable[[], OpSpec]] = {
        "deltanet": deltanet,
        "m": mamba2,
        "m2": mamba2,
        "a": attention,
        "f": ffn,
    }
    built: dict[str, OpSpec] = {}
    layers: list[OpSpec] = []
    for t in types:
        if t not in makers:
            raise cfg.error(f"layer_types entry {t!r} is unknown; valid: {', '.join(makers)}")
        if t not in built:
            built[t] = makers[t]()
        layers.append(built[t])
        if t != "f" and inner > 0:
            if "f" not in built:
                built["f"] = ffn()
            layers.append(built["f"])
    if cfg.data.get("sliding_window"):
        cfg.note(
            f"sliding_window={cfg.data['sliding_window']} (outside global_attn_idx) is not "
            "modelled: attention layers are counted as full attention"
        )
    return layers
