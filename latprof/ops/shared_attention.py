"""Shared attention block (Zamba2's hybrid layers; latprof.specs.shared_attention): one use of a
transformer block whose weights several layers reuse, on the hidden state x and the model's
embedding output e.

    h = rms_norm(concat(x, e))                      (..., 2 width)
    q, k, v = W_qkv h  (+ per-use adapters B A h)    (heads / kv_heads, head_dim)
    a = W_o attention(rope(q), rope(k), v)          (width); scale (head_dim / 2) ** -0.5
    g = rms_norm(a);  gu = W_gu g (+ B A g)         (2 ffn_dim): gate, up
    out = x + W_lin W_down (act(gate) * up)          (width)

References: Zamba2's shared transformer block (Glorioso et al., "The Zamba2 Suite", arXiv
2411.15242, Fig. 2: shared attention + MLP on the concatenated input, unshared LoRA-style
adapters, an unshared linear per use), in transformers' layout (`Zamba2AttentionDecoderLayer`
and `Zamba2HybridLayer.linear`: gate before up in gate_up, adapters added to the projection
they sit beside).  RoPE, the KV cache and the attention itself are latprof.ops.attention's.

Dataflow: Zamba2 adds the linear's output to the input of the Mamba2 block that follows; here it
joins the residual stream (out = x + ...) and the Mamba2 block runs as usual on it.  The decode
work is the same (one add of a width vector); see the spec module.

Tying: `tie_to(owner)` makes this use read the owner's shared tensors (`SHARED_PARAMS`: norms,
q / k / v / o, gate / up, down); its adapters, linear and KV cache stay its own.

Backends of the decode step: "torch" (explicit matmuls, the reference) and "sdpa"
(`scaled_dot_product_attention`), both `latprof.ops.attention.cache_attend_step`.  `prefill`
runs the PyTorch path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.attention import cache_attend_prefill, cache_attend_step, rope_tables
from latprof.ops.base import Block, State, rms_norm
from latprof.specs.shared_attention import SharedAttentionSpec

#: parameters a tied use takes from its owner (sizes: `SharedAttentionSpec.shared_param_count`)
SHARED_PARAMS = ("norm", "wqkv", "wo", "ffn_norm", "w_gate_up", "w_down")


class SharedAttentionBlock(Block):
    """x + linear(mlp(attention(concat(x, e)))); reads the embedding output e beside x."""

    static_state_keys = frozenset({"cos", "sin"})  # RoPE tables
    spec: SharedAttentionSpec

    def __init__(
        self,
        spec: SharedAttentionSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        s, w, d, r = spec, spec.width, spec.in_dim, spec.adapter_rank
        # shared: one set per distinct block, reused by tied uses
        self.norm = self.new_norm(d)
        self.wqkv = self.new_param(s.q_dim + 2 * s.kv_dim, d)  # (q_dim + 2 kv_dim, 2 width)
        self.wo = self.new_param(w, s.q_dim)  # (width, q_dim)
        self.ffn_norm = self.new_norm(w)
        self.w_gate_up = self.new_param(2 * s.ffn_dim, w)  # (2 ffn_dim, width): gate, up
        self.w_down = self.new_param(w, s.ffn_dim)  # (width, ffn_dim)
        # this use's own
        self.qkv_down = self.new_param(3 * r, d) if s.attention_adapters else None  # (3r, 2w)
        if s.attention_adapters:
            self.q_up = self.new_param(s.q_dim, r)  # (q_dim, r)
            self.k_up = self.new_param(s.kv_dim, r)  # (kv_dim, r)
            self.v_up = self.new_param(s.kv_dim, r)
        self.gate_up_down = self.new_param(r, w) if r else None  # (r, width)
        self.gate_up_up = self.new_param(2 * s.ffn_dim, r) if r else None  # (2 ffn_dim, r)
        self.linear = self.new_param(w, w)  # (width, width)
        self.scale = (s.head_dim / 2) ** -0.5

    def tie_to(self, owner: SharedAttentionBlock) -> None:
        """Read `owner`'s shared weights from now on (the same tensors, not copies)."""
        if owner.spec != self.spec:
            raise ValueError(f"tie_to: {self.spec.key} cannot share {owner.spec.key}'s weights")
        for name in SHARED_PARAMS:
            setattr(self, name, getattr(owner, name))

    def allocate_state(self, batch: int, max_context: int) -> State:
        s = self.spec
        state = {
            "k": self.zeros(batch, max_context, s.kv_heads, s.head_dim),  # rotated keys
            "v": self.zeros(batch, max_context, s.kv_heads, s.head_dim),
        }
        if s.rope:
            cos, sin = rope_tables(max_context, s.head_dim, device=self.device)  # (ctx, hd/2)
            state["cos"], state["sin"] = cos, sin
        return state

    def _project(
        self, x: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (before RoPE) from rms_norm(concat(x, e)), adapters added.

        x, embedding: (..., width)
        returns q: (..., heads, head_dim), k and v: (..., kv_heads, head_dim)
        """
        s = self.spec
        h = rms_norm(torch.cat((x, embedding), dim=-1), self.norm)  # (..., 2 width)
        q, k, v = F.linear(h, self.wqkv).split([s.q_dim, s.kv_dim, s.kv_dim], dim=-1)
        if self.qkv_down is not None:
            dq, dk, dv = F.linear(h, self.qkv_down).chunk(3, dim=-1)  # (..., r) each
            q = q + F.linear(dq, self.q_up)
            k = k + F.linear(dk, self.k_up)
            v = v + F.linear(dv, self.v_up)
        q = q.unflatten(-1, (s.heads, s.head_dim))
        k = k.unflatten(-1, (s.kv_heads, s.head_dim))
        v = v.unflatten(-1, (s.kv_heads, s.head_dim))
        return q, k, v

    def _output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x + linear(mlp(o_proj(out))).

        x: (..., width); out: (..., heads, head_dim), the attention's output
        """
        g = rms_norm(F.linear(out.flatten(-2), self.wo), self.ffn_norm)  # (..., width)
        gate_up = F.linear(g, self.w_gate_up)  # (..., 2 ffn_dim)
        if self.gate_up_down is not None:
            gate_up = gate_up + F.linear(F.linear(g, self.gate_up_down), self.gate_up_up)
        gate, up = gate_up.chunk(2, dim=-1)  # (..., ffn_dim) each
        act = F.silu(gate) if self.spec.activation == "swiglu" else F.gelu(gate)
        m = F.linear(act * up, self.w_down)  # (..., width)
        return x + F.linear(m, self.linear)

    def step(
        self, x: torch.Tensor, state: State, pos: int | torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        """One decode step at position `pos` (= tokens already cached).

        x: (batch, width), the hidden state
        state: k, v (batch, max_context, kv_heads, head_dim); cos, sin (max_context,
            head_dim // 2) float32 with RoPE
        pos: an int, or a (batch,) int32 device tensor (`cache_attend_step`)
        embedding: (batch, width), the model's embedding output for this token
        returns (batch, width)
        """
        q, k, v = self._project(x, embedding)  # (batch, heads, hd), (batch, kv_heads, hd) x 2
        out = cache_attend_step(
            q, k, v, state, pos, self.scale, sdpa=self.backend == "sdpa", rope=self.spec.rope
        )
        return self._output(x, out)

    def prefill(self, x: torch.Tensor, state: State, embedding: torch.Tensor) -> torch.Tensor:
        """Causal forward over a whole prompt from an empty cache; fills k, v [:, :seq].

        x, embedding: (batch, seq, width)
        returns (batch, seq, width)
        """
        q, k, v = self._project(x, embedding)
        out = cache_attend_prefill(q, k, v, state, self.scale, rope=self.spec.rope)
        return self._output(x, out)
