"""Mamba-1 step kernels (causal_conv1d_update, selective_state_update) against their references,
on CPU through Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
from op_checks import KERNEL_TOL as TOL

from latprof.kernels.mamba_step import (
    causal_conv1d_update,
    causal_conv1d_update_ref,
    selective_state_update,
    selective_state_update_ref,
)


def randn(gen, *shape, dtype=torch.float32, device="cpu", scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# causal_conv1d_update


def conv_inputs(batch, dim, d_conv, dtype, device, seed, bias=True):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        x=randn(gen, batch, dim, dtype=dtype, device=device),
        conv_state=randn(gen, batch, dim, d_conv, dtype=dtype, device=device),
        weight=randn(gen, dim, d_conv, dtype=dtype, device=device, scale=0.5),
        bias=randn(gen, dim, dtype=dtype, device=device) if bias else None,
    )


def check_conv(inputs, dtype):
    mine = {k: v.clone() if v is not None else None for k, v in inputs.items()}
    ref = {k: v.clone() if v is not None else None for k, v in inputs.items()}
    y = causal_conv1d_update(**mine)
    expected = causal_conv1d_update_ref(**ref)
    assert y.dtype == dtype and not y.isnan().any()
    torch.testing.assert_close(y, expected, **TOL[dtype])
    torch.testing.assert_close(mine["conv_state"], ref["conv_state"], atol=0, rtol=0)
    # the shift itself: the new x is the last column, the oldest column is gone
    assert torch.equal(mine["conv_state"][:, :, -1], inputs["x"])
    assert torch.equal(mine["conv_state"][:, :, :-1], inputs["conv_state"][:, :, 1:])


@pytest.mark.parametrize(
    "batch,dim,d_conv,dtype,bias",
    [
        (1, 2048 + 16, 4, torch.float32, True),
        (3, 320, 4, torch.bfloat16, True),
        (2, 100, 3, torch.float32, False),
        (2, 63, 2, torch.float16, True),
    ],
)
def test_causal_conv1d_update(device, poison_empty, batch, dim, d_conv, dtype, bias):
    check_conv(conv_inputs(batch, dim, d_conv, dtype, device, seed=dim, bias=bias), dtype)


def test_causal_conv1d_two_steps(device):
    inputs = conv_inputs(2, 100, 4, torch.float32, device, seed=1)
    ref_state = inputs["conv_state"].clone()
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        x = randn(gen, 2, 100, device=device)
        y = causal_conv1d_update(x, inputs["conv_state"], inputs["weight"], inputs["bias"])
        expected = causal_conv1d_update_ref(x, ref_state, inputs["weight"], inputs["bias"])
        torch.testing.assert_close(y, expected, **TOL[torch.float32])
    torch.testing.assert_close(inputs["conv_state"], ref_state, atol=0, rtol=0)


@pytest.mark.parametrize(
    "name,bad",
    [
        ("x", lambda t: t[:, :-1]),
        ("x", lambda t: t.to(torch.int32)),
        ("conv_state", lambda t: t[:1]),
        ("conv_state", lambda t: t[..., ::2]),
        ("weight", lambda t: t[:, :-1]),
        ("bias", lambda t: t[:-1]),
    ],
)
def test_causal_conv1d_rejects_bad_input(name, bad):
    inputs = conv_inputs(2, 40, 4, torch.float32, "cpu", seed=3)
    inputs[name] = bad(inputs[name])
    with pytest.raises(ValueError):
        causal_conv1d_update(**inputs)


# ---------------------------------------------------------------------------------------------
# selective_state_update


def ssm_inputs(batch, dim, d_state, dtype, state_dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        state=randn(gen, batch, dim, d_state, dtype=state_dtype, device=device),
        x=randn(gen, batch, dim, dtype=dtype, device=device),
        dt=randn(gen, batch, dim, dtype=dtype, device=device),
        A=-torch.rand(dim, d_state, generator=gen).add(0.05).to(device),
        B=randn(gen, batch, d_state, dtype=dtype, device=device),
        C=randn(gen, batch, d_state, dtype=dtype, device=device),
        D=randn(gen, dim, device=device),
        z=randn(gen, batch, dim, dtype=dtype, device=device),
        dt_bias=randn(gen, dim, device=device, scale=0.5),
    )


@pytest.mark.parametrize(
    "batch,dim,d_state,dtype,state_dtype",
    [
        (1, 2048 + 16, 16, torch.float32, torch.float32),
        (2, 320, 128, torch.float32, torch.float32),
        (3, 100, 16, torch.bfloat16, torch.float32),
        (2, 63, 128, torch.bfloat16, torch.bfloat16),
        (1, 96, 24, torch.float16, torch.float32),  # d_state not a power of two
    ],
)
def test_selective_state_update(device, poison_empty, batch, dim, d_state, dtype, state_dtype):
    inputs = ssm_inputs(batch, dim, d_state, dtype, state_dtype, device, seed=dim + d_state)
    mine = {k: v.clone() for k, v in inputs.items()}
    ref = {k: v.clone() for k, v in inputs.items()}
    y = selective_state_update(**mine)
    expected = selective_state_update_ref(**ref)
    assert y.dtype == dtype and not y.isnan().any()
    torch.testing.assert_close(y, expected, **TOL[dtype])
    torch.testing.assert_close(mine["state"], ref["state"], **TOL[state_dtype])
    assert not torch.equal(mine["state"], inputs["state"]), "state was not updated"
    for name in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias"):
        assert torch.equal(mine[name], inputs[name]), f"{name} was modified"


@pytest.mark.parametrize(
    "name,bad",
    [
        ("state", lambda t: t[..., :-1]),
        ("x", lambda t: t[:1]),
        ("dt", lambda t: t.to(torch.int64)),
        ("A", lambda t: t.T.contiguous()),
        ("B", lambda t: t[:, :-1]),
        ("C", lambda t: t[:1]),
        ("D", lambda t: t[:-1]),
        ("z", lambda t: t[:, ::2]),
        ("dt_bias", lambda t: t[None]),
    ],
)
def test_selective_state_update_rejects_bad_input(name, bad):
    inputs = ssm_inputs(2, 40, 16, torch.float32, torch.float32, "cpu", seed=4)
    inputs[name] = bad(inputs[name])
    with pytest.raises(ValueError):
        selective_state_update(**inputs)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,dim", [(1, 4096), (32, 2048 + 16)])
def test_bf16_on_gpu(batch, dim):
    inputs = conv_inputs(batch, dim, 4, torch.bfloat16, "cuda", seed=5)
    check_conv(inputs, torch.bfloat16)
    inputs = ssm_inputs(batch, dim, 16, torch.bfloat16, torch.float32, "cuda", seed=6)
    mine = {k: v.clone() for k, v in inputs.items()}
    ref = {k: v.clone() for k, v in inputs.items()}
    y = selective_state_update(**mine)
    torch.testing.assert_close(y, selective_state_update_ref(**ref), **TOL[torch.bfloat16])
    torch.testing.assert_close(mine["state"], ref["state"], **TOL[torch.float32])
