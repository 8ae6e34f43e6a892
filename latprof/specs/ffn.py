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

    op: ClassVar[str] = "ffn"

    @classmethod
    def resolve(cls, width, ffn_dim=None, activation="swiglu"):
        positive(cls.op, width=width)
        if ffn_dim is None:
            ffn_dim = round_to(3 * width, 128)
        positive(cls.op, ffn_dim=ffn_dim)
        if activation not in ACTIVATIONS:
            raise InputError(
                f"ffn: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        return cls(width, ffn_dim, activation)

    @property
    def gated(self) -> bool:
        return self.activation == "swiglu"

    def param_count(self) -> int:
        matrices = 3 if self.gated else 2
        return matrices * self.width * self.ffn_dim + self.width
