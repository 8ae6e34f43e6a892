"""Multi-head Latent Attention block (DeepSeek-V2, arXiv 2405.04434, section 2.1; DeepSeek-V3;
the full-attention layers of Kimi Linear): pre-RMSNorm, a query projection (optionally through a
low-rank `q_lora_rank` bottleneck with its own RMSNorm), one down-projection of the width to a
latent c_kv of `kv_lora_rank` (RMS-normed) plus one rotary key part k_rope of `qk_rope_head_dim`
shared by all heads, an up-projection of c_kv to per-head k_nope and v, softmax attention with
keys [k_nope, k_rope], out-projection, residual add.

`rope`: True applies the rotary embedding to the query's and the key's rope parts (DeepSeek);
False leaves them unrotated (Kimi Linear's `mla_use_nope`: the rope-sized part is still there).

The decode cache is the latent one: per token kv_lora_rank + qk_rope_head_dim values (c_kv and
k_rope), one row per layer shared by the heads, never per-head keys and values.

Defaults are DeepSeek-V2-Lite's (width 2048): heads = width / 128, no query compression
(q_lora_rank 0; DeepSeek-V2 and V3 use 1536), kv_lora_rank 512, qk_nope_head_dim 128,
qk_rope_head_dim 64, v_head_dim 128 -- the paper's rules d_c = 4 d_h and d_h^R = d_h / 2 at
d_h = 128.  Heads need not divide the width (DeepSeek-V3: 128 heads at width 7168).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.errors import InputError
from latprof.inputs import quote
from latprof.specs.base import OpSpec, StateBytes, dtype_bytes, positive

DEFAULT_HEAD_DIM = 128  # heads = width / 128 when heads is not given
DEFAULT_KV_LORA_RANK = 512
DEFAULT_QK_NOPE_HEAD_DIM = 128
DEFAULT_QK_ROPE_HEAD_DIM = 64
DEFAULT_V_HEAD_DIM = 128


@dataclass(frozen=True)
class MLASpec(OpSpec):
    heads: int = 0
    q_lora_rank: int = 0
    kv_lora_rank: int = DEFAULT_KV_LORA_RANK
    qk_nope_head_dim: int = DEFAULT_QK_NOPE_HEAD_DIM
    qk_rope_head_dim: int = DEFAULT_QK_ROPE_HEAD_DIM
    v_head_dim: int = DEFAULT_V_HEAD_DIM
    rope: bool = True

    op: ClassVar[str] = "mla"
    context_dependent: ClassVar[bool] = True

    @classmethod
    def resolve(
        cls,
        width,
        heads=None,
        q_lora_rank=0,
        kv_lora_rank=DEFAULT_KV_LORA_RANK,
        qk_nope_head_dim=DEFAULT_QK_NOPE_HEAD_DIM,
        qk_rope_head_dim=DEFAULT_QK_ROPE_HEAD_DIM,
        v_head_dim=DEFAULT_V_HEAD_DIM,
        rope=True,
    ):
        positive(cls.op, width=width)
        if heads is None:
            if width < DEFAULT_HEAD_DIM:
                raise InputError(
                    f"{cls.op}: width={width} is under {DEFAULT_HEAD_DIM}, so heads cannot "
                    f"default to width / {DEFAULT_HEAD_DIM}; give heads explicitly"
                )
            heads = width // DEFAULT_HEAD_DIM
        positive(
            cls.op,
            heads=heads,
            kv_lora_rank=kv_lora_rank,
            qk_nope_head_dim=qk_nope_head_dim,
            qk_rope_head_dim=qk_rope_head_dim,
            v_head_dim=v_head_dim,
        )
        if isinstance(q_lora_rank, bool) or not isinstance(q_lora_rank, int) or q_lora_rank < 0:
            raise InputError(
                f"{cls.op}: q_lora_rank must be a positive integer (the query's low-rank "
                f"bottleneck) or 0 (no query compression), got {quote(q_lora_rank)}"
            )
        if q_lora_rank:
            positive(cls.op, q_lora_rank=q_lora_rank)  # within latprof's size limit
        if not isinstance(rope, bool):
            raise InputError(f"{cls.op}: rope must be true or false, got {quote(rope)}")
        if rope and qk_rope_head_dim % 2:
            raise InputError(
                f"{cls.op}: qk_rope_head_dim={qk_rope_head_dim} is odd; the rotary embedding "
                "rotates pairs of dimensions, so with rope=true it must be even"
            )
        return cls(
            width,
            heads,
            q_lora_rank,
            kv_lora_rank,
            qk_nope_head_dim,
            qk_rope_head_dim,
            v_head_dim,
            rope,
        )

    @property
    def qk_head_dim(self) -> int:
        """Per-head query / key size: the no-rope part and the rope part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Values cached per token and layer: c_kv and k_rope."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def query_params(self) -> int:
        q_out = self.heads * self.qk_head_dim
        if self.q_lora_rank == 0:
            return self.width * q_out  # q_proj
        return self.width * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * q_out

    def param_count(self) -> int:
        kv_a = self.width * self.latent_dim + self.kv_lora_rank  # kv_a_proj_with_mqa, its norm
        kv_b = self.kv_lora_rank * self.heads * (self.qk_nope_head_dim + self.v_head_dim)
        o = self.heads * self.v_head_dim * self.width
        return self.width + self.query_params() + kv_a + kv_b + o

    def state_bytes(self, batch, max_context, dtype):
        return StateBytes(kv_cache=batch * max_context * self.latent_dim * dtype_bytes(dtype))

    def cache_traffic_bytes(self, batch, context, dtype):
        # read the latent rows of context + 1 positions (the new one included), write the new one
        return batch * (context + 2) * self.latent_dim * dtype_bytes(dtype)

    def flops_per_step(self, batch, context):
        # Projections: every weight is used once per token.  In the weight-absorbed decode the
        # k-part of kv_b_proj multiplies q_nope (heads x nope x kv_lora_rank multiply-adds) and
        # its v-part the attended latent (heads x kv_lora_rank x v), together exactly kv_b_proj's
        # weights -- as many as expanding the one new latent row would take, where the naive
        # form would expand all context + 1 rows.  Attention over context + 1 latent rows, as one
        # shared KV head: scores over kv_lora_rank + rope, the weighted sum over kv_lora_rank.
        attended = context + 1
        attention = (
            2 * batch * self.heads * attended * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        )
        return 2 * batch * self.param_count() + attention
