"""What every operator block shares: the `Block` interface, RMSNorm, backend checks.

A block is one residual unit of a decoder (pre-RMSNorm, mixer, residual add), or the embedding /
LM head.  It is built from a spec (`latprof.specs`) and a backend name, and provides

- `allocate_state(batch, max_context)`: static caches (dict of tensors, shapes fixed up front);
- `step(x, state, pos)`: one decode step at position `pos` (tokens already in the cache), updating
  `state` in place; `x: (batch, width)` (token ids `(batch,)` for the embedding); `pos` an int or
  a `(batch,)` int32 tensor on the device (one position per sequence, never read on the host, as a
  CUDA graph replayed per token needs); only attention reads it, the recurrent families ignore it;
- `prefill(x, state)`: the full-sequence forward over `x: (batch, seq, width)` that leaves `state`
  exactly as `seq` decode steps from an empty state would.

`step` dispatches to the chosen backend; `prefill` is always the PyTorch reference.  The backends
a family has, and the check that says why one cannot run here, are in the operator registry
(`latprof.registry`); a backend that cannot run raises `BackendUnavailable` at construction,
saying why; nothing falls back.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import ClassVar

import torch
from torch import nn

from latprof.errors import BackendUnavailable
from latprof.registry import operator
from latprof.specs import OpSpec, canonical_dtype

State = dict[str, torch.Tensor]

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    return TORCH_DTYPES[canonical_dtype(name)]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim, computed in float32 and cast back (as Llama / Mamba do)."""
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(x.dtype)


def init_uniform(
    param: torch.Tensor, fan_in: int, generator: torch.Generator | None = None
) -> None:
    """Random weights scaled like nn.Linear's default, so activations stay O(1) in any dtype."""
    bound = fan_in**-0.5
    with torch.no_grad():
        tmp = torch.empty(param.shape, dtype=torch.float32, device="cpu")
        tmp.uniform_(-bound, bound, generator=generator)
        param.copy_(tmp)


#: set by `latprof.kernels.aot.compile_only`: Triton "launches" on the meta device only compile,
#: for a stand-in GPU target, and run nothing
COMPILE_ONLY = {"active": False}


def triton_runs_on(device: torch.device) -> str | None:
    """None if Triton kernels can launch on `device`, else the reason they cannot."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if device.type == "cuda":
        return None
    if device.type == "meta" and COMPILE_ONLY["active"]:
        return None
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return (
        f"Triton kernels need a CUDA device; on {device.type} they run only under Triton's "
        "interpreter (TRITON_INTERPRET=1 set before triton is imported), which is an emulator "
        "for testing, not something to time"
    )


def resolve_path(path: str):
    """The object named by a registry path "module:name", imported now."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def backend_unavailable(op: str, backend: str, device: str | torch.device) -> str | None:
    """None if `backend` of `op` can run on `device`, else the reason (from the registry's
    check for that backend).  An unknown operator or backend raises InputError."""
    entry = operator(op).backend(backend)
    if entry.check is None:
        return None
    return resolve_path(entry.check)(torch.device(device))


def module_missing(module: str, install_hint: str) -> str | None:
    """None if `module` can be found, else why not."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"python package {module!r} is not installed ({install_hint})"


class Block(nn.Module):
    """Base of every operator block.  Subclasses implement the four methods of the interface;
    their backends are the registry entry's (`latprof.registry.operator(spec.op)`)."""

    #: state entries that are fixed tables (RoPE cos / sin), not caches a prompt would fill
    static_state_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        spec: OpSpec,
        *,
        backend: str = "torch",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = dtype
        reason = backend_unavailable(spec.op, backend, self.device)  # unknown name: InputError
        if reason:
            raise BackendUnavailable(f"{spec.op}: backend {backend!r} cannot run here: {reason}")
        self.backend = backend
        self.generator = torch.Generator().manual_seed(seed)

    # ---- interface -------------------------------------------------------------------------
    def allocate_state(self, batch: int, max_context: int) -> State:
        return {}

    def step(self, x: torch.Tensor, state: State, pos: int | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prefill(self, x: torch.Tensor, state: State) -> torch.Tensor:
        raise NotImplementedError

    def example_input(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random decode-step input: hidden states (batch, width)."""
        x = torch.randn(batch, self.spec.width, generator=generator or self.generator)
        return x.to(device=self.device, dtype=self.dtype)

    def example_sequence(
        self, batch: int, seq: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A random prefill input: hidden states (batch, seq, width)."""
        x = torch.randn(batch, seq, self.spec.width, generator=generator or self.generator)
        return x.to(device=self.device, dtype=self.dtype)

    def randomize_state(self, state: State, generator: torch.Generator) -> None:
        """Random cache contents, as after a prompt (never zeros, never uninitialised memory that
        could hold NaN or denormals and slow a CPU down); fixed tables are left alone."""
        for name, tensor in state.items():
            if tensor.is_floating_point() and name not in self.static_state_keys:
                noise = torch.randn(tensor.shape, generator=generator) * 0.5
                tensor.copy_(noise.to(tensor.dtype))

    # ---- helpers for subclasses -----------------------------------------------------------
    def new_param(self, *shape: int, fan_in: int | None = None) -> nn.Parameter:
        """A parameter of `shape` on this block's device and dtype, random (never zeros)."""
        # no autograd: latprof only runs inference, and a static cache updated in place under
        # grad mode would otherwise grow an autograd graph step after step
        p = nn.Parameter(
            torch.empty(*shape, device=self.device, dtype=self.dtype), requires_grad=False
        )
        init_uniform(p, fan_in if fan_in is not None else shape[-1], self.generator)
        return p

    def param_from(self, values: torch.Tensor) -> nn.Parameter:
        """`values` (any shape, float32 on the CPU) as a parameter on this device and dtype."""
        return nn.Parameter(values.to(device=self.device, dtype=self.dtype), requires_grad=False)

    def new_norm(self, dim: int) -> nn.Parameter:
        """An RMSNorm weight near one, randomised a little so a forgotten norm shows in tests."""
        w = 1.0 + 0.1 * torch.randn(dim, generator=self.generator)
        return nn.Parameter(w.to(device=self.device, dtype=self.dtype), requires_grad=False)

    def zeros(self, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(*shape, device=self.device, dtype=dtype or self.dtype)
