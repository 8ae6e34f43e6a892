"""Shared CLI pieces: option types, list parsing, error handling, output."""

from __future__ import annotations

import functools
import json
import sys
import textwrap
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer

from latprof.errors import InputError
from latprof.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ModeChoice(str, Enum):
    graph = "graph"
    eager = "eager"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DeviceOpt = Annotated[
    DeviceChoice, typer.Option("--device", help="auto = cuda when available, else cpu.")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help="float32 | bf16 | fp16 (default: bf16 on cuda, float32 on cpu)."),
]
ModeOpt = Annotated[
    ModeChoice | None,
    typer.Option("--mode", help="graph | eager (default: graph on cuda, eager on cpu)."),
]
BatchOpt = Annotated[str, typer.Option("--batch", help="Batch sizes, comma list (1,8,32).")]
ContextOpt = Annotated[
    str, typer.Option("--context", help="Tokens in the cache, comma list (8k = 8192).")
]
BackendOpt = Annotated[
    str | None,
    typer.Option("--backend", help="Backend names, or op=name pairs (torch,attention=sdpa)."),
]


# ---- options of the commands that read a LUT (estimate, frontier, search) -------------------
LutDtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="float32 | bf16 | fp16 [the LUT's].")
]
LutDeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto | cpu | cuda | a device name; a LUT from another device is refused unless "
        "--force.",
    ),
]
LutModeOpt = Annotated[str | None, typer.Option("--mode", help="graph | eager [the LUT's].")]
LutBackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="NAME for every operator that has it, or op=NAME,... (required where the LUT has "
        "several).",
    ),
]
ExtrapolateOpt = Annotated[
    bool,
    typer.Option(
        "--allow-extrapolation",
        help="Accept values outside the measured contexts / widths (flagged).",
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Use a LUT of another dtype / device / mode / backend.")
]
OneBatchOpt = Annotated[str, typer.Option("--batch", help="Sequences decoded together (one).")]
PromptOpt = Annotated[str, typer.Option("--prompt", help="Prompt tokens (P).")]
GenerateOpt = Annotated[str, typer.Option("--generate", help="Tokens generated (T).")]


def lut_settings(
    *, device: str, dtype: str | None, mode: str | None, batch: str, backend: str | None
) -> Settings:
    """The LUT-reading commands' flags, resolved: what is left out is the LUT's; one batch."""
    return Settings.resolve(
        device=device,
        dtype=dtype,
        mode=mode,
        batch=batch,
        backend=backend,
        measure=False,
        one_batch=True,
    )


def measure_settings(
    *,
    device: DeviceChoice,
    dtype: str | None,
    mode: ModeChoice | None,
    batch: str,
    context: str,
    backend: str | None,
    one_batch: bool = False,
) -> Settings:
    """The flags every measuring command shares, resolved (`Settings.resolve`)."""
    return Settings.resolve(
        one_batch=one_batch,
        device=device.value,
        dtype=dtype,
        mode=mode.value if mode else None,
        batch=batch,
        context=context,
        backend=backend,
    )


def fail(message: str, code: int = 2) -> None:
    """Print one paragraph to stderr and exit."""
    wrapped = textwrap.fill(" ".join(message.split()), width=100)
    print(f"latprof: error: {wrapped}", file=sys.stderr)
    raise typer.Exit(code)


def handles_input_errors(func: F) -> F:
    """Turn InputError into a one-paragraph message and exit code 2 (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc), 2)

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
