"""Feed-forward block: pre-RMSNorm, MLP (SwiGLU, or non-gated relu2 / gelu), residual add."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import InputError, OpSpec, positive, round_to

ACTIVATIONS = ("swiglu", "relu2", "gelu")


@dataclass(frozen=True)
class FFNSpec(OpSpec):
    ffn_dim: int = 0
    activation: str = "swiglu"
    #: an RMSNorm of the width on the MLP's output before the residual add (Gemma 3)
    post_norm: bool = False

    op: ClassVar[str] = "ffn"
    extra_fields: ClassVar[tuple[str, ...]] = ("post_norm",)

    @classmethod
    def resolve(cls, width, ffn_dim=None, activation="swiglu", post_norm=False):
        positive(cls.op, width=width)
        if ffn_dim is None:
            ffn_dim = round_to(3 * width, 128)
        positive(cls.op, ffn_dim=ffn_dim)
        if activation not in ACTIVATIONS:
            raise InputError(
                f"ffn: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        if not isinstance(post_norm, bool):
            raise InputError(f"ffn: post_norm must be true or false, got {post_norm!r}")
        return cls(width, ffn_dim, activation, post_norm)

    @property
    def gated(self) -> bool:
        return self.activation == "swiglu"

    def param_count(self) -> int:
        matrices = 3 if self.gated else 2
        norms = self.width * (2 if self.post_norm else 1)
        return matrices * self.width * self.ffn_dim + norms
