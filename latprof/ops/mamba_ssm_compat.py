"""mamba-ssm's Triton decode kernels, loaded without importing the `mamba_ssm` package.

`import mamba_ssm` runs its `__init__`, which imports the CUDA extension `selective_scan_cuda`;
without that extension (a build with MAMBA_SKIP_CUDA_BUILD=TRUE, or any machine without CUDA) the
import fails, although the Triton files under `mamba_ssm/ops/triton/` are self-contained.  This
module finds the package directory without executing it and loads those files by path, under
private module names, once.  The one intra-package import they make
(`from mamba_ssm.ops.triton.softplus import softplus`) is served from our own copy of that file,
placed in `sys.modules` only while the importing file executes.

The wrappers at the bottom adapt mamba-ssm's functions to the signatures of our references in
`latprof.ops.ssm_reference`.  mamba-ssm's launchers enter `torch.cuda.device(x.device.index)`, so
they run on CUDA tensors only.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from latprof.ops.ssm_reference import causal_conv1d_update_ref, split_xbc

INSTALL_HINT = (
    "MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation mamba-ssm"
)
#: files under mamba_ssm/ops/triton/ we load, each with the sibling files it imports
TRITON_FILES: dict[str, tuple[str, ...]] = {
    "softplus": (),
    "selective_state_update": ("softplus",),
    "layernorm_gated": (),
}


def triton_dir() -> Path | None:
    """mamba_ssm/ops/triton of the installed mamba-ssm, found without importing the package."""
    try:
        spec = importlib.util.find_spec("mamba_ssm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "ops" / "triton"
        if (path / "selective_state_update.py").is_file():
            return path
    return None


def missing() -> str | None:
    """None if mamba-ssm's Triton files and their imports (triton, einops) are present."""
    if triton_dir() is None:
        return f"mamba-ssm is not installed ({INSTALL_HINT})"
    for module, hint in (("triton", "pip install triton"), ("einops", "pip install einops")):
        if importlib.util.find_spec(module) is None:
            return f"mamba-ssm's Triton kernels need {module!r}, which is not installed ({hint})"
    return None


def unavailable_on(device: torch.device) -> str | None:
    """None if mamba-ssm's Triton decode kernels can run on `device`, else why not."""
    reason = missing()
    if reason:
        return reason
    if device.type != "cuda":
        return (
            f"mamba-ssm's Triton launchers enter torch.cuda.device(...), which rejects "
            f"{device.type} tensors; this backend needs a CUDA device"
        )
    try:
        load("selective_state_update")
        load("layernorm_gated")
    except Exception as exc:  # any failure to load is the reason, reported verbatim
        return f"loading mamba-ssm's Triton files failed: {type(exc).__name__}: {exc}"
    return None


@functools.cache
def load(stem: str) -> ModuleType:
    """mamba_ssm/ops/triton/<stem>.py as a module named `latprof._mamba_ssm.<stem>`."""
    if stem not in TRITON_FILES:
        raise ValueError(
            f"unknown mamba-ssm Triton file {stem!r}; known: {', '.join(TRITON_FILES)}"
        )
    directory = triton_dir()
    if directory is None:
        raise ModuleNotFoundError(f"mamba-ssm is not installed ({INSTALL_HINT})")
    deps = {f"mamba_ssm.ops.triton.{dep}": load(dep) for dep in TRITON_FILES[stem]}
    name = f"latprof._mamba_ssm.{stem}"
    spec = importlib.util.spec_from_file_location(name, directory / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    saved = {key: sys.modules.get(key) for key in deps}
    sys.modules.update(deps)
    sys.modules[name] = module  # Triton and inspect look functions' modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        for key, previous in saved.items():
            if previous is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = previous
    return module


# ---- adapters to latprof's reference signatures ------------------------------------------------


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor,
) -> torch.Tensor:
    """Mamba's decode SSM step by mamba-ssm's Triton kernel; as `selective_state_update_ref`.

    state: (batch, dim, d_state), updated in place
    x, dt: (batch, dim), dt before bias and softplus
    A: (dim, d_state)
    B, C: (batch, d_state)
    D, dt_bias: (dim,)
    z: (batch, dim) or None
    returns (batch, dim)
    """
    kernel = load("selective_state_update").selective_state_update
    return kernel(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)


def mamba2_state_update(
    xbc: torch.Tensor,
    dt: torch.Tensor,
    conv_state: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    ssm_state: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    *,
    n_groups: int,
    head_dim: int,
    d_state: int,
) -> torch.Tensor:
    """Mamba2's decode step as mamba-ssm's `Mamba2.step` runs it without causal-conv1d: the conv
    in PyTorch, the SSM by mamba-ssm's Triton kernel with per-head scalars broadcast over head_dim
    (stride 0, which selects the kernel's tied-head-dim path).  As `mamba2_state_update_ref`.

    xbc: (batch, conv_dim); dt: (batch, heads); conv_state: (batch, conv_dim, d_conv)
    conv_weight: (conv_dim, d_conv); conv_bias: (conv_dim,)
    ssm_state: (batch, heads, head_dim, d_state); A, D, dt_bias: (heads,)
    returns (batch, heads * head_dim)
    """
    xbc = causal_conv1d_update_ref(xbc, conv_state, conv_weight, conv_bias)  # (batch, conv_dim)
    x, B, C = split_xbc(xbc, n_groups=n_groups, head_dim=head_dim, d_state=d_state)
    heads = x.shape[1]
    y = load("selective_state_update").selective_state_update(
        ssm_state,
        x,
        dt.unsqueeze(-1).expand(-1, heads, head_dim),  # (batch, heads, head_dim), stride 0
        A.float()[:, None, None].expand(heads, head_dim, d_state),
        B,
        C,
        D=D.unsqueeze(-1).expand(heads, head_dim),
        z=None,
        dt_bias=dt_bias.unsqueeze(-1).expand(heads, head_dim),
        dt_softplus=True,
    )  # (batch, heads, head_dim)
    return y.flatten(1)


def gated_rms_norm(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, *, group_size: int, eps: float = 1e-6
) -> torch.Tensor:
    """mamba-ssm's Triton RMSNormGated (norm after the gate); as `gated_rms_norm_ref`.

    x, z: (batch, dim), last dim contiguous
    weight: (dim,)
    returns (batch, dim)
    """
    rmsnorm_fn = load("layernorm_gated").rmsnorm_fn
    return rmsnorm_fn(x, weight, None, z=z, eps=eps, group_size=group_size, norm_before_gate=False)
