"""Shared CLI pieces: option types, list parsing, error handling, output."""

from __future__ import annotations

import functools
import json
import os
import sys
import textwrap
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
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


#: set (to anything but "" or "0") for tracebacks instead of the last-resort message;
#: `latprof --debug ...` sets it
DEBUG_ENV = "LATPROF_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def handles_input_errors(func: F) -> F:
    """Turn InputError into a one-paragraph message and exit code 2 (never a traceback); any
    other exception, a bug, into a short message, a hint to rerun with --debug, and exit code 1
    (`latprof --debug` or LATPROF_DEBUG=1 shows the traceback instead)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            fail(str(exc), 2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if debug_enabled():
                raise
            fail_unexpected(exc)

    return wrapper  # type: ignore[return-value]


def fail_unexpected(exc: BaseException) -> None:
    """The last-resort message for an exception latprof did not expect: exit code 1."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    fail(
        f"unexpected {type(exc).__name__}: {text}. This is a latprof bug or an environment "
        "problem, not a mistake in your input; rerun with `latprof --debug ...` (or "
        f"{DEBUG_ENV}=1) to see the traceback, and report it.",
        1,
    )


def check_lut_output(path: Path) -> None:
    """A LUT that will be written (`--out`, `--lut` with --measure-missing): it, its sidecar and
    its lock file can be written, checked before anything is measured."""
    from latprof.inputs import check_output_path
    from latprof.lut import sidecar_path

    check_output_path(
        path, "--out", siblings=(sidecar_path(path), path.with_name(path.name + ".lock"))
    )
    if path.exists():
        from latprof.lut import read_numbered_rows

        read_numbered_rows(path)  # a binary or foreign file is refused now, not after measuring


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
