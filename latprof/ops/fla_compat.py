"""Access to fla-core's kernels (flash-linear-attention, https://github.com/fla-org/
flash-linear-attention), imported only when an "fla" backend is first used.

`fla_unavailable(device)` says why the fla backend cannot run (None if it can); `fla_kernels()`
imports the kernels the linear-attention blocks call, checks that each declares every keyword
argument latprof passes (`REQUIRED_KWARGS`; else BackendUnavailable naming the argument and the
fla-core version needed) and returns them.  Nothing here runs at
import time: importing fla is slow and prints warnings on machines without a GPU, and the shim
below changes Triton's autotuner, so both wait for the first block built with backend "fla".

Triton's interpreter (TRITON_INTERPRET=1, how tests run fla's kernels on CPU) needs one shim for
the kernels used here.  An autotuned kernel (fla's GLA recurrence, causal conv update and L2 norm
are autotuned) times each config through `Autotuner.do_bench`, which asks the GPU driver for a
benchmarker and fails with "0 active drivers".  Under the interpreter every config computes the
same result and the cost is per program instance, so the shim replaces the autotuner's
per-config benchmark (`Autotuner._bench`, triton 3.x) with a ranking that picks the config with
the largest blocks (fewest program instances) without running anything: the conv update then
takes 12 program instances instead of 360 at width 320.  It is installed only when
TRITON_INTERPRET=1, once, by `fla_kernels()`.  (The other known interpreter problem, `.to()`
called on a `for i in range(n)` loop variable, which the interpreter leaves a Python int, does not
occur in the recurrent and conv-update kernels used here, so nothing is installed for it.)
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from latprof.errors import BackendUnavailable
from latprof.ops.base import module_missing, triton_runs_on

#: the fla-core release whose signatures latprof calls
FLA_VERSION_NEEDED = "0.6.0"
#: keyword arguments latprof passes to each entry point.  Each must be a *named* parameter: fla's
#: recurrences also take **kwargs, which would swallow a keyword an older release does not know
#: (the gate / beta-sigmoid fused into the gated delta rule are recent)
REQUIRED_KWARGS = {
    "delta_rule": ("beta", "scale", "initial_state", "output_final_state",
                   "use_qk_l2norm_in_kernel"),
    "gated_delta_rule": ("g", "beta", "scale", "initial_state", "output_final_state",
                         "use_qk_l2norm_in_kernel", "use_gate_in_kernel", "A_log", "dt_bias",
                         "use_beta_sigmoid_in_kernel"),
    "gla": ("gk", "scale", "initial_state", "output_final_state"),
    "kda": ("g", "beta", "A_log", "dt_bias", "scale", "initial_state", "output_final_state",
            "use_qk_l2norm_in_kernel", "use_gate_in_kernel", "use_beta_sigmoid_in_kernel"),
    "conv_update": ("weight", "activation"),
}  # fmt: skip


def check_signatures(kernels: FlaKernels, version: str) -> None:
    """BackendUnavailable naming the first keyword argument latprof passes that an entry point
    of the installed fla-core does not declare."""
    for name, needed in REQUIRED_KWARGS.items():
        fn = getattr(kernels, name)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue  # not introspectable (a C function): nothing to check
        missing = [kw for kw in needed if kw not in params]
        if missing:
            raise BackendUnavailable(
                f"fla-core {version}: {getattr(fn, '__module__', '')}.{fn.__name__} has no "
                f"keyword argument {missing[0]!r}"
                + (f" (nor {', '.join(map(repr, missing[1:]))})" if missing[1:] else "")
                + f"; latprof's fla backend needs fla-core >= {FLA_VERSION_NEEDED} "
                f"(pip install 'fla-core>={FLA_VERSION_NEEDED}')"
            )


def fla_unavailable(device: torch.device) -> str | None:
    """None if fla's Triton kernels can run on `device`, else the reason."""
    return module_missing("fla", "pip install fla-core") or triton_runs_on(device)


@dataclass(frozen=True)
class FlaKernels:
    """The fla entry points the blocks call (signatures as in fla-core 0.6.0)."""

    #: fla.ops.delta_rule.fused_recurrent_delta_rule
    delta_rule: Callable
    #: fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule
    gated_delta_rule: Callable
    #: fla.ops.gla.fused_recurrent_gla
    gla: Callable
    #: fla.ops.kda.fused_recurrent_kda (Kimi Delta Attention)
    kda: Callable
    #: fla.modules.causal_conv1d.causal_conv1d_update (in place on its (batch, dim, width) cache)
    conv_update: Callable


@functools.cache
def fla_kernels() -> FlaKernels:
    """Import fla's kernels, after installing the interpreter shim when TRITON_INTERPRET=1."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        _stub_autotuner_benchmark()
    from fla.modules.causal_conv1d import causal_conv1d_update
    from fla.ops.delta_rule import fused_recurrent_delta_rule
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule
    from fla.ops.gla import fused_recurrent_gla
    from fla.ops.kda import fused_recurrent_kda

    kernels = FlaKernels(
        delta_rule=fused_recurrent_delta_rule,
        gated_delta_rule=fused_recurrent_gated_delta_rule,
        gla=fused_recurrent_gla,
        kda=fused_recurrent_kda,
        conv_update=causal_conv1d_update,
    )
    check_signatures(kernels, _installed_version())
    return kernels


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fla-core")
    except PackageNotFoundError:
        return "(unknown version)"


def _interpreter_bench(self, *args, config, **meta) -> list[float]:
    """Stand-in for `Autotuner._bench` under the interpreter: no run, a smaller "time" for larger
    block sizes (the product of the config's integer meta-parameters; ties keep the first)."""
    block = math.prod(v for v in config.kwargs.values() if isinstance(v, int))
    return [1.0 / max(block, 1)] * 3


def _stub_autotuner_benchmark() -> None:
    """Make every `triton.autotune` kernel choose a config without benchmarking it."""
    from triton.runtime.autotuner import Autotuner

    if not hasattr(Autotuner, "_bench"):
        raise RuntimeError(
            "this triton version's Autotuner has no _bench method; latprof.ops.fla_compat "
            "cannot run fla's autotuned kernels under TRITON_INTERPRET=1"
        )
    Autotuner._bench = _interpreter_bench
