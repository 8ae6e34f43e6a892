"""Pure state-space models: Mamba (and Falcon-Mamba) and Mamba2, one mixer block per layer."""

from __future__ import annotations

from latprof.config_hf import blocks
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec


def mamba_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    expand = cfg.int("expand", default=2)
    inner = cfg.opt_int("intermediate_size")
    if inner is not None and inner != expand * width:
        if inner % width:
            raise cfg.error(f"intermediate_size {inner} is not a multiple of hidden_size {width}")
        expand = inner // width
    dt_rank = cfg.opt_int("time_step_rank")  # "auto" -> ceil(width / 16), the spec's default
    spec = cfg.spec(
        "mamba",
        width,
        expand=expand,
        d_state=cfg.int("state_size", default=16),
        d_conv=cfg.int("conv_kernel", default=4),
        dt_rank=dt_rank,
    )
    return [spec] * blocks.layer_count(cfg)


def mamba2_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    head_dim = cfg.int("head_dim", default=64)
    expand = cfg.int("expand", default=2)
    heads = cfg.opt_int("num_heads") or expand * width // head_dim
    if heads * head_dim != expand * width:
        raise cfg.error(
            f"num_heads {heads} x head_dim {head_dim} != expand {expand} x "
            f"hidden_size {width}: the Mamba2 inner sizes disagree"
        )
    spec = blocks.mamba2_from_heads(
        cfg,
        width,
        heads,
        head_dim,
        cfg.int("state_size", default=128),
        cfg.int("n_groups", default=1),
        cfg.int("conv_kernel", default=4),
    )
    return [spec] * blocks.layer_count(cfg)
