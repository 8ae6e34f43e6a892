"""Our Triton kernels compiled ahead of time for real GPU targets, on a machine without a GPU.

`compile_only(arch)` makes a stand-in Triton driver current whose target is
`GPUTarget("cuda", arch, 32)` (it knows nothing else about a GPU: no device, no stream, no launch),
and turns every `@triton.jit` launch into a compile (`JITFunction.run(..., warmup=True)`).  The
operator blocks then run their real decode step on the *meta* device (tensors with shapes and
dtypes but no storage), so each kernel is compiled with exactly the arguments, dtypes and
constexprs its launcher passes, through Triton's bundled ptxas; nothing is executed.

`resource_usage(kernel)` reads what the compiled kernel needs: shared memory (Triton's dynamic
shared memory, from the kernel's metadata), registers per thread and stack frame per thread
(`cuobjdump --dump-resource-usage` on the cubin; a Triton kernel has a stack frame only where
ptxas spilled registers).  A kernel whose shared memory exceeds what the target allows per block
(`MAX_SHARED_BYTES`) would raise OutOfResources at its first launch on that GPU.

The configurations are those of the default GPU sweep (`luts/default.yaml`: `SWEEP_*`), plus the
head dims and dtypes beyond it that the kernels promise to handle (`EXTRA_CASES`).  The report:
`python -m latprof.kernels.aot_report`.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

#: max shared memory one block may use (opt-in dynamic), per compute capability major*10+minor
MAX_SHARED_BYTES = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
#: SM count of the GPU each target stands for (A100 SXM, H100 SXM): sets the split heuristics
SM_COUNT = {80: 108, 90: 132}
TARGETS = (90, 80)

# the default GPU sweep (luts/default.yaml; tests/test_kernels_aot.py checks they agree)
SWEEP_WIDTHS = (256, 512, 1024, 1536, 2048, 3072, 4096)
SWEEP_BATCH = (1, 8, 32)
SWEEP_CONTEXT = (128, 512, 1024, 2048, 4096, 8192, 16384, 32768)
SWEEP_DTYPES = ("bfloat16", "float16", "float32")
TRITON_OPS = ("attention", "mamba", "mamba2")


@dataclass(frozen=True)
class Case:
    """One decode step of an operator's "triton" backend: spec (width + overrides), batch,
    cache length, dtype."""

    op: str
    width: int
    batch: int
    context: int
    dtype: str
    params: tuple[tuple[str, int], ...] = ()

    @property
    def label(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.params)
        return (
            f"{self.op}(width={self.width}{extra}) b={self.batch} ctx={self.context} {self.dtype}"
        )


#: head dims / state sizes the kernels support beyond the sweep's defaults (attention head_dim 128,
#: mamba d_state 16, mamba2 head_dim 64 / d_state 128), at the batch and context that exercise
#: both the split and the unsplit attention kernel
EXTRA_CASES = tuple(
    Case("attention", width, batch, context, dtype, (("head_dim", hd),))
    for dtype in SWEEP_DTYPES
    for hd, width in ((64, 1024), (192, 1536), (256, 2048), (512, 4096))
    for batch, context in ((1, 8192), (32, 1024))
) + tuple(
    Case(op, 2048, 8, 1024, dtype, params)
    for dtype in SWEEP_DTYPES
    for op, params in (
        ("mamba", (("d_state", 64),)),
        ("mamba", (("d_state", 128),)),
        ("mamba2", (("d_state", 64),)),
        ("mamba2", (("head_dim", 128), ("d_state", 256))),
    )
)


#: one configuration per kernel (the attention case splits: both attention kernels compile)
QUICK_CASES = (
    Case("attention", 2048, 1, 8192, "bfloat16"),
    Case("mamba", 1024, 8, 128, "bfloat16"),
    Case("mamba2", 1024, 8, 128, "bfloat16"),
)


def sweep_cases(dtypes: tuple[str, ...] = SWEEP_DTYPES) -> tuple[Case, ...]:
    """Every triton-backend row of the default sweep (attention: every context; the recurrent
    families ignore the context)."""
    cases = []
    for dtype in dtypes:
        for op in TRITON_OPS:
            contexts = SWEEP_CONTEXT if op == "attention" else (SWEEP_CONTEXT[0],)
            for width in SWEEP_WIDTHS:
                for batch in SWEEP_BATCH:
                    cases.extend(Case(op, width, batch, ctx, dtype) for ctx in contexts)
    return tuple(cases)


# ----------------------------------------------------------------------------------------------
# the stand-in driver


class StandInDriver(DriverBase):
    """A Triton driver for a GPU that is not there: its target, nothing else."""

    def __init__(self, arch: int) -> None:
        self.target = GPUTarget("cuda", arch, 32)
        self.multi_processor_count = SM_COUNT.get(arch, 108)

    @staticmethod
    def is_active() -> bool:
        return False

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("meta")

    def get_benchmarker(self):
        raise RuntimeError("the stand-in driver compiles only; it cannot time anything")

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


@dataclass
class Compiled:
    """One compiled kernel: its name, the compiled object, the cases that launched it."""

    name: str
    kernel: object
    cases: list[str] = field(default_factory=list)

    @property
    def constexprs(self) -> dict[str, object]:
        src = self.kernel.src  # ASTSource
        names = src.fn.arg_names
        return {names[path[0]]: value for path, value in src.constants.items()}


@contextlib.contextmanager
def compile_only(arch: int) -> Iterator[dict[str, Compiled]]:
    """Within: Triton launches compile for `GPUTarget("cuda", arch, 32)` instead of running,
    blocks accept the meta device for their triton backend; yields {kernel hash: Compiled}
    filled as kernels compile, each with the labels of the cases that launched it."""
    if torch.cuda.is_available():
        raise RuntimeError("compile_only replaces the Triton driver; run it without a GPU")
    if knobs_interpret():
        raise RuntimeError(
            "TRITON_INTERPRET=1: Triton's interpreter is active and compiles nothing; run the "
            "ahead-of-time compile in a process without it"
        )
    from latprof.ops import base

    compiled: dict[str, Compiled] = {}
    original_run = JITFunction.run

    fresh: dict[int, JITFunction] = {}

    def run(self, *args, grid, warmup, **kwargs):
        if id(self) not in fresh:  # a kernel keeps the target it first compiled for: forget it
            self.device_caches.clear()
            fresh[id(self)] = self
        kernel = original_run(self, *args, grid=grid, warmup=True, **kwargs)
        if kernel.metadata.target.arch != arch:
            raise RuntimeError(
                f"{self.fn.__name__} compiled for {kernel.metadata.target}, not {arch}"
            )
        entry = compiled.setdefault(kernel.hash, Compiled(self.fn.__name__, kernel))
        if _CURRENT[0] and _CURRENT[0] not in entry.cases:
            entry.cases.append(_CURRENT[0])
        return kernel

    previous = driver._active  # None until Triton first looked for a GPU driver
    driver.set_active(StandInDriver(arch))
    JITFunction.run = run
    base.COMPILE_ONLY["active"] = True
    try:
        yield compiled
    finally:
        base.COMPILE_ONLY["active"] = False
        JITFunction.run = original_run
        driver._active = previous
        for fn in fresh.values():  # nothing compiled for the stand-in target is launched later
            fn.device_caches.clear()


_CURRENT: list[str] = [""]


def knobs_interpret() -> bool:
    """Whether Triton's interpreter replaces compilation in this process."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


