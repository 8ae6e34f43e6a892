"""Mixture-of-experts FFN block (PyTorch reference).

x -> x + shared(h) + sum_{e in topk(h)} p_e(h) * expert_e(h),  h = RMSNorm(x), where the router
takes softmax(h @ W_router^T) over all experts, keeps the top_k and renormalises their weights to
sum to one (Mixtral's top-k-then-softmax, equivalently Qwen3-Next's `norm_topk_prob`).  Each
expert is a SwiGLU MLP (down(silu(gate h) * up h)) or a non-gated relu2 MLP (down(relu(up h)^2),
as in Nemotron-H).  Only experts that received tokens are run, each on its own tokens.

Mixtral: arXiv 2401.04088, section 2.1; Qwen3-Next / Nemotron-H: their HF `config.json`.

The loop over experts reads the per-expert token counts back to the host once per call, so this
reference cannot be captured in a CUDA graph; it is timed in eager mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.ops.base import Block, State, rms_norm
from latprof.specs.moe import MoESpec


def expert_mlp(
    h: torch.Tensor, gate: torch.Tensor | None, up: torch.Tensor, down: torch.Tensor
) -> torch.Tensor:
    """One expert's MLP on the tokens routed to it.

    h:    (tokens, width)
    gate: (dim, width), or None for the non-gated relu2 MLP
    up:   (dim, width)
    down: (width, dim)
    returns (tokens, width)
    """
    u = h @ up.T  # (tokens, dim)
    a = F.silu(h @ gate.T) * u if gate is not None else F.relu(u).square()
    return a @ down.T


class MoEBlock(Block):
    """Pre-RMSNorm, softmax top-k router, routed experts, optional shared expert, residual."""

    # its step reads per-expert token counts back to the host: the registry marks it as not
    # graph-capturable, so sweeps and comparisons measure it eagerly
    spec: MoESpec

    def __init__(self, spec: MoESpec, **kwargs) -> None:
        super().__init__(spec, **kwargs)
        w, d, e = spec.width, spec.expert_dim, spec.experts
        self.norm = self.new_norm(w)  # (width,)
        self.router = self.new_param(e, w)  # (experts, width)
        self.register_parameter("w_gate", self.new_param(e, d, w) if spec.gated else None)
        self.w_up = self.new_param(e, d, w)  # (experts, expert_dim, width)
        self.w_down = self.new_param(e, w, d)  # (experts, width, expert_dim)
        s = spec.shared_expert_dim
        self.register_parameter("shared_gate", self.new_param(s, w) if s and spec.gated else None)
        self.register_parameter("shared_up", self.new_param(s, w) if s else None)
        self.register_parameter("shared_down", self.new_param(w, s) if s else None)
        self.register_parameter(
            "shared_expert_gate", self.new_param(1, w) if spec.shared_gate else None
        )

    def route(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k routing of normalised hidden states.

        h: (tokens, width)
        returns weights (tokens, top_k) float32 summing to one per token, and
                experts (tokens, top_k) int64 expert indices
        """
        probs = torch.softmax((h @ self.router.T).float(), dim=-1)  # (tokens, experts)
        weights, experts = probs.topk(self.spec.top_k, dim=-1)  # (tokens, top_k) each
        return weights / weights.sum(dim=-1, keepdim=True), experts

    def routed(self, h: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """Weighted sum of each token's experts, running every expert only on its own tokens.

        h:       (tokens, width)
        weights: (tokens, top_k)
        experts: (tokens, top_k)
        returns  (tokens, width) float32
        """
        k = self.spec.top_k
        flat = experts.reshape(-1)  # (tokens * top_k,) one entry per (token, slot)
        order = torch.argsort(flat, stable=True)  # (tokens * top_k,) grouped by expert
        counts = torch.bincount(flat, minlength=self.spec.experts).tolist()  # host sync
        flat_weights = weights.reshape(-1)  # (tokens * top_k,)
        out = torch.zeros(h.shape, device=h.device, dtype=torch.float32)  # (tokens, width)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            sel = order[start : start + n]  # (n,) (token, slot) entries routed to expert e
            start += n
            tok = sel // k  # (n,)
            gate = self.w_gate[e] if self.w_gate is not None else None
            y = expert_mlp(h[tok], gate, self.w_up[e], self.w_down[e])  # (n, width)
            out.index_add_(0, tok, y.float() * flat_weights[sel, None])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., width), any leading dims (batch) or (batch, seq); returns the same shape."""
        h = rms_norm(x, self.norm).reshape(-1, self.spec.width)  # (tokens, width)
        out = self.routed(h, *self.route(h))  # (tokens, width) float32
        if self.shared_up is not None:
            shared = expert_mlp(h, self.shared_gate, self.shared_up, self.shared_down).float()
            if self.shared_expert_gate is not None:  # (tokens, 1) sigmoid gate
                shared = shared * torch.sigmoid(F.linear(h, self.shared_expert_gate).float())
            out += shared
        return x + out.to(x.dtype).reshape(x.shape)

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch, width); state: {} (the block keeps no cache); returns (batch, width)."""
        return self(x)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width); tokens are independent, so this is the forward over all."""
        return self(x)
