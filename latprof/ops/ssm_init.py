"""Initial values of the SSM parameters Mamba and Mamba2 share (dt bias, A_log), as in mamba-ssm:
random but in the ranges a trained model starts from, so the recurrence neither explodes nor
vanishes in a test."""

from __future__ import annotations

import math

import torch

DT_MIN, DT_MAX = 1e-3, 1e-1  # range of softplus(dt_bias) at initialisation, as in Mamba
A_MIN, A_MAX = 1.0, 16.0  # range of -A = exp(A_log) at initialisation


def init_dt_bias(dim: int, generator: torch.Generator) -> torch.Tensor:
    """Biases whose softplus is log-uniform in [DT_MIN, DT_MAX]: (dim,) float32."""
    u = torch.rand(dim, generator=generator)
    dt = torch.exp(u * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def init_a_log(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """log of uniform(A_MIN, A_MAX): shape, float32."""
    return torch.log(A_MIN + (A_MAX - A_MIN) * torch.rand(*shape, generator=generator))