def compile_case(case: Case) -> None:
    """Build the case's block on the meta device and run one decode step at a device-tensor
    position (as the graph-mode sweep does): every kernel it launches compiles."""
    from latprof.ops import build_block
    from latprof.ops.base import torch_dtype
    from latprof.registry import build_spec

    spec = build_spec(case.op, case.width, **dict(case.params))
    dtype = torch_dtype(case.dtype)
    block = build_block(spec, backend="triton", device="meta", dtype=dtype)
    state = block.allocate_state(case.batch, case.context)
    x = torch.empty(case.batch, case.width, device="meta", dtype=dtype)
    pos = torch.empty(case.batch, device="meta", dtype=torch.int32)
    _CURRENT[0] = case.label
    try:
        block.step(x, state, pos)
    finally:
        _CURRENT[0] = ""


# ----------------------------------------------------------------------------------------------
# compile and measure a set of cases

#: constexprs shown in the report (the rest are fixed per kernel or implied by these)
SHOWN = ("G", "HEAD_DIM", "BLOCK_G", "BLOCK_D", "BLOCK_N", "SPLIT", "BLOCK_S", "BLOCK_P",
         "D_STATE", "W", "BLOCK_W", "HAS_BIAS", "GROUP_SIZE", "BLOCK")  # fmt: skip


