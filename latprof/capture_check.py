"""Is a decode step CUDA-graph capturable?  Checked on any device, CPU included.

A CUDA graph replays a fixed sequence of kernels on fixed buffers.  A step breaks that when it
synchronises with the host (reads a value back: `.item()`, `.tolist()`, a data-dependent output
shape such as `nonzero`, `masked_select`, `unique` or boolean-mask indexing, a device-to-host
copy), or when it replaces its state tensors instead of updating them in place (the replay would
keep writing the old buffers).

`HostSyncRecorder` is a `TorchDispatchMode` that records every aten operator of the first kind
that runs under it, with the line of latprof's code that called it.  `check_operator` and
`check_model` run one decode step of an operator block / a whole model under it and compare every
state tensor's storage before and after.  The registry's `graph_capturable` flag must agree:
tests/test_capture_check.py fails for a backend that claims to be capturable and is not.

On CPU, `.cpu()` / `.to("cpu")` / `.numpy()` of a CPU tensor return without dispatching, so a
device-to-host copy is seen only where it reaches aten (`_to_copy` / `copy_` across devices);
`.item()` and `.tolist()` always reach `_local_scalar_dense`.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from latprof.ops import State, build_block, torch_dtype
from latprof.specs import OpSpec

aten = torch.ops.aten

#: aten operators that read device data on the host (a value, or an output shape that depends
#: on the data)
HOST_SYNC_OPS = frozenset(
    {
        aten._local_scalar_dense,  # .item(), .tolist(), bool(t), int(t), float(t)
        aten.is_nonzero,
        aten.equal,
        aten.nonzero,
        aten.argwhere,
        aten.masked_select,
        aten._unique,
        aten._unique2,
        aten.unique_dim,
        aten.unique_consecutive,
        aten.bincount,
        aten.repeat_interleave,  # with a tensor of repeats and no output_size
        aten._assert_async,
    }
)


def _caller() -> str:
    """file:line of the innermost latprof frame below the dispatch mode."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "latprof" in frame.filename and "capture_check" not in frame.filename:
            return f"{frame.filename.rsplit('latprof', 1)[-1].lstrip('/')}:{frame.lineno}"
    return "?"


def _is_sync(func, args, kwargs) -> str | None:
    """Why calling `func` synchronises with the host, or None."""
    packet = func.overloadpacket
    if packet in HOST_SYNC_OPS:
        if packet is aten.repeat_interleave and (
            not isinstance(args[0], torch.Tensor) or kwargs.get("output_size") is not None
        ):
            return None
        if (
            packet is aten.repeat_interleave
            and len(args) > 1
            and not isinstance(args[1], torch.Tensor)
        ):
            return None
        return "reads device data on the host"
    if packet in (aten.index, aten.index_put, aten.index_put_):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
            return "boolean-mask indexing (a data-dependent shape)"
    if packet is aten._to_copy:
        src, device = args[0], kwargs.get("device")
        if device is not None and torch.device(device).type == "cpu" and src.device.type != "cpu":
            return "device-to-host copy"
    if packet is aten.copy_:
        dst, src = args[0], args[1]
        if dst.device.type == "cpu" and isinstance(src, torch.Tensor) and src.device.type != "cpu":
            return "device-to-host copy"
    return None


#: Tensor methods that read data on the host without always reaching aten (on a CPU tensor
#: `.tolist()`, `.numpy()` and `.cpu()` return without dispatching): wrapped while recording
HOST_READ_METHODS = ("tolist", "numpy", "cpu")


