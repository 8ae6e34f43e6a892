"""Hugging Face `config.json` -> `ModelSpec`, read as data only: no remote code is ever run, and
`auto_map` / `architectures` are ignored.

One loader per `model_type` family, registered in `LOADERS`.  Field names and layer layouts
follow the transformers configuration classes (and, for Nemotron-Flash, NVIDIA's modelling code
published with the checkpoints).  Where a family has a detail latprof's operators do not model
(sliding windows, attention output gates, parallel mixers sharing one norm) the loader keeps the
closest operator and records a note on the ModelSpec, which `latprof estimate` prints.

A missing `tie_word_embeddings` means true: transformers leaves a value out of config.json only
when it equals the `PretrainedConfig` default, which is true.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import latprof.specs
from latprof.errors import InputError
from latprof.model import ModelSpec
from latprof.specs import OpSpec, build_spec

_REQUIRED = object()


class HFConfig:
    """A parsed config.json with typed getters whose errors name the file and field."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data, self.source = data, source
        self.model_type = str(data.get("model_type"))
        self.notes: list[str] = []

    def error(self, message: str) -> InputError:
        return InputError(f"{self.source} (model_type {self.model_type!r}): {message}")

    def int(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            if default is _REQUIRED:
                raise self.error(f"required field {key!r} is missing")
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(f"{key} must be an integer >= {minimum}, got {value!r}")
        return value

    def opt_int(self, *keys: str) -> int | None:
        """The first of `keys` present with a positive value ("auto", null and values <= 0,
        which several configs use for "derive it", mean absent)."""
        for key in keys:
            value = self.data.get(key)
            if value is None or value == "auto" or (isinstance(value, int) and value <= 0):
                continue
            return self.int(key)
        return None

    def int_list(self, key: str, default: list[int] | None = None) -> list[int]:
        value = self.data.get(key)
        if value is None:
            return list(default or [])
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise self.error(f"{key} must be a list of integers, got {value!r}")
        return value

    def str_list(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{key} must be a list of strings, got {value!r}")
        return value

    def spec(self, op: str, width: int, **params: Any) -> OpSpec:
        try:
            return build_spec(op, width, **params)
        except InputError as exc:
            raise self.error(f"impossible shape: {exc}") from None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# ---- entry points --------------------------------------------------------------------------------
def load_hf_config(path: str | Path) -> ModelSpec:
    """Read a config.json; malformed JSON names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    name = path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return model_from_hf(data, source=str(path), name=name)


def model_from_hf(data: Any, source: str = "<config.json>", name: str = "model") -> ModelSpec:
    if not isinstance(data, dict):
        raise InputError(f"{source}: a config.json holds a JSON object, not {type(data).__name__}")
    if "model_type" not in data:
        raise InputError(
            f"{source}: no `model_type` field, so the architecture is unknown; supported model "
            f"types: {', '.join(sorted(LOADERS))}"
        )
    model_type = data["model_type"]
    loader = LOADERS.get(model_type) if isinstance(model_type, str) else None
    if loader is None:
        raise InputError(
            f"{source}: unsupported model_type {model_type!r}; supported: "
            f"{', '.join(sorted(LOADERS))} (or describe the model in latprof YAML)"
        )
    cfg = HFConfig(data, source)
    layers = loader(cfg)
    tied = data.get("tie_word_embeddings", True)
    if not isinstance(tied, bool):
        raise cfg.error(f"tie_word_embeddings must be true or false, got {tied!r}")
    meta = cfg.int("num_memory_tokens", default=0, minimum=0)
    return ModelSpec(
        name=name,
        width=cfg.int("hidden_size"),
        vocab_size=cfg.int("vocab_size"),
        layers=tuple(layers),
        tied_embeddings=tied,
        meta_tokens=meta,
        source=source,
        notes=tuple(cfg.notes),
    )


# ---- shared pieces -------------------------------------------------------------------------------
def _layer_count(cfg: HFConfig) -> int:
    return cfg.int("num_hidden_layers")


def _attention(cfg: HFConfig, width: int, qk_norm: bool = False, head_dim_key: str = "head_dim"):
    """Softmax attention; an explicit head_dim field wins over hidden_size / heads."""
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
        "attention", width, heads=heads, kv_heads=kv_heads, head_dim=head_dim, qk_norm=qk_norm
    )


def _gated_ffn(cfg: HFConfig, width: int, ffn_dim: int, act_key: str = "hidden_act") -> OpSpec:
    act = cfg.data.get(act_key, "silu")
    if act not in ("silu", "swish"):
        cfg.note(f"{act_key}={act!r}: the gated MLP is counted as swiglu (same matmuls)")
    return cfg.spec("ffn", width, ffn_dim=ffn_dim, activation="swiglu")


def _plain_ffn(cfg: HFConfig, width: int, ffn_dim: int, act: str) -> OpSpec:
    """Non-gated MLP (up, activation, down)."""
    if act not in ("relu2", "gelu"):
        raise cfg.error(
            f"non-gated MLP activation {act!r}: latprof's ffn operator has relu2 and gelu"
        )
    return cfg.spec("ffn", width, ffn_dim=ffn_dim, activation=act)


def _moe(
    cfg: HFConfig,
    width: int,
    experts: int,
    top_k: int,
    expert_dim: int,
    shared_expert_dim: int = 0,
    activation: str = "swiglu",
) -> OpSpec:
    """MoE FFN; needs the `moe` operator family in latprof.specs."""
    if "moe" not in latprof.specs.SPECS:
        raise cfg.error(
            "this model has MoE FFN layers, and latprof has no 'moe' operator family yet "
            f"(operators: {', '.join(latprof.specs.SPECS)})"
        )
    extra = {}
    if activation != "swiglu":  # only families whose experts are not SwiGLU name it
        extra["activation"] = activation
    return cfg.spec(
        "moe",
        width,
        experts=experts,
        top_k=top_k,
        expert_dim=expert_dim,
        shared_expert_dim=shared_expert_dim,
        **extra,
    )


def _mamba2(
    cfg: HFConfig, width: int, heads: int, head_dim: int, d_state: int, n_groups: int, d_conv: int
) -> OpSpec:
    """Mamba2 from head count and head size; latprof's spec has d_inner = expand * width."""
    d_inner = heads * head_dim
    if d_inner % width:
        raise cfg.error(
            f"Mamba2 inner size {heads} heads x {head_dim} = {d_inner} is not a whole multiple "
            f"of hidden_size {width}; latprof's mamba2 operator has d_inner = expand x width "
            "with an integer expand, so this shape cannot be represented"
        )
    return cfg.spec(
        "mamba2",
        width,
        expand=d_inner // width,
        head_dim=head_dim,
        d_state=d_state,
        n_groups=n_groups,
        d_conv=d_conv,
    )


def _sliding_window_note(cfg: HFConfig) -> None:
    window = cfg.data.get("sliding_window")
    uses = cfg.data.get("use_sliding_window", True)
    if window and uses:
        cfg.note(
            f"sliding_window={window} is not modelled: every attention layer is counted as full "
            "attention over the whole context (cost and KV cache are upper bounds)"
        )


# ---- transformers --------------------------------------------------------------------------------
#: model types whose layers are (attention, gated MLP or MoE); value: q/k norm per head
TRANSFORMERS = {
    "llama": False,
    "mistral": False,
    "qwen2": False,
    "qwen3": True,
    "olmo": False,
    "olmo2": True,
    "granite": False,
    "smollm3": False,
    "phi3": False,
    "mixtral": False,
    "qwen2_moe": False,
    "qwen3_moe": True,
}


def _transformer(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    attention = _attention(cfg, width, qk_norm=TRANSFORMERS[cfg.model_type])
    _sliding_window_note(cfg)
    layers: list[OpSpec] = []
    for i in range(_layer_count(cfg)):
        layers += [attention, _transformer_ffn(cfg, width, i)]
    return layers


def _transformer_ffn(cfg: HFConfig, width: int, i: int) -> OpSpec:
    mt = cfg.model_type
    if mt == "mixtral":
        return _moe(
            cfg,
            width,
            cfg.int("num_local_experts"),
            cfg.int("num_experts_per_tok"),
            cfg.int("intermediate_size"),
        )
    if mt in ("qwen2_moe", "qwen3_moe"):
        experts = cfg.int("num_experts", default=0, minimum=0)
        step = cfg.int("decoder_sparse_step", default=1)
        if experts and (i + 1) % step == 0 and i not in cfg.int_list("mlp_only_layers"):
            shared = cfg.int("shared_expert_intermediate_size", default=0, minimum=0)
            return _moe(
                cfg,
                width,
                experts,
                cfg.int("num_experts_per_tok"),
                cfg.int("moe_intermediate_size"),
                shared if mt == "qwen2_moe" else 0,
            )
    return _gated_ffn(cfg, width, cfg.int("intermediate_size"))


# ---- state-space and hybrid families -------------------------------------------------------------
def _mamba(cfg: HFConfig) -> list[OpSpec]:
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
    return [spec] * _layer_count(cfg)


def _mamba2_model(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    head_dim = cfg.int("head_dim", default=64)
    expand = cfg.int("expand", default=2)
    heads = cfg.opt_int("num_heads") or expand * width // head_dim
    if heads * head_dim != expand * width:
        raise cfg.error(
            f"num_heads {heads} x head_dim {head_dim} != expand {expand} x "
            f"hidden_size {width}: the Mamba2 inner sizes disagree"
        )
    spec = _mamba2(
        cfg,
        width,
        heads,
        head_dim,
        cfg.int("state_size", default=128),
        cfg.int("n_groups", default=1),
        cfg.int("conv_kernel", default=4),
    )
    return [spec] * _layer_count(cfg)


NEMOTRON_H_CHARS = {"M": "Mamba2", "*": "attention", "-": "MLP", "E": "MoE"}


def _nemotron_h(cfg: HFConfig) -> list[OpSpec]:
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
    built: dict[str, OpSpec] = {}
    for char in dict.fromkeys(pattern):
        if char == "M":
            heads = cfg.int("mamba_num_heads")
            built[char] = _mamba2(
                cfg,
                width,
                heads,
                cfg.int("mamba_head_dim"),
                cfg.int("ssm_state_size", default=128),
                cfg.int("n_groups", default=1),
                cfg.int("conv_kernel", default=4),
            )
        elif char == "*":
            built[char] = _attention(cfg, width, head_dim_key="attention_head_dim")
        elif char == "-":
            built[char] = _plain_ffn(
                cfg, width, cfg.int("intermediate_size"), cfg.data.get("mlp_hidden_act", "relu2")
            )
        else:
            shared = cfg.int("moe_shared_expert_intermediate_size", default=0, minimum=0)
            shared *= cfg.int("n_shared_experts", default=1, minimum=0)
            built[char] = _moe(
                cfg,
                width,
                cfg.int("n_routed_experts"),
                cfg.int("num_experts_per_tok"),
                cfg.int("moe_intermediate_size"),
                shared,
                activation=cfg.data.get("mlp_hidden_act", "relu2"),
            )
    return [built[c] for c in pattern]


def _nemotron_flash(cfg: HFConfig) -> list[OpSpec]:
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
    ratio = cfg.data.get("ffn_expand_ratio")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))):
        raise cfg.error(f"ffn_expand_ratio must be a number, got {ratio!r}")
    ffn_dim = int(ratio * width) // 128 * 128 if ratio else inner
    act = cfg.data.get("mlp_hidden_act", "silu")
    heads = cfg.int("num_attention_heads")

    def ffn() -> OpSpec:
        if ffn_dim <= 0:
            raise cfg.error("an 'f' layer needs intermediate_size or ffn_expand_ratio")
        if act == "silu":
            return cfg.spec("ffn", width, ffn_dim=ffn_dim, activation="swiglu")
        return _plain_ffn(cfg, width, ffn_dim, act)

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


def _qwen3_next(cfg: HFConfig) -> list[OpSpec]:
    """Gated DeltaNet with full attention every `full_attention_interval` layers; MoE FFN."""
    width = cfg.int("hidden_size")
    n = _layer_count(cfg)
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
    if value_heads != key_heads:
        cfg.note(
            f"gated DeltaNet: {value_heads} value heads over {key_heads} key heads are "
            "modelled as expand_v (same projections and state size)"
        )
    gdn = cfg.spec(
        "gated_deltanet",
        width,
        heads=key_heads,
        head_dim=key_dim,
        expand_v=value_dim // (key_heads * key_dim),
        d_conv=cfg.int("linear_conv_kernel_dim", default=4),
    )
    attention = _attention(cfg, width, qk_norm=True)
    cfg.note("full attention's output gate is not modelled (counted as plain attention)")
    mixers = {"linear_attention": gdn, "full_attention": attention}
    experts = cfg.int("num_experts", default=0, minimum=0)
    step = cfg.int("decoder_sparse_step", default=1)
    dense_only = cfg.int_list("mlp_only_layers")
    layers: list[OpSpec] = []
    for i, t in enumerate(types):
        if t not in mixers:
            raise cfg.error(f"layer_types entry {t!r} is unknown; valid: {', '.join(mixers)}")
        layers.append(mixers[t])
        if experts and (i + 1) % step == 0 and i not in dense_only:
            layers.append(
                _moe(
                    cfg,
                    width,
                    experts,
                    cfg.int("num_experts_per_tok"),
                    cfg.int("moe_intermediate_size"),
                    cfg.int("shared_expert_intermediate_size", default=0, minimum=0),
                )
            )
        else:
            layers.append(_gated_ffn(cfg, width, cfg.int("intermediate_size")))
    return layers


def _hybrid_mamba2(cfg: HFConfig, width: int) -> OpSpec:
    """Mamba2 of the falcon_h1 / bamba / granitemoehybrid configs (mamba_* fields)."""
    d_inner = cfg.opt_int("mamba_d_ssm") or cfg.int("mamba_expand", default=2) * width
    heads = cfg.int("mamba_n_heads")
    head_dim = cfg.opt_int("mamba_d_head") or d_inner // heads
    if heads * head_dim != d_inner:
        raise cfg.error(
            f"mamba_n_heads {heads} x mamba_d_head {head_dim} != Mamba2 inner size {d_inner}"
        )
    return _mamba2(
        cfg,
        width,
        heads,
        head_dim,
        cfg.int("mamba_d_state", default=256),
        cfg.int("mamba_n_groups", default=1),
        cfg.int("mamba_d_conv", default=4),
    )


def _falcon_h1(cfg: HFConfig) -> list[OpSpec]:
    """Every layer runs attention and Mamba2 side by side, then an MLP."""
    width = cfg.int("hidden_size")
    attention = _attention(cfg, width)
    mamba = _hybrid_mamba2(cfg, width)
    ffn = _gated_ffn(cfg, width, cfg.int("intermediate_size"))
    cfg.note(
        "attention and Mamba2 run in parallel in each Falcon-H1 layer (one shared norm and "
        "residual); they are counted as two consecutive operator blocks"
    )
    return [attention, mamba, ffn] * _layer_count(cfg)


def _bamba(cfg: HFConfig) -> list[OpSpec]:
    width = cfg.int("hidden_size")
    attention_at = set(cfg.int_list("attn_layer_indices"))
    attention, mamba = _attention(cfg, width), _hybrid_mamba2(cfg, width)
    ffn = _gated_ffn(cfg, width, cfg.int("intermediate_size"))
    layers: list[OpSpec] = []
    for i in range(_layer_count(cfg)):
        layers += [attention if i in attention_at else mamba, ffn]
    return layers


def _granite_hybrid(cfg: HFConfig) -> list[OpSpec]:
    """Granite 4.0 hybrids: `layer_types` mamba / attention; FFN = MoE plus a shared MLP, or
    the shared MLP alone when num_local_experts is 0."""
    width = cfg.int("hidden_size")
    n = _layer_count(cfg)
    types = cfg.str_list("layer_types") or ["mamba"] * n
    if len(types) != n:
        raise cfg.error(f"layer_types has {len(types)} entries, num_hidden_layers {n}")
    mixers: dict[str, Callable[[], OpSpec]] = {
        "mamba": lambda: _hybrid_mamba2(cfg, width),
        "attention": lambda: _attention(cfg, width),
    }
    experts = cfg.int("num_local_experts", default=0, minimum=0)
    shared = cfg.int("shared_intermediate_size", default=0, minimum=0)
    if experts:
        ffn = _moe(
            cfg,
            width,
            experts,
            cfg.int("num_experts_per_tok"),
            cfg.int("intermediate_size"),
            shared,
        )
    else:
        ffn = _gated_ffn(cfg, width, shared or cfg.int("intermediate_size"))
    built: dict[str, OpSpec] = {}
    layers: list[OpSpec] = []
    for t in types:
        if t not in mixers:
            raise cfg.error(f"layer_types entry {t!r} is unknown; valid: {', '.join(mixers)}")
        layers += [built.setdefault(t, mixers[t]()), ffn]
    return layers


def _jamba(cfg: HFConfig) -> list[OpSpec]:
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
    )
    attention = _attention(cfg, width)
    dense = _gated_ffn(cfg, width, cfg.int("intermediate_size"))
    layers: list[OpSpec] = []
    for i in range(_layer_count(cfg)):
        layers.append(attention if i % a_period == a_offset else mamba)
        if experts > 1 and i % e_period == e_offset:
            layers.append(
                _moe(
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


LOADERS: dict[str, Callable[[HFConfig], list[OpSpec]]] = {
    **{model_type: _transformer for model_type in TRANSFORMERS},
    "mamba": _mamba,
    "falcon_mamba": _mamba,
    "mamba2": _mamba2_model,
    "nemotron_h": _nemotron_h,
    "nemotron_flash": _nemotron_flash,
    "qwen3_next": _qwen3_next,
    "falcon_h1": _falcon_h1,
    "bamba": _bamba,
    "granitemoehybrid": _granite_hybrid,
    "jamba": _jamba,
}
