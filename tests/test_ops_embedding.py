"""Embedding and LM head: gathers, logits, argmax, tied weights, steps against prefill,
parameter counts, backend errors."""

from __future__ import annotations

import pytest
import torch
from op_checks import param_count, run_steps

from latprof.errors import InputError
from latprof.ops.base import rms_norm
from latprof.ops.embedding import EmbeddingBlock, LMHeadBlock
from latprof.registry import build_spec

SIZES = [(64, 1000), (320, 517)]  # (width, vocab_size)


@pytest.mark.parametrize("size", SIZES, ids=str)
def test_embedding_gathers_rows(size):
    width, vocab = size
    block = EmbeddingBlock(build_spec("embedding", width, vocab_size=vocab), seed=1)
    ids = block.example_input(3)
    assert ids.shape == (3,) and ids.dtype == torch.int64
    assert ((ids >= 0) & (ids < vocab)).all()
    out = block.step(ids, block.allocate_state(3, 8), 0)
    assert out.shape == (3, width) and out.dtype == torch.float32
    for b in range(3):
        assert torch.equal(out[b], block.weight[ids[b]])
    seq_ids = block.example_sequence(3, 7)
    assert seq_ids.shape == (3, 7) and seq_ids.dtype == torch.int64
    full = block.prefill(seq_ids, {})
    assert full.shape == (3, 7, width)
    steps = run_steps(block, seq_ids, {})
    assert torch.equal(steps, full)


@pytest.mark.parametrize("size", SIZES, ids=str)
def test_lm_head_logits_and_argmax(size):
    width, vocab = size
    block = LMHeadBlock(build_spec("lm_head", width, vocab_size=vocab), seed=2)
    gen = torch.Generator().manual_seed(3)
    x = block.example_sequence(3, 63, gen)  # (batch, seq, width)
    logits = block.logits(x[:, 0])
    assert logits.shape == (3, vocab) and logits.dtype == torch.float32
    want = rms_norm(x[:, 0], block.norm) @ block.weight.T
    torch.testing.assert_close(logits, want, atol=1e-4, rtol=1e-4)
    ids = block.step(x[:, 0], {}, 0)
    assert ids.shape == (3,) and ids.dtype == torch.int64
    assert torch.equal(ids, want.argmax(-1))
    full = block.prefill(x, {})
    assert full.shape == (3, 63) and full.dtype == torch.int64
    steps = run_steps(block, x, {})
    assert torch.equal(steps, full)
    assert full.unique().numel() > 10, "random inputs should pick many different tokens"


def test_lm_head_norm_is_applied():
    """Scaling the input leaves the logits unchanged (RMSNorm), and the norm weight matters."""
    block = LMHeadBlock(build_spec("lm_head", 64, vocab_size=300), seed=4)
    x = block.example_input(2)
    torch.testing.assert_close(block.logits(3.0 * x), block.logits(x), atol=1e-4, rtol=1e-4)
    unit = block.logits(x).clone()
    with torch.no_grad():
        block.norm.fill_(1.0)
    assert not torch.allclose(block.logits(x), unit, atol=1e-3)


def test_tied_lm_head_shares_the_embedding_weight():
    emb = EmbeddingBlock(build_spec("embedding", 64, vocab_size=300), seed=5)
    head = LMHeadBlock(build_spec("lm_head", 64, vocab_size=300), seed=6)
    x = head.example_input(2)
    untied = head.logits(x)
    head.tie_to(emb)
    assert head.weight is emb.weight
    tied = head.logits(x)
    assert not torch.allclose(tied, untied)
    torch.testing.assert_close(tied, rms_norm(x, head.norm) @ emb.weight.T)
    with torch.no_grad():
        emb.weight[:, 0] += 1.0  # shared, not copied: the head sees the change
    assert not torch.allclose(head.logits(x), tied)


def test_tie_to_rejects_mismatched_shapes():
    emb = EmbeddingBlock(build_spec("embedding", 64, vocab_size=301))
    head = LMHeadBlock(build_spec("lm_head", 64, vocab_size=300))
    with pytest.raises(InputError, match="cannot tie"):
        head.tie_to(emb)


@pytest.mark.parametrize("size", SIZES, ids=str)
def test_param_counts_match_spec(size):
    width, vocab = size
    for op, cls in [("embedding", EmbeddingBlock), ("lm_head", LMHeadBlock)]:
        spec = build_spec(op, width, vocab_size=vocab)
        block = cls(spec)
        assert param_count(block) == spec.param_count(), op


@pytest.mark.parametrize("cls,op", [(EmbeddingBlock, "embedding"), (LMHeadBlock, "lm_head")])
def test_bad_backend_is_input_error(cls, op):
    with pytest.raises(InputError, match=f"valid for {op}: torch"):
        cls(build_spec(op, 64, vocab_size=100), backend="sdpa")
