"""Copies for timing are sized on what a step touches: an MoE step with a fixed input reads only
the experts it routes to, so its copies are sized on those (not on every expert), and the rotation
over them really leaves the last-level cache."""

from __future__ import annotations

from latprof import measure
from latprof.lut import Setting
from latprof.registry import build_spec

L2 = 50 * 1024**2  # an H100's L2


def _target(op, width, batch, **params):
    setting = Setting("decode", batch, 0, "bfloat16", "cuda", "torch", "eager")
    return measure.OperatorTarget(build_spec(op, width, **params), setting)


def test_moe_copies_are_sized_on_the_routed_experts():
    t = _target("moe", 1024, 1)  # 8 experts, top-2: a step reads about a quarter of them
    full, touched = t.bytes_per_copy(), t.touched_bytes()
    assert touched < 0.35 * full
    copies = measure.copies_needed(t, L2)
    assert copies * touched >= 2 * L2  # the touched bytes of the rotation exceed 2x L2
    assert copies * full > 2 * L2 * 2  # sized on all weights it would have been ~3 copies
    assert copies * full <= measure.COPY_BUDGET_BYTES["cuda"]


def test_batch_touching_every_expert_needs_no_more_copies_than_dense_sizing():
    t = _target("moe", 1024, 32)  # 32 tokens x top-2 of 8: every expert is read
    assert t.touched_bytes() >= 0.99 * (t.bytes_per_copy() - 32 * 1024 * 4)
    dense = -(-2 * L2 // t.bytes_per_copy())
    assert measure.copies_needed(t, L2) <= dense + 1


def test_dense_operators_keep_their_whole_copy_size():
    t = _target("ffn", 1024, 8)
    assert t.touched_bytes() == t.bytes_per_copy()
