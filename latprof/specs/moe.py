"""Mixture-of-experts FFN block: pre-RMSNorm, softmax router, top-k experts, optional shared
expert, residual add (Mixtral, Qwen3-Next's sparse MoE, Nemotron-H's `E` layers).

Cost model under the *uniform-routing assumption*: every token picks its `top_k` experts
uniformly at random among `experts`, independently of the other tokens.  One token leaves a
given expert untouched with probability (E - k) / E, so B tokens leave it untouched with
probability ((E - k) / E) ** B, and a decode step of batch B reads on average

    E * (1 - ((E - k) / E) ** B)

distinct experts.  Weights are counted by that expectation; FLOPs by the k experts every token
runs.  Real routers are skewed (fewer distinct experts per step), so this is an upper estimate
of the bytes at batch > 1 and exact at batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import InputError, OpSpec, dtype_bytes, positive, round_to

ACTIVATIONS = ("swiglu", "relu2")


def expected_experts_touched(experts: int, top_k: int, batch: int) -> float:
    """Expected number of distinct experts that `batch` tokens, each routed to `top_k` of
    `experts` uniformly at random, touch: E * (1 - ((E - k) / E) ** B)."""
    return experts * (1.0 - ((experts - top_k) / experts) ** batch)


@dataclass(frozen=True)
class MoESpec(OpSpec):
    experts: int = 8
    top_k: int = 2
    expert_dim: int = 0
    shared_expert_dim: int = 0
    activation: str = "swiglu"
    #: a sigmoid gate of one weight row scaling the shared expert's output (Qwen MoE)
    shared_gate: bool = False

    op: ClassVar[str] = "moe"
    sparse_reads: ClassVar[bool] = True
    extra_fields: ClassVar[tuple[str, ...]] = ("shared_gate",)

    @classmethod
    def resolve(
        cls,
        width,
        experts=8,
        top_k=2,
        expert_dim=None,
        shared_expert_dim=0,
        activation="swiglu",
        shared_gate=False,
    ):
        positive(cls.op, width=width, experts=experts, top_k=top_k)
        if expert_dim is None:
            expert_dim = round_to(width, 128)
        positive(cls.op, expert_dim=expert_dim)
        if not (type(shared_expert_dim) is int and shared_expert_dim == 0):  # 0 = no shared
            positive(cls.op, shared_expert_dim=shared_expert_dim)
        if top_k > experts:
            raise InputError(
                f"moe: top_k={top_k} exceeds experts={experts}; a token cannot be routed to "
                "more experts than there are"
            )
        if activation not in ACTIVATIONS:
            raise InputError(
                f"moe: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        if not isinstance(shared_gate, bool):
            raise InputError(f"moe: shared_gate must be true or false, got {shared_gate!r}")
        if shared_gate and not shared_expert_dim:
            raise InputError("moe: shared_gate needs a shared expert (shared_expert_dim > 0)")
        return cls(width, experts, top_k, expert_dim, shared_expert_dim, activation, shared_gate)

    @property
    def gated(self) -> bool:
        return self.activation == "swiglu"

    @property
    def expert_params(self) -> int:
        """Weights of one routed expert (gate + up + down for swiglu, up + down for relu2)."""
        return (3 if self.gated else 2) * self.width * self.expert_dim

    @property
    def shared_params(self) -> int:
        gate = self.width if self.shared_gate else 0
        return (3 if self.gated else 2) * self.width * self.shared_expert_dim + gate

    @property
    def router_params(self) -> int:
        return self.width * self.experts

    def param_count(self) -> int:
        """All weights, every expert included: norm, router, experts, shared expert."""
        return (
            self.width + self.router_params + self.experts * self.expert_params + self.shared_params
        )

    def active_param_count(self) -> int:
        """Weights one token multiplies by: norm, router, its top_k experts, shared expert."""
        return (
            self.width + self.router_params + self.top_k * self.expert_params + self.shared_params
        )

    def experts_touched(self, batch: int) -> float:
        """Expected distinct experts one decode step reads (uniform routing, see module doc)."""
        return expected_experts_touched(self.experts, self.top_k, batch)

    def flops_per_step(self, batch, context):
        return 2 * batch * self.active_param_count()

    def bytes_per_step(self, batch, context, dtype):
        # weights: norm, router and shared expert always; routed experts only those touched
        nbytes = dtype_bytes(dtype)
        always = self.width + self.router_params + self.shared_params
        routed = self.experts_touched(batch) * self.expert_params
        activations = 2 * batch * self.width * nbytes
        return round((always + routed) * nbytes) + activations
