"""Token embedding (ids -> hidden) and LM head (final RMSNorm, vocab projection, argmax)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from latprof.specs.base import OpSpec, dtype_bytes, positive


@dataclass(frozen=True)
class EmbeddingSpec(OpSpec):
    vocab_size: int = 32000

    op: ClassVar[str] = "embedding"
    input_kind: ClassVar[str] = "tokens"

    @classmethod
    def resolve(cls, width, vocab_size=32000):
        positive(cls.op, width=width, vocab_size=vocab_size)
        return cls(width, vocab_size)

    def param_count(self) -> int:
        return self.vocab_size * self.width

    def flops_per_step(self, batch, context):
        return 0

    def bytes_per_step(self, batch, context, dtype):
        # a gather: one row per token is read, the hidden state written; ids are negligible
        return 2 * batch * self.width * dtype_bytes(dtype) + 8 * batch


@dataclass(frozen=True)
class LMHeadSpec(OpSpec):
    vocab_size: int = 32000

    op: ClassVar[str] = "lm_head"

    @classmethod
    def resolve(cls, width, vocab_size=32000):
        positive(cls.op, width=width, vocab_size=vocab_size)
        return cls(width, vocab_size)

    def param_count(self) -> int:
        return self.vocab_size * self.width + self.width

    def bytes_per_step(self, batch, context, dtype):
        nbytes = dtype_bytes(dtype)
        logits = 2 * batch * self.vocab_size * nbytes  # written, read back by argmax
        return self.param_count() * nbytes + batch * self.width * nbytes + logits + 8 * batch
