"""Gemma 3 text models (`gemma3_text`, e.g. gemma-3-270m, gemma-3-1b): local sliding-window
layers and every `sliding_window_pattern`-th layer global; per-head q / k RMSNorm; four norms a
layer (input, post-attention, pre-feedforward, post-feedforward: latprof's attention and FFN
blocks each with a post-norm); a gated MLP with gelu (tanh) gating.  The embedding scale
sqrt(hidden_size), `query_pre_attn_scalar` and the two RoPE bases are scalars: no parameters,
the same work."""

from __future__ import annotations

from latprof.config_hf import blocks, windows
from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

GEMMA3_PATTERN = 6  # transformers' Gemma3TextConfig default


def gemma3_layers(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    blocks.require_flag(cfg, "attention_bias", False, "biases on the attention projections")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.data.get(key) is not None:
            cfg.note(f"{key}={cfg.data[key]}: a tanh soft-cap, a few elementwise ops, not timed")
    attention = blocks.attention(cfg, width, qk_norm=True, post_norm=True)
    n = blocks.layer_count(cfg)
    mixers = windows.attention_layers(cfg, attention, n, pattern_default=GEMMA3_PATTERN)
    act = cfg.data.get("hidden_activation", "gelu_pytorch_tanh")
    cfg.note(f"hidden_activation={act!r}: the gated MLP is timed as swiglu (same matmuls)")
    ffn = cfg.spec(
        "ffn", width, ffn_dim=cfg.int("intermediate_size"), activation="swiglu", post_norm=True
    )
    layers: list[OpSpec] = []
    for mixer in mixers:
        layers += [mixer, ffn]
    return layers