class HostSyncRecorder(TorchDispatchMode):
    """Records host-synchronising calls in `calls`: (operator, why, latprof caller)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, str]] = []
        self._saved: dict[str, object] = {}

    def __enter__(self):
        for name in HOST_READ_METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original
            setattr(torch.Tensor, name, self._wrap(name, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        return super().__exit__(*exc)

    def _wrap(self, name, original):
        def method(tensor, *args, **kwargs):
            self.calls.append((f"Tensor.{name}", "reads device data on the host", _caller()))
            return original(tensor, *args, **kwargs)

        return method

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = _is_sync(func, args, kwargs)
        if why is not None:
            self.calls.append((str(func), why, _caller()))
        return func(*args, **kwargs)


@dataclass(frozen=True)
class CaptureReport:
    """What one decode step did that a CUDA graph could not replay."""

    what: str
    host_syncs: tuple[tuple[str, str, str], ...]
    replaced_state: tuple[str, ...]  # state entries whose storage changed (or that vanished)

    @property
    def capturable(self) -> bool:
        return not self.host_syncs and not self.replaced_state

    def describe(self) -> str:
        lines = [f"{self.what}: " + ("capturable" if self.capturable else "NOT capturable")]
        lines += [f"  host sync: {op} ({why}) at {where}" for op, why, where in self.host_syncs]
        lines += [f"  state replaced, not updated in place: {k}" for k in self.replaced_state]
        return "\n".join(lines)


def _storages(states: list[State]) -> dict[str, tuple[int, tuple[int, ...]]]:
    return {
        f"{i}.{k}": (t.untyped_storage().data_ptr(), tuple(t.shape))
        for i, state in enumerate(states)
        for k, t in state.items()
    }


def _replaced(before: dict, states: list[State]) -> tuple[str, ...]:
    after = _storages(states)
    return tuple(k for k, v in before.items() if after.get(k) != v)


def check_step(what: str, step, states: list[State]) -> CaptureReport:
    """Run `step()` once under the recorder; compare `states`' storages before and after."""
    before = _storages(states)
    recorder = HostSyncRecorder()
    with torch.inference_mode(), recorder:
        step()
    return CaptureReport(what, tuple(recorder.calls), _replaced(before, states))


def check_operator(
    spec: OpSpec,
    backend: str,
    *,
    batch: int = 2,
    context: int = 8,
    dtype: str = "float32",
    device: str = "cpu",
    tensor_pos: bool = False,
) -> CaptureReport:
    """One decode step of `spec`'s block with `backend` at `context` cached tokens, as the sweep
    builds it (random state, as after a prompt); `tensor_pos`: the position as a (batch,) int32
    device tensor, as a graph replayed at every position takes it."""
    block = build_block(spec, backend=backend, device=device, dtype=torch_dtype(dtype)).eval()
    gen = torch.Generator().manual_seed(0)
    state = block.allocate_state(batch, context + 1)
    block.randomize_state(state, gen)
    x = block.example_input(batch, gen)
    pos = torch.full((batch,), context, dtype=torch.int32, device=device) if tensor_pos else context
    label = f"{spec.key} {backend} b={batch} ctx={context} pos={'tensor' if tensor_pos else 'int'}"
    if spec.reads_embedding:  # shared attention: the embedding output beside x
        e = block.example_input(batch, gen)
        return check_step(label, lambda: block.step(x, state, pos, e), [state])
    return check_step(label, lambda: block.step(x, state, pos), [state])


def check_model(model, *, backends: dict[str, str] | None = None, batch: int = 2, context: int = 8,
                dtype: str = "float32", device: str = "cpu") -> CaptureReport:  # fmt: skip
    """One greedy decode step of a whole model (`latprof.model_spec.ModelSpec`)."""
    from latprof.e2e import WholeModel, fill_caches

    net = WholeModel(
        model, backends=backends, device=device, dtype=torch_dtype(dtype), seed=0
    ).eval()
    states = net.allocate_state(batch, context + 1)
    fill_caches(net, states)
    ids = torch.randint(0, model.vocab_size, (batch,), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    pos = context + model.meta_tokens
    label = f"model {model.name} {backends or 'torch'} b={batch} ctx={context}"
    return check_step(label, lambda: net.step(ids, states, pos), states)
