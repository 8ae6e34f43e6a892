"""FFN block: activations against hand-written formulas, decode steps against prefill, parameter
count, backend errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from op_checks import param_count, run_steps

from latprof.errors import InputError
from latprof.ops.base import rms_norm
from latprof.ops.ffn import FFNBlock
from latprof.registry import build_spec

ACTIVATIONS = ["swiglu", "relu2", "gelu"]
# (width, ffn_dim): defaults (3 * width rounded to 128) and awkward sizes
SIZES = [(64, None), (320, None), (96, 200)]


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))


def expected(block, x):
    """The MLP written out from the block's weights, independently of FFNBlock.forward."""
    h = rms_norm(x, block.norm)
    hidden = h @ block.w_in.T
    if block.spec.activation == "swiglu":
        gate, up = hidden[..., : block.spec.ffn_dim], hidden[..., block.spec.ffn_dim :]
        act = gate * torch.sigmoid(gate) * up
    elif block.spec.activation == "relu2":
        act = torch.clamp(hidden, min=0) ** 2
    else:
        act = gelu_tanh(hidden)
    return x + act @ block.w_out.T


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_step_matches_formula_and_prefill(activation, size):
    width, ffn_dim = size
    spec = build_spec("ffn", width, ffn_dim=ffn_dim, activation=activation)
    block = FFNBlock(spec, seed=1)
    assert block.allocate_state(3, 10) == {}
    for batch, seq in [(1, 1), (3, 7), (1, 63)]:
        gen = torch.Generator().manual_seed(seq + batch)
        x = block.example_sequence(batch, seq, gen)  # (batch, seq, width)
        ref = block.prefill(x, {})
        assert ref.shape == x.shape
        torch.testing.assert_close(ref, expected(block, x), atol=1e-4, rtol=1e-4)
        steps = run_steps(block, x, {})
        torch.testing.assert_close(steps, ref, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(ref, x, atol=1e-3), "the MLP added nothing"


def test_gelu_is_tanh_approximation():
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(F.gelu(x, approximate="tanh"), gelu_tanh(x))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("width", [64, 320])
def test_param_count_matches_spec(activation, width):
    spec = build_spec("ffn", width, activation=activation)
    block = FFNBlock(spec)
    assert param_count(block) == spec.param_count()


def test_weights_are_random_and_seeded():
    spec = build_spec("ffn", 64)
    a, b, c = FFNBlock(spec, seed=1), FFNBlock(spec, seed=1), FFNBlock(spec, seed=2)
    assert torch.equal(a.w_in, b.w_in)
    assert not torch.equal(a.w_in, c.w_in)
    assert (a.w_in != 0).all() and a.w_in.std() > 0


def test_bad_backend_is_input_error():
    with pytest.raises(InputError, match="valid for ffn: torch"):
        FFNBlock(build_spec("ffn", 64), backend="triton")
