"""LFM2's gated short-conv block: decode steps against prefill, fla's causal_conv1d_update
against the torch step, transformers' Lfm2ShortConv as an independent peer for the mixer, and
the cost model against the block's tensors."""

from __future__ import annotations

import pytest
import torch
from op_checks import (
    assert_state_bytes_match_spec,
    check_fla_refused_without_interpreter,
    check_fla_step_equals_torch_step,
    param_count,
    run_steps,
)

from latprof.ops.base import rms_norm
from latprof.ops.short_conv import ShortConvBlock
from latprof.registry import build_spec

ATOL = 1e-5


def spec_of(width=64, d_conv=3):
    return build_spec("short_conv", width, d_conv=d_conv)


@pytest.mark.parametrize(("batch", "seq", "d_conv"), [(1, 1, 3), (3, 2, 3), (2, 9, 3), (2, 7, 4)])
def test_steps_match_prefill(batch, seq, d_conv):
    block = ShortConvBlock(spec_of(d_conv=d_conv), seed=1)
    x = block.example_sequence(batch, seq, torch.Generator().manual_seed(seq))
    prefill_state, step_state = block.allocate_state(batch, seq), block.allocate_state(batch, seq)
    ref = block.prefill(x, prefill_state)
    torch.testing.assert_close(run_steps(block, x, step_state), ref, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(step_state["conv"], prefill_state["conv"], atol=ATOL, rtol=0)


def test_params_and_state_bytes_match_the_block():
    spec = spec_of(96, 3)
    block = ShortConvBlock(spec)
    assert param_count(block) == spec.param_count() == 4 * 96 * 96 + 96 * 3 + 96
    assert_state_bytes_match_spec(block.allocate_state(2, 50), spec, 2, 50)
    assert spec.state_bytes(1, 8000, "bf16").conv == 96 * 3 * 2  # independent of the context


def test_mixer_matches_transformers_lfm2_short_conv():
    """transformers' Lfm2ShortConv (its PyTorch path, no cache) with latprof's weights."""
    lfm2 = pytest.importorskip("transformers.models.lfm2.modeling_lfm2")
    from transformers import Lfm2Config

    width, seq = 64, 9
    config = Lfm2Config(hidden_size=width, conv_L_cache=3, conv_bias=False, num_hidden_layers=1)
    peer = lfm2.Lfm2ShortConv(config, layer_idx=0)
    block = ShortConvBlock(spec_of(width), seed=4)
    with torch.no_grad():
        peer.in_proj.weight.copy_(block.in_proj)
        peer.out_proj.weight.copy_(block.out_proj)
        peer.conv.weight.copy_(block.conv_weight.unsqueeze(1))  # (width, 1, d_conv)
    x = block.example_sequence(2, seq, torch.Generator().manual_seed(0))
    ours = block.prefill(x, block.allocate_state(2, seq)) - x
    with torch.no_grad():
        theirs = peer(rms_norm(x, block.norm))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_fla_on_cpu_without_interpreter_is_unavailable(monkeypatch):
    check_fla_refused_without_interpreter(ShortConvBlock, spec_of(), monkeypatch)


@pytest.mark.parametrize(("width", "batch", "steps"), [(64, 1, 3), (96, 3, 4)])
def test_fla_step_equals_torch_step(device, width, batch, steps):
    check_fla_step_equals_torch_step(ShortConvBlock, spec_of(width), device, batch, steps)
