"""Mamba2 shapes of published hybrids: an inner size that is no multiple of the width
(Falcon-H1 1.5 x, Nemotron-H heads x head_dim), no gated norm, no pre-norm of its own."""

from __future__ import annotations

import pytest
import torch
from op_checks import (
    check_fast_backend_steps_match_torch,
    check_ssm_prefill_equals_steps,
    param_count,
)

from latprof.ops.mamba2 import Mamba2Block
from latprof.registry import build_spec, spec_from_key

VARIANTS = [
    {"inner": 96},  # 1.5 x width 64
    {"inner": 96, "gated_norm": False, "pre_norm": False},  # Falcon-H1's
    {"gated_norm": False},
]


def spec_of(**variant):
    return build_spec("mamba2", 64, head_dim=16, d_state=16, **variant)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_params_and_steps_match_prefill(variant):
    spec = spec_of(**variant)
    block = Mamba2Block(spec, seed=2)
    assert param_count(block) == spec.param_count()
    assert spec_from_key(spec.key) == spec
    x = block.example_sequence(2, 7, generator=torch.Generator().manual_seed(1))
    check_ssm_prefill_equals_steps(block, x)


def test_inner_size_as_given():
    spec = spec_of(inner=96)
    assert (spec.d_inner, spec.heads, spec.expand) == (96, 6, 0)
    assert spec_of(inner=128) == spec_of(expand=2)  # a multiple of the width is an expand
    without = spec_of(inner=96, gated_norm=False, pre_norm=False)
    assert spec.param_count() - without.param_count() == 96 + 64  # gated norm + pre-norm


@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_fast_backends_with_inner_size_match_torch(backend, device, monkeypatch):
    if backend == "triton":
        pytest.importorskip("latprof.kernels.mamba2_step")
        pytest.importorskip("latprof.kernels.gated_rms_norm")
    spec = build_spec("mamba2", 64, inner=96, head_dim=32, d_state=16, gated_norm=False)
    check_fast_backend_steps_match_torch(
        Mamba2Block, spec, backend, device, monkeypatch, batch=2, steps=2
    )
