"""Token embedding (ids -> hidden states) and LM head (final RMSNorm, vocab projection, greedy
argmax -> next token ids).  Neither is residual; neither keeps state.

With tied embeddings (`LMHeadBlock.tie_to`) the head projects with the embedding's own weight
tensor, as Llama-style models with `tie_word_embeddings` do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latprof.errors import InputError
from latprof.ops.base import Block, State, rms_norm
from latprof.specs.embedding import EmbeddingSpec, LMHeadSpec


class EmbeddingBlock(Block):
    """weight[ids]: a gather of one row of (vocab_size, width) per token."""

    spec: EmbeddingSpec

    def __init__(
        self,
        spec: EmbeddingSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        # entries uniform in (-1, 1): hidden states of order one, like a trained embedding's
        self.weight = self.new_param(spec.vocab_size, spec.width, fan_in=1)  # (vocab, width)

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch,) int64 token ids -> (batch, width)"""
        return F.embedding(x, self.weight)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq) int64 token ids -> (batch, seq, width)"""
        return F.embedding(x, self.weight)

    def example_input(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random token ids: (batch,) int64."""
        return self.example_sequence(batch, 1, generator)[:, 0]

    def example_sequence(
        self, batch: int, seq: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Random token ids: (batch, seq) int64."""
        ids = torch.randint(
            self.spec.vocab_size, (batch, seq), generator=generator or self.generator
        )  # (batch, seq) int64
        return ids.to(self.device)


class LMHeadBlock(Block):
    """argmax(rms_norm(x) @ weight.T): next-token ids by greedy decoding."""

    spec: LMHeadSpec

    def __init__(
        self,
        spec: LMHeadSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(spec, backend=backend, device=device, dtype=dtype, seed=seed)
        self.norm = self.new_norm(spec.width)
        self.weight = self.new_param(spec.vocab_size, spec.width)  # (vocab, width)

    def tie_to(self, embedding: EmbeddingBlock) -> None:
        """Project with `embedding`'s weight (tied embeddings): one tensor, shared, not copied."""
        w = embedding.weight
        if w.shape != self.weight.shape or w.dtype != self.dtype or w.device != self.device:
            raise InputError(
                f"lm_head: cannot tie to an embedding of shape {tuple(w.shape)}, {w.dtype} on "
                f"{w.device}; need {tuple(self.weight.shape)}, {self.dtype} on {self.device}"
            )
        self.weight = w

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., width) -> float32 logits (..., vocab_size)"""
        return F.linear(rms_norm(x, self.norm), self.weight).float()

    def step(self, x: torch.Tensor, state: State, pos: int) -> torch.Tensor:
        """x: (batch, width) -> next token ids (batch,) int64"""
        return self.logits(x).argmax(dim=-1)

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        """x: (batch, seq, width) -> next token ids (batch, seq) int64"""
        return self.logits(x).argmax(dim=-1)
