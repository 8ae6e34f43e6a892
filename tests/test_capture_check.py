"""Capturability on CPU (latprof.capture_check): every operator backend that runs here, and whole
hybrid models, take one decode step under a dispatch mode that records host synchronisation;
a backend the registry declares graph-capturable must do none and must update its state in place;
one declared not capturable must really synchronise (else the declaration is stale)."""

from __future__ import annotations

import pytest
import torch

from latprof import capture_check as cc
from latprof.model_spec import ModelSpec
from latprof.ops import backend_unavailable
from latprof.registry import OPERATORS, build_spec

WIDTH = 64
SMALL = {
    "attention": dict(heads=4, kv_heads=2, head_dim=16),
    # a window shorter than the checked context: the ring buffer wraps during the check
    "attention_window": dict(heads=4, kv_heads=2, head_dim=16, window=4),
    "moe": dict(experts=4, top_k=2),
    "mla": dict(
        heads=2,
        q_lora_rank=24,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
    ),
    "mamba2": dict(head_dim=16, d_state=16),
    "deltanet": dict(heads=2, head_dim=32),
    "gated_deltanet": dict(heads=2, head_dim=32),
    "gla": dict(heads=2, head_dim=32),
    "kda": dict(heads=2, head_dim=32),
    "shared_attention": dict(
        heads=4, kv_heads=2, rope=True, adapter_rank=8, attention_adapters=True
    ),
    "embedding": dict(vocab_size=97),
    "lm_head": dict(vocab_size=97),
}
#: backends whose kernels are Triton run on CPU only in the interpreter (which copies every
#: tensor to the host by design): their capturability is checked on a GPU (tests/test_gpu_paths)
CPU_BACKENDS = [
    (name, b)
    for name, op in OPERATORS.items()
    for b in op.backends
    if not b.triton and backend_unavailable(name, b.name, "cpu") is None
]


def _spec(name):
    return build_spec(name, WIDTH, **SMALL.get(name, {}))


@pytest.mark.parametrize("tensor_pos", [False, True], ids=["int-pos", "tensor-pos"])
@pytest.mark.parametrize(("op", "backend"), CPU_BACKENDS, ids=lambda v: getattr(v, "name", v))
def test_operator_step_matches_its_capturability_declaration(op, backend, tensor_pos):
    report = cc.check_operator(_spec(op), backend.name, batch=2, context=8, tensor_pos=tensor_pos)
    assert not report.replaced_state, report.describe()
    if backend.graph_capturable:
        assert report.capturable, report.describe()
    else:
        assert report.host_syncs, (
            f"{op}/{backend.name} is declared not graph-capturable but its step synchronises "
            "with nothing: correct latprof/registry.py"
        )


def test_every_family_is_checked_on_cpu():
    assert {op for op, _ in CPU_BACKENDS} == set(OPERATORS)


def _hybrid(moe: bool) -> ModelSpec:
    layers = [
        _spec("attention"),
        _spec("ffn"),
        _spec("mamba"),
        _spec("mamba2"),
        _spec("deltanet"),
        _spec("gated_deltanet"),
        _spec("gla"),
        _spec("kda"),
        _spec("mla"),
        _spec("shared_attention"),
        _spec("mamba2"),
        _spec("shared_attention"),  # reuses layer 9's shared weights
    ] + ([_spec("moe")] if moe else [])
    return ModelSpec("tiny-hybrid", WIDTH, 97, tuple(layers), meta_tokens=2, weight_ties=((11, 9),))


@pytest.mark.parametrize("backends", [None, {"attention": "sdpa"}], ids=["torch", "sdpa"])
def test_whole_hybrid_model_step_is_capturable(backends):
    report = cc.check_model(_hybrid(moe=False), backends=backends, batch=2, context=8)
    assert report.capturable, report.describe()


def test_whole_model_with_moe_is_not_and_says_where():
    report = cc.check_model(_hybrid(moe=True), batch=2, context=8)
    assert not report.capturable
    assert any("moe.py" in where for _, _, where in report.host_syncs), report.describe()


@pytest.mark.parametrize(
    ("fn", "why"),
    [
        (lambda t: t.sum().item(), "host"),
        (lambda t: t.tolist(), "host"),
        (lambda t: t.nonzero(), "host"),
        (lambda t: t[t > 0], "boolean-mask"),
        (lambda t: t.masked_select(t > 0), "host"),
        (lambda t: torch.unique(t), "host"),
        (lambda t: bool((t > 0).any()), "host"),
    ],
)
def test_recorder_sees_each_kind_of_host_sync(fn, why):
    recorder = cc.HostSyncRecorder()
    with recorder:
        fn(torch.randn(8))
    assert recorder.calls and any(why in w for _, w, _ in recorder.calls), recorder.calls


def test_recorder_ignores_device_side_work():
    recorder = cc.HostSyncRecorder()
    t = torch.randn(4, 8)
    with recorder:
        torch.where(t > 0, t, 0.0).softmax(-1).argmax(-1)
        t.index_select(0, torch.tensor([1, 2]))
        t.repeat_interleave(2, dim=0)
    assert recorder.calls == []


def test_replaced_state_is_reported():
    state = {"h": torch.zeros(3)}

    def step():
        state["h"] = state["h"] + 1  # a new buffer: a graph replay would keep the old one

    report = cc.check_step("replacing", step, [state])
    assert report.replaced_state == ("0.h",) and not report.capturable