def _dtype_of(compiled: Compiled) -> str:
    """The element type of the kernel's first pointer argument (its input's dtype)."""
    for ty in compiled.kernel.src.signature.values():
        if isinstance(ty, str) and ty.startswith("*"):
            return ty[1:]
    return "?"


def compile_cases(arch: int, cases: tuple[Case, ...]) -> tuple[list[dict], list[str]]:
    """(one dict per distinct compiled kernel, failures) for `cases` compiled for `arch`."""
    failures = []
    with compile_only(arch) as compiled:
        for case in cases:
            try:
                compile_case(case)
            except Exception as err:  # a kernel that does not compile is what we look for
                failures.append(f"sm_{arch} {case.label}: {type(err).__name__}: {err}")
    out = []
    for entry in compiled.values():
        usage = resource_usage(entry.kernel)
        consts = entry.constexprs
        ptx = entry.kernel.asm["ptx"]
        shown = " ".join(f"{k}={consts[k]}" for k in SHOWN if k in consts)
        out.append(
            dict(
                arch=arch,
                kernel=entry.name,
                dtype=_dtype_of(entry),
                constexprs=shown,
                num_warps=usage.num_warps,
                num_stages=entry.kernel.metadata.num_stages,
                shared_kib=usage.shared_bytes / 1024,
                limit_kib=usage.max_shared_bytes / 1024,
                registers=usage.registers,
                stack_bytes=usage.stack_bytes,
                fits=usage.fits,
                tensor_cores="mma" in ptx,
                cases=len(entry.cases),
                example=entry.cases[0] if entry.cases else "",
            )
        )
        if not usage.fits:
            failures.append(
                f"sm_{arch} {entry.name} {shown}: {usage.shared_bytes} bytes of shared memory, "
                f"the target allows {usage.max_shared_bytes} (e.g. {entry.cases[:1]})"
            )
    out.sort(key=lambda r: (r["kernel"], r["dtype"], r["constexprs"], r["example"]))
    return out, failures


# ----------------------------------------------------------------------------------------------
# resource usage


@dataclass(frozen=True)
class Usage:
    """What one compiled kernel needs per block / thread on its target."""

    shared_bytes: int  # dynamic shared memory per block (Triton's allocation; what it checks)
    static_shared_bytes: int  # shared memory the cubin declares statically (cuobjdump SHARED)
    registers: int  # per thread
    stack_bytes: int  # stack frame per thread: where ptxas spills registers
    local_bytes: int  # local memory per thread outside the stack
    num_warps: int
    arch: int

    @property
    def max_shared_bytes(self) -> int:
        return MAX_SHARED_BYTES[self.arch]

    @property
    def fits(self) -> bool:
        return self.shared_bytes <= self.max_shared_bytes


@functools.cache
def cuobjdump() -> str:
    """Triton's bundled cuobjdump, else one on PATH."""
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("cuobjdump")
    if found is None:
        raise RuntimeError("no cuobjdump: neither triton's bundled one nor one on PATH")
    return found


_USAGE_RE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def resource_usage(kernel) -> Usage:
    """Usage of a kernel compiled under `compile_only`."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run(
            [cuobjdump(), "--dump-resource-usage", f.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    match = _USAGE_RE.search(out)
    if match is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage:\n{out}")
    regs, stack, static_shared, local = map(int, match.groups())
    meta = kernel.metadata
    return Usage(
        shared_bytes=meta.shared,
        static_shared_bytes=static_shared,
        registers=regs,
        stack_bytes=stack,
        local_bytes=local,
        num_warps=meta.num_warps,
        arch=meta.target.arch,
    )
