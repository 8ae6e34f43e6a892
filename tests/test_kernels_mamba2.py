"""mamba2_state_update (one fused Triton kernel) against mamba2_state_update_ref, on CPU through
Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
from op_checks import KERNEL_TOL as TOL

from latprof.kernels import mamba2_step
from latprof.kernels.mamba2_step import mamba2_state_update, mamba2_state_update_ref


def make_inputs(
    batch, heads, head_dim, d_state, n_groups, d_conv, dtype, state_dtype, device, seed, bias=True
):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, dtype=dtype, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=device)

    conv_dim = heads * head_dim + 2 * n_groups * d_state
    args = dict(
        xBC=rand(batch, conv_dim),
        dt=rand(batch, heads),
        conv_state=rand(batch, conv_dim, d_conv),
        conv_weight=rand(conv_dim, d_conv, scale=0.5),
        conv_bias=rand(conv_dim) if bias else None,
        ssm_state=rand(batch, heads, head_dim, d_state, dtype=state_dtype),
        A=-torch.rand(heads, generator=gen).add(0.05).to(device),
        D=rand(heads, dtype=torch.float32),
        dt_bias=rand(heads, dtype=torch.float32, scale=0.5),
    )
    return args, dict(n_groups=n_groups, head_dim=head_dim, d_state=d_state)


def clone(args):
    return {k: v.clone() if v is not None else None for k, v in args.items()}


def check_step(args, sizes, dtype, state_dtype):
    mine, ref = clone(args), clone(args)
    y = mamba2_state_update(**mine, **sizes)
    expected = mamba2_state_update_ref(**ref, **sizes)
    assert y.dtype == dtype and not y.isnan().any(), "some output elements were never written"
    torch.testing.assert_close(y, expected, **TOL[dtype])
    # B/C channels are read by every head of a group but must be shifted exactly once
    torch.testing.assert_close(mine["conv_state"], ref["conv_state"], atol=0, rtol=0)
    assert torch.equal(mine["conv_state"][:, :, :-1], args["conv_state"][:, :, 1:])
    torch.testing.assert_close(mine["ssm_state"], ref["ssm_state"], **TOL[state_dtype])
    for name in ("xBC", "dt", "conv_weight", "A", "D", "dt_bias"):
        assert torch.equal(mine[name], args[name]), f"{name} was modified"
    return mine


# (batch, heads, head_dim, d_state, n_groups, d_conv, dtype, ssm_state dtype)
CASES = [
    (1, 4, 64, 128, 1, 4, torch.float32, torch.float32),
    (2, 4, 64, 16, 2, 4, torch.float32, torch.float32),
    (3, 6, 64, 128, 2, 4, torch.bfloat16, torch.float32),
    (2, 2, 48, 24, 1, 3, torch.float32, torch.float32),  # head_dim and d_state not powers of 2
    (2, 4, 64, 128, 2, 4, torch.float16, torch.float16),
]


@pytest.mark.parametrize("batch,heads,head_dim,d_state,n_groups,d_conv,dtype,state_dtype", CASES)
def test_matches_reference(
    device, poison_empty, batch, heads, head_dim, d_state, n_groups, d_conv, dtype, state_dtype
):
    seed = batch * 100 + heads * 10 + n_groups
    args, sizes = make_inputs(
        batch, heads, head_dim, d_state, n_groups, d_conv, dtype, state_dtype, device, seed
    )
    check_step(args, sizes, dtype, state_dtype)
    # each launch leaves its per-(batch, group) tickets at zero for the next one
    assert not mamba2_step._TICKETS[args["xBC"].device].any()


def test_no_conv_bias(device, poison_empty):
    args, sizes = make_inputs(2, 2, 64, 16, 1, 4, torch.float32, torch.float32, device, 1, False)
    check_step(args, sizes, torch.float32, torch.float32)


def test_three_steps(device):
    """Consecutive steps: the conv window of B/C must advance by exactly one column per step."""
    args, sizes = make_inputs(2, 4, 64, 16, 2, 4, torch.float32, torch.float32, device, 2)
    ref = clone(args)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        xBC = torch.randn(args["xBC"].shape, generator=gen).to(device)
        dt = torch.randn(args["dt"].shape, generator=gen).to(device)
        y = mamba2_state_update(**{**args, "xBC": xBC, "dt": dt}, **sizes)
        expected = mamba2_state_update_ref(**{**ref, "xBC": xBC, "dt": dt}, **sizes)
        torch.testing.assert_close(y, expected, **TOL[torch.float32])
    torch.testing.assert_close(args["conv_state"], ref["conv_state"], atol=0, rtol=0)
    torch.testing.assert_close(args["ssm_state"], ref["ssm_state"], **TOL[torch.float32])


@pytest.mark.parametrize(
    "name,bad",
    [
        ("xBC", lambda t: t[:, :-1]),  # conv_dim does not match heads, head_dim, d_state
        ("xBC", lambda t: t.to(torch.int32)),
        ("dt", lambda t: t[:, :-1]),  # 3 heads, not a multiple of n_groups = 2
        ("conv_state", lambda t: t.transpose(1, 2).contiguous().transpose(1, 2)),
        ("conv_weight", lambda t: t[:, :-1]),
        ("conv_bias", lambda t: t[:-1]),
        ("ssm_state", lambda t: t[..., :-1]),
        ("ssm_state", lambda t: t.transpose(2, 3).contiguous().transpose(2, 3)),
        ("A", lambda t: t[None]),
        ("D", lambda t: t[:-1]),
        ("dt_bias", lambda t: t.to(torch.int64)),
    ],
)
def test_rejects_bad_input(name, bad):
    args, sizes = make_inputs(2, 4, 16, 8, 2, 4, torch.float32, torch.float32, "cpu", 4)
    args[name] = bad(args[name])
    with pytest.raises(ValueError):
        mamba2_state_update(**args, **sizes)


@pytest.mark.parametrize("sizes", [dict(n_groups=0), dict(head_dim=32), dict(d_state=7.5)])
def test_rejects_bad_sizes(sizes):
    args, good = make_inputs(2, 4, 16, 8, 2, 4, torch.float32, torch.float32, "cpu", 5)
    with pytest.raises(ValueError):
        mamba2_state_update(**args, **{**good, **sizes})


@pytest.mark.gpu
@pytest.mark.parametrize("batch,heads,n_groups", [(1, 96, 1), (8, 64, 2), (33, 32, 8)])
def test_bf16_on_gpu(batch, heads, n_groups):
    """Many heads share one group's B/C conv state: the shift must still happen exactly once."""
    args, sizes = make_inputs(
        batch, heads, 64, 128, n_groups, 4, torch.bfloat16, torch.float32, "cuda", 6
    )
    for _ in range(3):
        args = check_step(args, sizes, torch.bfloat16, torch.float32)
