"""gated_rms_norm (Triton) against gated_rms_norm_ref, on CPU through Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
from op_checks import KERNEL_TOL as TOL

from latprof.kernels.gated_rms_norm import gated_rms_norm, gated_rms_norm_ref


def make_inputs(batch, dim, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, dim, generator=gen) * 3).to(dtype=dtype, device=device)
    z = torch.randn(batch, dim, generator=gen).to(dtype=dtype, device=device)
    weight = (1 + 0.2 * torch.randn(dim, generator=gen)).to(dtype=dtype, device=device)
    return x, z, weight


@pytest.mark.parametrize(
    "batch,dim,group_size,dtype",
    [
        (1, 2048 + 16, 2048 + 16, torch.float32),  # one group
        (3, 320, 64, torch.float32),
        (2, 6144, 768, torch.bfloat16),  # Nemotron-Flash-3B-like d_inner, 8 groups
        (3, 100, 25, torch.float16),  # group size not a power of two
        (2, 63, 1, torch.float32),  # one channel per group
    ],
)
def test_matches_reference(device, poison_empty, batch, dim, group_size, dtype):
    x, z, weight = make_inputs(batch, dim, dtype, device, seed=dim + group_size)
    y = gated_rms_norm(x, z, weight, group_size=group_size)
    expected = gated_rms_norm_ref(x, z, weight, group_size=group_size)
    assert y.dtype == dtype and not y.isnan().any(), "some output elements were never written"
    torch.testing.assert_close(y, expected, **TOL[dtype])


def test_groups_are_normalised_separately(device):
    """Scaling one group of x leaves the other groups' outputs unchanged."""
    x, z, weight = make_inputs(2, 128, torch.float32, device, seed=1)
    y = gated_rms_norm(x, z, weight, group_size=32)
    x2 = x.clone()
    x2[:, :32] *= 10
    y2 = gated_rms_norm(x2, z, weight, group_size=32)
    torch.testing.assert_close(y2[:, 32:], y[:, 32:], **TOL[torch.float32])
    torch.testing.assert_close(y2[:, :32], y[:, :32], **TOL[torch.float32])  # scale-invariant


def test_eps(device):
    x, z, weight = make_inputs(1, 64, torch.float32, device, seed=2)
    x = x * 1e-3
    y = gated_rms_norm(x, z, weight, group_size=64, eps=1e-2)
    torch.testing.assert_close(y, gated_rms_norm_ref(x, z, weight, group_size=64, eps=1e-2))
    assert not torch.allclose(y, gated_rms_norm_ref(x, z, weight, group_size=64, eps=1e-6))


@pytest.mark.parametrize(
    "bad",
    [
        dict(group_size=48),  # does not divide 128
        dict(group_size=0),
        dict(eps=0.0),
        dict(z=lambda z: z[:, :-1]),
        dict(weight=lambda w: w[:-1]),
        dict(x=lambda x: x.to(torch.int32)),
        dict(x=lambda x: x[0]),
        dict(z=lambda z: z.repeat_interleave(2, -1)[:, ::2]),
    ],
)
def test_rejects_bad_input(bad):
    x, z, weight = make_inputs(2, 128, torch.float32, "cpu", seed=3)
    args = dict(x=x, z=z, weight=weight, group_size=32, eps=1e-6)
    for key, value in bad.items():
        args[key] = value(args[key]) if callable(value) else value
    with pytest.raises(ValueError):
        gated_rms_norm(args.pop("x"), args.pop("z"), args.pop("weight"), **args)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,dim,group_size", [(1, 6144, 6144), (32, 4096, 512)])
def test_bf16_on_gpu(batch, dim, group_size):
    x, z, weight = make_inputs(batch, dim, torch.bfloat16, "cuda", seed=4)
    y = gated_rms_norm(x, z, weight, group_size=group_size)
    expected = gated_rms_norm_ref(x, z, weight, group_size=group_size)
    torch.testing.assert_close(y, expected, **TOL[torch.bfloat16])
