"""Which attention layers of a config.json attend over a sliding window, and how wide it is.

transformers' conventions, in order:
- `layer_types`: one entry per layer, "sliding_attention" or "full_attention" (newer configs of
  every family write it out);
- Gemma 3: `sliding_window_pattern` N: every N-th layer (i + 1 divisible by N) is global, the
  others local;
- Qwen2 / Qwen3 / Qwen MoE: `use_sliding_window` true windows layers i >= `max_window_layers`;
- Mistral / Mixtral / Phi3 (no `use_sliding_window` field): a `sliding_window` windows every layer.
A window no shorter than `max_position_embeddings` can never be reached, so those layers are
full attention (a note says so).
"""

from __future__ import annotations

from latprof.config_hf.fields import HFConfig
from latprof.specs import OpSpec

LAYER_TYPES = ("full_attention", "sliding_attention")


def windowed_layers(cfg: HFConfig, n: int, pattern_default: int | None = None) -> list[bool]:
    """Per layer: does its attention use the sliding window?"""
    window = cfg.data.get("sliding_window")
    types = cfg.str_list("layer_types")
    if types is not None:
        if len(types) != n:
            raise cfg.error(f"layer_types has {len(types)} entries, num_hidden_layers {n}")
        bad = sorted(set(types) - set(LAYER_TYPES))
        if bad:
            raise cfg.error(f"layer_types entries {bad} unknown; valid: {', '.join(LAYER_TYPES)}")
        flags = [t == "sliding_attention" for t in types]
    elif pattern_default is not None:
        pattern = cfg.int("sliding_window_pattern", default=pattern_default)
        flags = [(i + 1) % pattern != 0 for i in range(n)]
    elif "use_sliding_window" in cfg.data:
        uses = cfg.data["use_sliding_window"]
        if not isinstance(uses, bool):
            raise cfg.error(f"use_sliding_window must be true or false, got {uses!r}")
        first = cfg.int("max_window_layers", default=0, minimum=0)
        flags = [uses and i >= first for i in range(n)]
    else:
        flags = [window is not None] * n
    if any(flags) and window is None:
        raise cfg.error("some layers use sliding-window attention, and no `sliding_window` is set")
    return flags


def attention_layers(
    cfg: HFConfig, full: OpSpec, n: int, pattern_default: int | None = None
) -> list[OpSpec]:
    """Each layer's attention: `full`, or the same shape over `sliding_window` positions."""
    flags = windowed_layers(cfg, n, pattern_default)
    if not any(flags):
        return [full] * n
    window = cfg.int("sliding_window")
    limit = cfg.data.get("max_position_embeddings")
    if isinstance(limit, int) and window >= limit:
        cfg.note(
            f"sliding_window={window} >= max_position_embeddings={limit}: the window is never "
            "reached, so those layers are full attention"
        )
        return [full] * n
    windowed = cfg.spec("attention_window", full.width, **full.params(), window=window)
    return [windowed if f else full for f in flags]
